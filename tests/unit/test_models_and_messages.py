"""Outcome JSON, exit codes and the Slack message shapes of seed 002."""

from __future__ import annotations

import json

from remediate.domain.models import ActionResult, Outcome, Plan
from remediate.tasks import slack

CARD = slack.IncidentCard(
    title="connection-pool-exhausted on postgres://h:5432/app",
    severity="P1",
    component="Postgres Database",
    incident_id="i-1",
    owner="@on-call",
    eta="15 minutes",
)


def test_outcome_json_has_the_contract_fields() -> None:
    outcome = Outcome(
        runbook="connection-pool-exhausted",
        status="resolved",
        severity="P1",
        actions=[
            ActionResult(
                name="terminate-idle-sessions",
                destructive=True,
                approved_by="auto-approve",
                executed=True,
                targets=["pid 4242"],
            )
        ],
        verified=True,
    )
    data = json.loads(outcome.model_dump_json())
    assert {
        "runbook",
        "status",
        "severity",
        "incident_id",
        "flow_run_id",
        "findings",
        "causes",
        "actions",
        "verified",
    } <= set(data)
    assert data["actions"][0] == {
        "name": "terminate-idle-sessions",
        "destructive": True,
        "approved_by": "auto-approve",
        "executed": True,
        "targets": ["pid 4242"],
        "detail": "",
    }


def test_exit_codes() -> None:
    for status, code in [
        ("healthy", 0),
        ("resolved", 0),
        ("planned", 1),
        ("declined", 1),
        ("timed-out", 1),
        ("escalated", 1),
        ("failed", 1),
    ]:
        assert Outcome(runbook="x", status=status, severity="P1").exit_code == code  # type: ignore[arg-type]


def test_declare_and_resolve_follow_seed_002_templates() -> None:
    declared = slack.declare(CARD, impact="new connections refused").splitlines()
    assert declared[0] == f"🚨 INCIDENT: {CARD.title} (P1)"
    assert declared[1:6] == [
        "Component: Postgres Database",
        "Status: Investigating",
        "Impact: new connections refused",
        "ETA: 15 minutes",
        "Owner: @on-call",
    ]
    resolved = slack.resolved(
        CARD, resolution="r", impact="2 min", root_cause="idle-sessions", prevention="p"
    ).splitlines()
    assert resolved[0].startswith("✅ INCIDENT RESOLVED:")
    assert [line.split(":")[0] for line in resolved[1:6]] == [
        "Component",
        "Resolution",
        "Impact",
        "Root Cause",
        "Preventive Measures",
    ]


def test_approval_message_says_how_to_answer() -> None:
    text = slack.approval_requested(
        CARD,
        plan=Plan(runbook="x", resource="r", summary="kill 3"),
        flow_run_id="f-1",
        ui_url="http://ui/runs/f-1",
        timeout_seconds=900,
    )
    assert "remediate approve f-1" in text and "--deny" in text and "http://ui/runs/f-1" in text
