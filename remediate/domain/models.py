"""Typed results passed between the phases of a run: findings, diagnosis, plan, outcome."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ActionResult",
    "Alert",
    "Diagnosis",
    "Finding",
    "Incident",
    "Outcome",
    "Plan",
    "PlannedAction",
    "Severity",
    "Status",
]

Severity = Literal["P1", "P2", "P3", "P4"]
Status = Literal["healthy", "resolved", "planned", "declined", "timed-out", "escalated", "failed"]

# Exit codes of `remediate run` and `remediate sweep` (CONTRACT.md).
EXIT_OK_STATUSES: frozenset[str] = frozenset({"healthy", "resolved"})


class Alert(BaseModel):
    """One alert from any source, normalised by the receiver before routing."""

    source: Literal["alertmanager", "grafana", "sentry", "generic", "sweep"]
    status: Literal["firing", "resolved"]
    name: str
    fingerprint: str
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    severity: str | None = None
    # What identifies this occurrence at the source (Alertmanager's startsAt…), if it says.
    starts_at: str | None = None
    # The runbook the sender named itself (generic alerts, a `runbook` label).
    runbook: str | None = None


class Finding(BaseModel):
    """One check and what it saw. `detail` is safe to show anywhere (no secrets)."""

    check: str
    ok: bool
    detail: str


class Diagnosis(BaseModel):
    """Named causes and the read-only evidence behind them."""

    causes: list[str] = Field(default_factory=list)
    evidence: list[Finding] = Field(default_factory=list)
    suggestions: list[str] = Field(default_factory=list)


class PlannedAction(BaseModel):
    """One change the run proposes: what, on which resource, the exact objects and statements."""

    name: str
    destructive: bool
    resource: str
    description: str
    targets: list[str] = Field(default_factory=list)
    # One line per target for the approver (who, what, since when); defaults to the targets.
    details: list[str] = Field(default_factory=list)
    statements: list[str] = Field(default_factory=list)
    # Machine-readable identities of the targets, for the task that acts (never secrets).
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def blast_radius(self) -> int:
        return len(self.targets)


class Plan(BaseModel):
    """Everything a remediation would change, shown to the approver before anything runs."""

    runbook: str
    resource: str
    summary: str
    actions: list[PlannedAction] = Field(default_factory=list)
    suggestions: list[str] = Field(default_factory=list)
    # Warnings for the approver (recent actions on the same resource…), shown first.
    notices: list[str] = Field(default_factory=list)
    # What the run cannot prove harmless: a person must approve (no rule, no --auto-approve).
    manual_only: list[str] = Field(default_factory=list)

    @property
    def destructive(self) -> bool:
        return any(action.destructive for action in self.actions)

    @property
    def empty(self) -> bool:
        return not any(action.targets for action in self.actions)

    def to_markdown(self) -> str:
        """The plan for the approver. Every value is escaped: a Redis key, a commit subject or a
        log line reads as text, never as a link, an image or a heading."""
        lines = [f"## Plan for {md_code(self.runbook)} on {md_code(self.resource)}", ""]
        lines += [f"> **Warning:** {md_text(notice)}" for notice in self.notices]
        lines += [
            f"> **Only a person may approve this:** {md_text(line)}" for line in self.manual_only
        ]
        summary = md_text(self.summary)
        lines += ["", summary, ""] if self.notices or self.manual_only else [summary, ""]
        for number, action in enumerate(self.actions, start=1):
            marker = " (destructive)" if action.destructive else ""
            lines += [
                f"### {number}. {md_code(action.name)}{marker}",
                "",
                md_text(action.description),
                "",
            ]
            lines.append(f"Blast radius: {action.blast_radius} object(s).")
            lines.append("")
            shown = action.details or action.targets
            lines += [f"- {md_code(line)}" for line in shown[:50]]
            if len(shown) > 50:
                lines.append(f"- … and {len(shown) - 50} more")
            if action.statements:
                fence = "````" if any("```" in st for st in action.statements) else "```"
                lines += ["", f"{fence}sql", *action.statements, fence]
            lines.append("")
        if self.suggestions:
            lines += ["### Suggestions (never applied automatically)", ""]
            lines += [f"- {md_text(suggestion)}" for suggestion in self.suggestions]
        return "\n".join(lines).rstrip() + "\n"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def md_text(text: str) -> str:
    """Text for markdown, one line, with every markup character escaped."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def md_code(text: str) -> str:
    """A value shown as inline code (nothing inside it is markup), whatever backticks it holds."""
    flat = " ".join(text.replace("\x00", "\\0").split())
    longest = max((len(m) for m in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or longest else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


class ActionResult(BaseModel):
    """What happened to one planned action (outcome JSON `actions[]`)."""

    name: str
    destructive: bool
    approved_by: str | None = None
    executed: bool = False
    targets: list[str] = Field(default_factory=list)
    detail: str = ""


class Outcome(BaseModel):
    """The result of one runbook run, printed by `remediate run --json`."""

    runbook: str
    status: Status
    severity: Severity
    incident_id: str | None = None
    flow_run_id: str | None = None
    findings: list[Finding] = Field(default_factory=list)
    causes: list[str] = Field(default_factory=list)
    actions: list[ActionResult] = Field(default_factory=list)
    verified: bool = False
    summary: str = ""
    # Timeline entries kept on disk because the incident store was unreachable
    # (remediate/engine/journal.py).
    timeline_spooled: int = 0

    @property
    def exit_code(self) -> int:
        return 0 if self.status in EXIT_OK_STATUSES else 1


class Incident(BaseModel):
    """An incident in the store."""

    id: str
    runbook: str
    severity: Severity
    status: str
    resource: str
    title: str
    flow_run_id: str | None = None
    requested_by: str | None = None
    opened_at: datetime
    closed_at: datetime | None = None


class TimelineEvent(BaseModel):
    """One step of an incident: detected, planned, approval asked/answered, acted, verified…"""

    at: datetime
    kind: str
    actor: str | None = None
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
