"""What every incident gets, whatever the runbook (seeds 000 and 002): severity and its clock, the
escalation path and matrix, the "Before you escalate" checklist, and the post-mortem draft.

Pure functions over the catalogue, the configuration and the incident's own timeline; the side
effects (messages, pages, issues) are `tasks/slack.py`, `tasks/pagerduty.py`, `tasks/statuspage.py`
and `tasks/github.py`'s, and `remediate/engine/incident.py` calls them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from remediate.domain.models import Finding, Incident, Severity, TimelineEvent
from remediate.domain.settings import Settings
from remediate.engine import catalogue

__all__ = [
    "DATA_LOSS_CAUSES",
    "SECURITY_CAUSES",
    "Escalation",
    "Targets",
    "checklist",
    "escalation_for",
    "postmortem_markdown",
    "raised_severity",
    "targets_for",
]

# Evidence that raises an incident to P1 and calls people in at once (seed 000's escalation path).
DATA_LOSS_CAUSES = frozenset({"stamp-without-upgrade", "migrations-not-applied", "buggy-migration"})
# RLS switched off, or a policy opening a table to `anon`/`public`: data may be exposed.
SECURITY_CAUSES = frozenset({"rls-disabled", "access-opened"})

# Seed 000's classification: response targets by severity, in minutes (P4: next business day).
RESPONSE_MINUTES: dict[str, int] = {"P1": 0, "P2": 60, "P3": 240, "P4": 24 * 60}
# Resolution targets where the catalogue has none for the (raised) severity (seed 002's table).
RESOLUTION_MINUTES: dict[str, int] = {"P1": 30, "P2": 60, "P3": 240, "P4": 24 * 60}

Level = Literal["L1", "L2", "L3", "tech-lead", "security"]
# Seed 002's escalation matrix: who is engaged (✓), told (Notify) or on standby, per runbook
# component; runbooks of seed 000 follow its path (on-call, then senior engineer).
MATRIX: dict[str, dict[str, str]] = {
    "rls-auth-failure": {"L1": "engaged", "L2": "engaged", "L3": "notify"},
    "connection-pool-exhausted": {"L1": "engaged", "L2": "engaged", "L3": "standby"},
    "email-delivery": {"L1": "engaged", "L2": "notify"},
    "rate-limiter": {"L1": "engaged", "L2": "notify"},
    "auth-server-health": {"L1": "engaged", "L2": "engaged", "L3": "notify"},
    "auth-failures": {"L1": "engaged", "L2": "engaged", "L3": "notify"},
}
DEFAULT_PATH = {"L1": "engaged", "L2": "engaged"}
LEVEL_NAMES = {
    "L1": "on-call engineer",
    "L2": "senior engineer",
    "L3": "architect",
    "tech-lead": "tech lead",
    "security": "security team",
}


@dataclass(frozen=True)
class Targets:
    response: timedelta
    resolution: timedelta


def targets_for(runbook_id: str, severity: Severity, settings: Settings) -> Targets:
    """Response and resolution targets: the catalogue's (seed 002's table) for the runbook's own
    severity, seed 000's by severity once raised; `INCIDENT_TARGETS` overrides either."""
    runbook = catalogue.get(runbook_id)
    minutes = (
        runbook.resolution_minutes
        if severity == runbook.severity
        else min(RESOLUTION_MINUTES[severity], runbook.resolution_minutes)
    )
    resolution = timedelta(minutes=minutes)
    override = settings.incident_targets.get(runbook_id) or settings.incident_targets.get(severity)
    if override is not None:
        resolution = timedelta(seconds=override)
    return Targets(response=timedelta(minutes=RESPONSE_MINUTES[severity]), resolution=resolution)


def raised_severity(severity: Severity, causes: Sequence[str]) -> tuple[Severity, list[str]]:
    """The severity the evidence calls for, and why (suspected data loss or security: P1)."""
    reasons = []
    if DATA_LOSS_CAUSES & set(causes):
        reasons.append(
            "data loss suspected (" + ", ".join(sorted(DATA_LOSS_CAUSES & set(causes))) + ")"
        )
    if SECURITY_CAUSES & set(causes):
        reasons.append("security: " + ", ".join(sorted(SECURITY_CAUSES & set(causes))))
    return ("P1" if reasons else severity), reasons


@dataclass(frozen=True)
class Escalation:
    level: Level
    contacts: list[str]
    notify: list[str]
    reason: str


def _contact(settings: Settings, level: str) -> str:
    return settings.escalation_contacts.get(level, f"@{LEVEL_NAMES[level].replace(' ', '-')}")


def escalation_for(
    runbook_id: str, *, causes: Sequence[str], settings: Settings, overdue: bool
) -> list[Escalation]:
    """Who to call now: the next level of the path when the target is missed, the tech lead for
    suspected data loss, the security team for anything security-related (both at once)."""
    found: list[Escalation] = []
    if DATA_LOSS_CAUSES & set(causes):
        found.append(
            Escalation(
                level="tech-lead",
                contacts=[_contact(settings, "tech-lead")],
                notify=[],
                reason="data loss suspected",
            )
        )
    if SECURITY_CAUSES & set(causes):
        found.append(
            Escalation(
                level="security",
                contacts=[_contact(settings, "security")],
                notify=[],
                reason="security incident",
            )
        )
    if overdue:
        matrix = MATRIX.get(runbook_id, DEFAULT_PATH)
        engaged = [lvl for lvl in ("L2", "L3") if matrix.get(lvl) == "engaged"]
        told = [lvl for lvl in ("L2", "L3") if matrix.get(lvl) in {"notify", "standby"}]
        level: Level = "L2" if "L2" in engaged or "L2" in told else "L3"
        contacts = [_contact(settings, lvl) for lvl in engaged] or [_contact(settings, level)]
        found.append(
            Escalation(
                level=level,
                contacts=contacts,
                notify=[_contact(settings, lvl) for lvl in told if lvl != level],
                reason="resolution target missed",
            )
        )
    return found


# Seed 002's "Before You Escalate", filled in from what the run did.

CHECKLIST = (
    ("sentry", "Checked Sentry for error patterns"),
    ("commits", "Reviewed recent git commits (within 2 hours)"),
    ("locations", "Verified issue in multiple geographic locations"),
    ("fix", "Attempted at least one fix from runbook"),
    ("logs", "Gathered logs and error messages"),
    ("status-page", "Checked status page for known issues"),
    ("notified", "Notified team in #incidents channel"),
)


def _findings(events: Sequence[TimelineEvent]) -> list[Finding]:
    found = []
    for event in events:
        for raw in event.data.get("findings", []) or []:
            found.append(Finding(**raw))
    return found


def checklist(events: Sequence[TimelineEvent]) -> list[tuple[bool, str, str]]:
    """(done, item, evidence) for each item of the checklist."""
    findings = _findings(events)

    def seen(*words: str) -> list[Finding]:
        return [f for f in findings if any(w in f.check for w in words)]

    sentry = seen("sentry")
    commits = seen("commit", "deploy", "git")
    logs = seen("log")
    acted = [e for e in events if e.kind in {"acted", "action-failed"}]
    status = [e for e in events if e.kind == "notified" and e.data.get("channel") == "statuspage"]
    slack = [
        e
        for e in events
        if e.kind == "notified" and e.data.get("channel") == "slack" and e.data.get("delivered")
    ]
    answers = {
        "sentry": (bool(sentry), sentry[0].detail if sentry else "Sentry is not configured"),
        "commits": (bool(commits), commits[0].detail if commits else "no repository configured"),
        "locations": (False, "one runner checks from one place; ask a person elsewhere"),
        "fix": (bool(acted), acted[0].detail if acted else "no fix ran (approval or policy)"),
        "logs": (bool(logs) or bool(findings), f"{len(findings)} finding(s) recorded"),
        "status-page": (bool(status), "component status set" if status else "not configured"),
        "notified": (bool(slack), f"{len(slack)} message(s) delivered" if slack else "no chat"),
    }
    return [(answers[key][0], text, answers[key][1]) for key, text in CHECKLIST]


def checklist_lines(events: Sequence[TimelineEvent]) -> list[str]:
    return [f"[{'x' if done else ' '}] {text}: {why}" for done, text, why in checklist(events)]


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def postmortem_markdown(
    incident: Incident,
    events: Sequence[TimelineEvent],
    *,
    causes: Sequence[str],
    prevention: str,
    follow_up: str | None = None,
) -> str:
    """Seed 002's post-mortem template, from the run's own events."""
    runbook = catalogue.get(incident.runbook)
    end = incident.closed_at or (events[-1].at if events else incident.opened_at)
    minutes = (end - incident.opened_at).total_seconds() / 60
    lines = [
        f"# Post-Mortem: {runbook.component} on {incident.opened_at:%Y-%m-%d}",
        "",
        f"Incident {incident.id}, {incident.severity}, {incident.runbook} on {incident.resource};"
        f" status {incident.status}. Draft written by the run; edit before sharing.",
        "",
        "## Timeline",
    ]
    for event in events:
        actor = f" ({event.actor})" if event.actor else ""
        detail = event.detail.replace("\n", " ")[:300]
        lines.append(f"- {_at(event.at)} **{event.kind}**{actor}: {detail}")
    evidence = [f for f in _findings(events) if not f.ok]
    lines += ["", "## Root Cause", ", ".join(causes) or "not determined by the run"]
    lines += [f"- {f.check}: {f.detail}" for f in evidence[:20]]
    acted = [e for e in events if e.kind == "acted"]
    lines += [
        "",
        "## Impact",
        f"- Duration: {minutes:.1f} minutes from detection to {incident.status}",
        f"- Services affected: {runbook.component} ({incident.resource})",
        "- Affected users: not measured by the run",
        "",
        "## Remediation Steps Taken",
    ]
    lines += [f"- {_at(e.at)} {e.detail} (approved by {e.actor or 'n/a'})" for e in acted] or [
        "- none: nothing was changed by the run"
    ]
    lines += ["", "## Prevention for Next Time"]
    lines += [f"- {item.strip()}" for item in prevention.split(";") if item.strip()]
    pattern = ", ".join(causes) or "this pattern"
    lines += [
        "",
        "## Action Items",
        f"- [ ] Implement monitoring for {incident.runbook} ({pattern})",
        f"- [ ] Add a test for {', '.join(causes) or 'this scenario'}",
        f"- [ ] Update the runbook docs/runbooks/{incident.runbook}.md if it hindered",
    ]
    if follow_up:
        lines.append(f"- [ ] Preventive measures: {follow_up}")
    return "\n".join(lines) + "\n"
