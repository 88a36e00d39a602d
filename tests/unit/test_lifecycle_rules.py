"""Severity, targets, escalation, the checklist and the post-mortem: pure rules, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from remediate.domain.models import Incident, TimelineEvent
from remediate.domain.settings import load_settings
from remediate.engine import lifecycle

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def event(seconds: float, kind: str, detail: str = "", **data: object) -> TimelineEvent:
    return TimelineEvent(at=T0 + timedelta(seconds=seconds), kind=kind, detail=detail, data=data)


def test_targets_come_from_the_seed_tables_and_can_be_overridden() -> None:
    settings = load_settings()
    rls = lifecycle.targets_for("rls-auth-failure", "P1", settings)
    assert (rls.response, rls.resolution) == (timedelta(0), timedelta(minutes=15))
    pool = lifecycle.targets_for("connection-pool-exhausted", "P1", settings)
    assert pool.resolution == timedelta(minutes=30)
    email = lifecycle.targets_for("email-delivery", "P2", settings)
    assert email.response == timedelta(hours=1) and email.resolution == timedelta(hours=4)
    raised = lifecycle.targets_for("email-delivery", "P1", settings)
    assert raised.resolution == timedelta(minutes=30)  # raised to P1: P1's target
    custom = load_settings(incident_targets="P1=5,rate-limiter=7")
    assert lifecycle.targets_for("rls-auth-failure", "P1", custom).resolution == timedelta(
        seconds=5
    )
    assert lifecycle.targets_for("rate-limiter", "P2", custom).resolution == timedelta(seconds=7)


def test_evidence_raises_severity() -> None:
    assert lifecycle.raised_severity("P2", ["idle-sessions"]) == ("P2", [])
    severity, reasons = lifecycle.raised_severity("P2", ["rls-disabled"])
    assert severity == "P1" and reasons == ["security: rls-disabled"]
    severity, reasons = lifecycle.raised_severity("P3", ["stamp-without-upgrade"])
    assert severity == "P1" and "data loss suspected" in reasons[0]


def test_escalation_follows_the_path_and_the_matrix() -> None:
    settings = load_settings(escalation_contacts="L2=@senior,L3=@arch,tech-lead=@lead")
    nothing = lifecycle.escalation_for("rate-limiter", causes=[], settings=settings, overdue=False)
    assert nothing == []
    [rls] = lifecycle.escalation_for("rls-auth-failure", causes=[], settings=settings, overdue=True)
    assert (rls.level, rls.contacts, rls.notify) == ("L2", ["@senior"], ["@arch"])
    [email] = lifecycle.escalation_for("email-delivery", causes=[], settings=settings, overdue=True)
    assert (email.level, email.contacts, email.notify) == ("L2", ["@senior"], [])
    loss = lifecycle.escalation_for(
        "tables-missing-after-migration",
        causes=["stamp-without-upgrade"],
        settings=settings,
        overdue=False,
    )
    assert [(e.level, e.contacts) for e in loss] == [("tech-lead", ["@lead"])]
    security = lifecycle.escalation_for(
        "rls-auth-failure", causes=["rls-disabled"], settings=settings, overdue=False
    )
    assert [e.level for e in security] == ["security"]
    assert security[0].contacts == ["@security-team"]  # the default name when not configured


def test_the_checklist_is_filled_from_what_the_run_did() -> None:
    events = [
        event(
            0,
            "detected",
            findings=[{"check": "sentry-auth-errors", "ok": False, "detail": "42/min"}],
        ),
        event(
            1,
            "diagnosed",
            findings=[
                {"check": "recent-auth-commits", "ok": False, "detail": "abc123 ats: roles"},
                {"check": "backend-log", "ok": False, "detail": "3 error lines"},
            ],
        ),
        event(2, "notified", "🚨", channel="slack", delivered=True),
        event(3, "acted", "rollback: 1 target(s)"),
    ]
    done = {item: ok for ok, item, _ in lifecycle.checklist(events)}
    assert done == {
        "Checked Sentry for error patterns": True,
        "Reviewed recent git commits (within 2 hours)": True,
        "Verified issue in multiple geographic locations": False,
        "Attempted at least one fix from runbook": True,
        "Gathered logs and error messages": True,
        "Checked status page for known issues": False,
        "Notified team in #incidents channel": True,
    }
    assert lifecycle.checklist_lines(events)[0] == "[x] Checked Sentry for error patterns: 42/min"


@pytest.mark.parametrize("status", ["resolved", "escalated"])
def test_the_postmortem_follows_seed_002s_template(status: str) -> None:
    incident = Incident(
        id="inc-1",
        runbook="rls-auth-failure",
        severity="P1",
        status=status,
        resource="postgres://db:5432/app",
        title="Authentication / Row Level Security",
        opened_at=T0,
        closed_at=T0 + timedelta(minutes=12),
    )
    events = [
        event(0, "detected", "policy-diff: auth_policy_select missing"),
        event(60, "approval-answered", "approved by alice"),
        event(61, "acted", "rollback-rls-policies: 1 target(s)"),
        event(62, "verified", "policies equal the snapshot"),
    ]
    draft = lifecycle.postmortem_markdown(
        incident, events, causes=["policy-changed"], prevention="snapshot policies; test RLS in CI"
    )
    sections = [line for line in draft.splitlines() if line.startswith("#")]
    assert sections == [
        "# Post-Mortem: Authentication / Row Level Security on 2026-11-22",
        "## Timeline",
        "## Root Cause",
        "## Impact",
        "## Remediation Steps Taken",
        "## Prevention for Next Time",
        "## Action Items",
    ]
    assert "- Duration: 12.0 minutes" in draft
    assert (
        draft.index("**detected**")
        < draft.index("**approval-answered**")
        < draft.index("**acted**")
    )
    assert "- snapshot policies" in draft and "- test RLS in CI" in draft
    assert "- [ ] Add a test for policy-changed" in draft
