"""Slack messages of a real run, a failing Slack that changes nothing, and secrets kept out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from remediate.flows.connection_pool_exhausted import connection_pool_exhausted
from tests.e2e.conftest import answer, paused_run, start
from tests.support.httpcapture import CaptureServer
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")
CANARY = "canary-slack-token-8f1d2c"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[CaptureServer]:
    server = CaptureServer()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{server.url}/services/T0/B0/{CANARY}")
    yield server
    server.close()


def test_slack_hears_declare_approval_and_resolve(
    incident_world: IncidentWorld,
    slack: CaptureServer,
) -> None:
    w = incident_world
    future = start(**w.params)
    run_id = paused_run(w.database)
    answer(run_id, approve=True, approver="alice")
    outcome = future.result(timeout=60)
    assert outcome.status == "resolved"

    texts = [r.json()["text"] for r in slack.received]
    assert all(r.path == f"/services/T0/B0/{CANARY}" for r in slack.received)
    assert [t.splitlines()[0].split(":")[0] for t in texts] == [
        "🚨 INCIDENT",
        "⏸️ APPROVAL NEEDED",
        "✅ INCIDENT RESOLVED",
    ]
    assert f"remediate approve {run_id}" in texts[1]
    assert f"Incident: {outcome.incident_id}" in texts[2]
    assert "Root Cause: idle-sessions" in texts[2]

    # The webhook URL is a secret: not in the outcome, the parameters, the logs or the timeline.
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        deadline = time.monotonic() + 15  # logs reach the server in batches
        while not (
            logs := client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            )
        ):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert logs, "the run's logs reached the server"
    seen = (
        outcome.model_dump_json()
        + str(run.parameters)
        + "".join(log.message for log in logs)
        + "".join(e.model_dump_json() for e in w.store.timeline(outcome.incident_id))
    )
    assert CANARY not in seen


def test_failing_slack_delays_nothing_and_loses_no_event(
    incident_world: IncidentWorld,
    slack: CaptureServer,
) -> None:
    w = incident_world
    slack.status = 500
    outcome = connection_pool_exhausted(**w.params, auto_approve=True)
    assert outcome.status == "resolved"
    assert pids_alive(w.idle) == set()
    events = w.store.timeline(outcome.incident_id)
    notified = [e for e in events if e.kind == "notified"]
    assert len(notified) == 2 and not any(e.data["delivered"] for e in notified)
    assert [e.kind for e in events if e.kind != "notified"] == [
        "detected",
        "diagnosed",
        "planned",
        "approval-answered",
        "rechecked",
        "acted",
        "verified",
        "resolved",
        "post-mortem",
    ]
    assert len(slack.received) == 6  # three tries for each of the two messages
