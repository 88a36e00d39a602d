"""The incident lifecycle on the real store with local stand-ins for Slack, PagerDuty, a status page
and GitHub: the clock escalates a paused P1 on time, a resolution closes everything it opened, the
post-mortem lists every event, and failing channels delay nothing and lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediate.flows.connection_pool_exhausted import connection_pool_exhausted
from remediate.store.database import Store
from tests.e2e.conftest import answer, paused_run, start
from tests.support.httpcapture import CaptureServer
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")
CANARIES = ["slack-canary-7f3", "pd-routing-canary-91c", "sp-key-canary-4d2", "gh-token-canary-0ab"]


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, CaptureServer]]:
    servers = {
        "slack": CaptureServer(),
        "pagerduty": CaptureServer(status=202, body=b'{"status":"success"}'),
        "statuspage": CaptureServer(body=b'{"status":"operational"}'),
        "github": CaptureServer(
            status=201, body=b'{"number": 12, "html_url": "https://github.test/acme/app/issues/12"}'
        ),
    }
    for name, value in {
        "SLACK_WEBHOOK_URL": f"{servers['slack'].url}/services/{CANARIES[0]}",
        "PAGERDUTY_ROUTING_KEY": CANARIES[1],
        "PAGERDUTY_EVENTS_URL": f"{servers['pagerduty'].url}/v2/enqueue",
        "STATUSPAGE_URL": f"{servers['statuspage'].url}/v1/pages/page1",
        "STATUSPAGE_API_KEY": CANARIES[2],
        "STATUSPAGE_COMPONENTS": "Postgres Database=cmp-db",
        "GITHUB_REPO": "acme/app",
        "GITHUB_TOKEN": CANARIES[3],
        "GITHUB_API_URL": servers["github"].url,
        "ESCALATION_CONTACTS": "L1=@oncall,L2=@senior-dev,L3=@architect",
    }.items():
        monkeypatch.setenv(name, value)
    yield servers
    for server in servers.values():
        server.close()


def texts(server: CaptureServer) -> list[str]:
    return [r.json()["text"] for r in server.received]


def pd_events(server: CaptureServer) -> list[dict[str, Any]]:
    return [r.json() for r in server.received]


def test_a_p1_waiting_for_approval_escalates_on_time_with_the_checklist(
    incident_world: IncidentWorld,
    channels: dict[str, CaptureServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = incident_world
    store: Store = w.store
    monkeypatch.setenv("INCIDENT_TARGETS", "connection-pool-exhausted=4")
    future = start(**w.params)
    run_id = paused_run(w.database)
    incident = store.incident_for_flow_run(run_id)
    assert incident is not None

    deadline = time.monotonic() + 20
    while not [e for e in store.timeline(incident.id) if e.kind == "target-missed"]:
        assert time.monotonic() < deadline, "the paused run did not escalate"
        time.sleep(0.2)
    events = store.timeline(incident.id)
    [missed] = [e for e in events if e.kind == "target-missed"]
    late = (missed.at - incident.opened_at).total_seconds()
    assert 4 <= late < 6, f"escalated {late:.1f} s after opening, target 4 s"
    escalated = [e for e in events if e.kind == "escalated"]
    assert escalated and escalated[-1].data["level"] == "L2"
    assert escalated[-1].data["contacts"] == ["@senior-dev"]
    assert escalated[-1].data["notify"] == ["@architect"]  # seed 002: L3 on standby
    checklist = escalated[-1].data["checklist"]
    assert len(checklist) == 7
    assert checklist[3].startswith("[ ] Attempted at least one fix")  # nothing ran: no approval
    assert checklist[6].startswith("[x] Notified team in #incidents channel")
    assert checklist[5].startswith("[x] Checked status page")

    deadline = time.monotonic() + 15  # deliveries run in the background
    while not [
        p for p in pd_events(channels["pagerduty"])[1:] if "escalated" in p["payload"]["summary"]
    ] or not [t for t in texts(channels["slack"]) if t.startswith("🔺 INCIDENT ESCALATED")]:
        assert time.monotonic() < deadline, "the escalation reached neither Slack nor PagerDuty"
        time.sleep(0.1)
    message = [t for t in texts(channels["slack"]) if t.startswith("🔺 INCIDENT ESCALATED")]
    assert message and "Escalated to: @senior-dev" in message[0]
    assert "Before you escalate (filled in by the run):" in message[0]
    pages = pd_events(channels["pagerduty"])
    assert pages[0]["event_action"] == "trigger" and pages[0]["payload"]["severity"] == "critical"
    assert any("escalated to @senior-dev" in p["payload"]["summary"] for p in pages[1:])
    assert {p["dedup_key"] for p in pages} == {f"remediate-{incident.id}"}
    assert pids_alive(w.idle) == w.idle, "escalating changes nothing"

    # The run was still waiting: the answer still counts, and nothing escalates twice.
    answer(run_id, approve=True, approver="alice")
    outcome = future.result(timeout=60)
    assert outcome.status == "resolved"
    kinds = [e.kind for e in store.timeline(incident.id)]
    assert kinds.count("target-missed") == 1


def test_a_resolved_incident_resolves_the_page_the_status_page_and_writes_it_up(
    incident_world: IncidentWorld, channels: dict[str, CaptureServer]
) -> None:
    w = incident_world
    store: Store = w.store
    outcome = connection_pool_exhausted(**w.params, auto_approve=True)
    assert outcome.status == "resolved"
    assert pids_alive(w.idle) == set()

    pages = pd_events(channels["pagerduty"])
    assert [p["event_action"] for p in pages] == ["trigger", "resolve"]
    assert pages[0]["dedup_key"] == pages[1]["dedup_key"] == f"remediate-{outcome.incident_id}"
    assert pages[0]["routing_key"] == CANARIES[1]
    status = [(r.method, r.path, r.json()) for r in channels["statuspage"].received]
    assert status == [
        ("PATCH", "/v1/pages/page1/components/cmp-db", {"component": {"status": "major_outage"}}),
        ("PATCH", "/v1/pages/page1/components/cmp-db", {"component": {"status": "operational"}}),
    ]
    assert all(
        r.headers["Authorization"] == f"OAuth {CANARIES[2]}"
        for r in channels["statuspage"].received
    )
    [issue] = channels["github"].received
    assert issue.path == "/repos/acme/app/issues"
    body = issue.json()
    assert body["title"].startswith("Prevent connection-pool-exhausted (idle-sessions")
    assert "idle_session_timeout" in body["body"] and outcome.incident_id in body["body"]
    slack = texts(channels["slack"])
    assert [t.split(":")[0] for t in slack] == ["🚨 INCIDENT", "✅ INCIDENT RESOLVED"]

    # The post-mortem (P1) lists every event of the run, in order, as the store has them.
    assert outcome.incident_id
    draft = store.postmortem(outcome.incident_id)
    assert draft is not None and draft.startswith("# Post-Mortem: Postgres Database on ")
    events = store.timeline(outcome.incident_id)
    assert events[-1].kind == "post-mortem"
    listed = [
        line for line in draft.split("## Root Cause")[0].splitlines() if line.startswith("- ")
    ]
    assert len(listed) == len(events) - 1
    for line, event in zip(listed, events[:-1], strict=True):
        assert f"**{event.kind}**" in line
    assert "## Remediation Steps Taken" in draft and "terminate-idle-sessions" in draft
    assert "https://github.test/acme/app/issues/12" in draft
    assert outcome.severity == "P1"

    seen = draft + json.dumps([e.model_dump(mode="json") for e in events]) + "".join(slack)
    for canary in CANARIES:
        assert canary not in seen

    # The same draft is the run's markdown artifact, and what the CLI prints.
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    assert outcome.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(outcome.flow_run_id)])
            )
        )
    assert [a.data for a in artifacts if a.key == "postmortem-connection-pool-exhausted"] == [draft]
    printed = subprocess.run(
        [
            str(Path(sys.executable).with_name("remediate")),
            "incident",
            outcome.incident_id,
            "--postmortem",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0 and printed.stdout == draft


def test_failing_slack_and_pagerduty_delay_nothing_and_lose_no_event(
    incident_world: IncidentWorld, channels: dict[str, CaptureServer]
) -> None:
    w = incident_world
    channels["slack"].status = 500
    channels["pagerduty"].status = 503
    outcome = connection_pool_exhausted(**w.params, auto_approve=True)
    assert outcome.status == "resolved"
    assert pids_alive(w.idle) == set()
    assert outcome.incident_id
    events = w.store.timeline(outcome.incident_id)
    notified = [e for e in events if e.kind == "notified"]
    by_channel = {
        c: [e for e in notified if e.data["channel"] == c] for c in ("slack", "pagerduty")
    }
    assert len(by_channel["slack"]) == 2 and len(by_channel["pagerduty"]) == 2
    assert not any(e.data["delivered"] for e in by_channel["slack"] + by_channel["pagerduty"])
    assert len(channels["slack"].received) == 6 and len(channels["pagerduty"].received) == 6
    # The fix did not wait for the failing channels: the declare message's three tries (at
    # least 1.5 s of back-off) ended after the sessions were already terminated.
    kinds = [e.kind for e in events]
    first_slack = next(i for i, e in enumerate(events) if e.data.get("channel") == "slack")
    first_page = next(i for i, e in enumerate(events) if e.data.get("channel") == "pagerduty")
    assert kinds.index("acted") < min(first_slack, first_page)
    assert [k for k in kinds if k != "notified"] == [
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


def test_the_watchdog_escalates_an_orphaned_incident_once(
    env: dict[str, str], channels: dict[str, CaptureServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that died while paused leaves its incident open: the watchdog escalates it."""
    from pydantic import SecretStr

    from remediate.flows.incident_watchdog import incident_watchdog

    monkeypatch.setenv("INCIDENT_TARGETS", "rate-limiter=1")
    store = Store.open(SecretStr(env["REMEDIATION_DATABASE_URL"]))
    orphan = store.open_incident(
        runbook="rate-limiter",
        severity="P2",
        resource="redis://orphan:6379/0",
        title="Rate limiter",
    )
    store.record(orphan.id, "approval-asked", detail="waiting for an approver")
    retired = store.open_incident(
        runbook="retired-runbook", severity="P2", resource="elsewhere", title="Gone"
    )
    time.sleep(1.5)
    report = incident_watchdog()
    assert orphan.id in report.escalated
    assert f"{retired.id}: unknown runbook 'retired-runbook'" in report.skipped
    again = incident_watchdog()
    assert orphan.id not in again.escalated
    kinds = [e.kind for e in store.timeline(orphan.id)]
    assert kinds.count("target-missed") == 1 and "escalated" in kinds
    [escalated] = [e for e in store.timeline(orphan.id) if e.kind == "escalated"]
    assert escalated.data["level"] == "L2"  # seed 002: rate limiter → L2 notified
    assert any(t.startswith("🔺 INCIDENT ESCALATED") for t in texts(channels["slack"]))
    store.close_incident(orphan.id, status="escalated")
    store.close_incident(retired.id, status="escalated")


def test_a_dry_run_tells_nobody(
    incident_world: IncidentWorld, channels: dict[str, CaptureServer]
) -> None:
    """A dry run plans and records, and sends no Slack message, page, status-page change or
    follow-up issue: nobody is woken for a plan that will not run."""
    w = incident_world
    outcome = connection_pool_exhausted(**w.params, dry_run=True)
    assert outcome.status == "planned"
    time.sleep(1)  # deliveries go out from background threads
    for name, server in channels.items():
        assert server.received == [], f"the dry run told {name}"
    kinds = [e.kind for e in w.store.timeline(outcome.incident_id)]
    assert "planned" in kinds and "notified" not in kinds
    assert pids_alive(w.idle) == w.idle
