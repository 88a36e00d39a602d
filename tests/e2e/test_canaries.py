"""Secret canaries through every runbook: each drill's incident fixed with canary values in every
secret setting the product has, and the canaries found in no outcome, log, artifact, parameter,
notification, timeline or post-mortem (Sentry envelopes: tests/integration/test_monitoring.py)."""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from remediate.drills import Sandbox
from remediate.drills.worlds import DRILLS
from remediate.engine import catalogue
from remediate.engine.prefect_api import run_settings
from tests.support.httpcapture import CaptureServer

pytestmark = pytest.mark.usefixtures("prefect_server")

CANARIES = {
    "SLACK_WEBHOOK_URL": "slack-canary-{n}",
    "PAGERDUTY_ROUTING_KEY": "pagerduty-canary-{n}",
    "STATUSPAGE_API_KEY": "statuspage-canary-{n}",
    "GITHUB_TOKEN": "github-canary-{n}",
    "SENTRY_AUTH_TOKEN": "sentry-token-canary-{n}",
    "APPROVAL_LINK_SECRET": "link-secret-canary-{n}",
    "ALERT_WEBHOOK_TOKEN": "alert-token-canary-{n}",
    "LOGIN_PROBE_PASSWORD": "probe-password-canary-{n}",
}


@dataclass(frozen=True)
class Channels:
    canaries: list[str]  # every secret setting's canary value
    servers: dict[str, CaptureServer]  # slack, pagerduty, statuspage, github


@pytest.fixture
def channels(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Channels]:
    n = uuid.uuid4().hex[:6]
    canaries = {name: value.format(n=n) for name, value in CANARIES.items()}
    servers = {
        "slack": CaptureServer(),
        "pagerduty": CaptureServer(status=202, body=b"{}"),
        "statuspage": CaptureServer(),
        "github": CaptureServer(status=201, body=b'{"html_url": "https://github.test/i/1"}'),
    }
    slack_url = f"{servers['slack'].url}/services/T0/B0/{canaries['SLACK_WEBHOOK_URL']}"
    settings = {
        **{k: v for k, v in canaries.items() if k not in {"SLACK_WEBHOOK_URL"}},
        "SLACK_WEBHOOK_URL": slack_url,
        "PAGERDUTY_EVENTS_URL": f"{servers['pagerduty'].url}/v2/enqueue",
        "STATUSPAGE_URL": f"{servers['statuspage'].url}/v1/pages/p",
        "STATUSPAGE_COMPONENTS": ",".join(
            f"{r.component}=c{i}" for i, r in enumerate(catalogue.CATALOGUE.values())
        ),
        "GITHUB_REPO": "acme/app",
        "GITHUB_API_URL": servers["github"].url,
        "RECEIVER_PUBLIC_URL": "http://receiver.test",
        "AUTO_APPROVE": "*:*:*",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    yield Channels(canaries=list(canaries.values()), servers=servers)
    for server in servers.values():
        server.close()


def _body(received: Any) -> str:
    raw = received.body
    if received.headers.get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", "replace")


@pytest.mark.parametrize("runbook_id", list(catalogue.CATALOGUE))
def test_no_canary_leaves_any_runbook(
    runbook_id: str, channels: Channels, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = dict(os.environ)
    with Sandbox() as sandbox:
        world = DRILLS[runbook_id](sandbox)  # sets the runbook's own settings
        try:
            with run_settings():
                outcome = catalogue.get(runbook_id).load_flow()(
                    **world.params, requested_by=f"canary-{runbook_id}"
                )
        finally:
            os.environ.clear()
            os.environ.update(saved)
    assert outcome.status == "resolved", outcome.summary
    assert outcome.flow_run_id and outcome.incident_id
    from pydantic import SecretStr

    from remediate.store.database import Store

    store = Store.open(SecretStr(os.environ["REMEDIATION_DATABASE_URL"]))
    seen = [
        outcome.model_dump_json(),
        json.dumps([e.model_dump(mode="json") for e in store.timeline(outcome.incident_id)]),
        store.postmortem(outcome.incident_id) or "",
    ]
    run_id = uuid.UUID(outcome.flow_run_id)
    time.sleep(2)  # logs reach the server in batches
    with get_client(sync_client=True) as client:
        seen += [
            log.message
            for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
        ]
        seen += [
            f"{a.data} {a.description}"
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        ]
        seen.append(json.dumps(client.read_flow_run(run_id).parameters))
    servers = channels.servers
    for name in ("slack", "pagerduty", "statuspage", "github"):
        for received in servers[name].received:
            body = _body(received)
            if name == "pagerduty":  # the routing key is PagerDuty's own credential
                body = body.replace(os.environ["PAGERDUTY_ROUTING_KEY"], "")
            seen.append(
                received.path.replace(os.environ["SLACK_WEBHOOK_URL"].split("/")[-1], "")
                if name == "slack"
                else received.path
            )
            seen.append(body)
    assert servers["slack"].received, "the run talked to Slack"
    text = "\n".join(seen)
    leaked = [c for c in channels.canaries if c in text]
    assert leaked == [], f"{runbook_id} leaked {leaked}"
