"""The approval gate: the one way a destructive plan gets permission to run.

A person answers the `Approval` form (Prefect UI, `remediate approve`, later a signed link);
the gate checks the answer against the allow-list and the "approver is not the requester" rule,
asks again when an answer is refused, and gives up at the timeout with no action. An
auto-approve policy (`AUTO_APPROVE` rules per runbook, action and environment) or an explicit
`--auto-approve` answers instead of a person. Every question and answer goes to the incident's
timeline.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from core.models import Plan
from core.settings import Settings
from core.store import Store

__all__ = [
    "Approval",
    "ApprovalPolicy",
    "Decision",
    "auto_approval_rule",
    "refusal_reason",
    "request_approval",
]


class Approval(RunInput):
    """The form the approver fills in; the plan is shown above it as markdown."""

    approve: bool = Field(default=False, description="Tick to approve the plan above.")
    approver: str = Field(default="", description="Your name, as on the approver list.")
    note: str = Field(default="", description="Why; kept in the incident's timeline.")


class Decision(BaseModel):
    status: Literal["approved", "declined", "timed-out"]
    approver: str | None = None
    note: str = ""
    auto: bool = False

    @property
    def approved(self) -> bool:
        return self.status == "approved"


@dataclass(frozen=True, kw_only=True)
class ApprovalPolicy:
    environment: str
    approvers: frozenset[str] = frozenset()
    require_distinct_approver: bool = False
    timeout_seconds: int = 900
    poll_seconds: float = 1.0
    auto_rules: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ApprovalPolicy:
        return cls(
            environment=settings.remediation_environment,
            approvers=frozenset(settings.approvers),
            require_distinct_approver=settings.approval_require_distinct_approver,
            timeout_seconds=settings.approval_timeout_seconds,
            poll_seconds=settings.approval_poll_seconds,
            auto_rules=tuple(settings.auto_approve),
        )


def auto_approval_rule(policy: ApprovalPolicy, plan: Plan) -> str | None:
    """The configured rule that covers every destructive action of `plan`, if one does."""
    matched: str | None = None
    for action in (a for a in plan.actions if a.destructive):
        rule = next(
            (
                r
                for r in policy.auto_rules
                if all(
                    fnmatch.fnmatchcase(value, pattern)
                    for value, pattern in zip(
                        (plan.runbook, action.name, policy.environment), r.split(":"), strict=True
                    )
                )
            ),
            None,
        )
        if rule is None:
            return None
        matched = rule
    return matched


def refusal_reason(
    answer: Approval, *, policy: ApprovalPolicy, requester: str | None
) -> str | None:
    """Why an answer cannot count (None when it can). A decline is refused on the same rules."""
    name = answer.approver.strip()
    if not name:
        return "the answer names no approver"
    if policy.approvers and name not in policy.approvers:
        return f"{name} is not on the approver list"
    if policy.require_distinct_approver and requester and name == requester:
        return f"{name} requested this run and may not approve it"
    return None


Ask = Callable[..., Approval | None]


def request_approval(
    *,
    plan: Plan,
    incident_id: str,
    requester: str | None,
    policy: ApprovalPolicy,
    store: Store,
    auto_approve: bool = False,
    announce: Callable[[], None] | None = None,
    ask: Ask = pause_flow_run,
) -> Decision:
    """Ask for permission to run `plan`; returns the recorded decision. Must run inside a flow."""
    rule = "--auto-approve" if auto_approve else auto_approval_rule(policy, plan)
    if rule is not None:
        store.record(
            incident_id,
            "approval-answered",
            actor="auto-approve",
            detail=f"approved automatically ({rule})",
            data={"approve": True, "rule": rule},
        )
        return Decision(status="approved", approver="auto-approve", note=rule, auto=True)

    store.record(
        incident_id,
        "approval-asked",
        actor=requester,
        detail=f"waiting up to {policy.timeout_seconds} s for an approver",
        data={"plan": plan.model_dump(mode="json")},
    )
    if announce is not None:
        announce()
    form = Approval.with_initial_data(description=plan.to_markdown(), approve=False)
    deadline = time.monotonic() + policy.timeout_seconds
    attempt = 0
    while (remaining := deadline - time.monotonic()) > 0:
        attempt += 1
        try:
            answer = ask(
                wait_for_input=form,
                timeout=max(1, round(remaining)),
                poll_interval=policy.poll_seconds,
                key=f"approval-{attempt}",
            )
        except FlowPauseTimeout:
            break
        except Exception:
            # The server's own pause expiry can fail the run before the client's timeout fires
            # (PREFECT-NOTES.md): past the deadline that is a timeout, before it a real error.
            if time.monotonic() < deadline - 1:
                raise
            break
        if answer is None:
            continue
        reason = refusal_reason(answer, policy=policy, requester=requester)
        if reason is not None:
            store.record(
                incident_id,
                "approval-refused",
                actor=answer.approver or None,
                detail=reason,
                data={"approve": answer.approve, "note": answer.note},
            )
            continue
        status: Literal["approved", "declined"] = "approved" if answer.approve else "declined"
        store.record(
            incident_id,
            "approval-answered",
            actor=answer.approver,
            detail=f"{status} by {answer.approver}" + (f": {answer.note}" if answer.note else ""),
            data={"approve": answer.approve, "note": answer.note},
        )
        return Decision(status=status, approver=answer.approver, note=answer.note)

    store.record(
        incident_id,
        "approval-timed-out",
        detail=f"no valid answer within {policy.timeout_seconds} s; nothing was changed",
    )
    return Decision(status="timed-out")
