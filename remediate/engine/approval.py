"""The approval gate: the one way a destructive plan gets permission to run.

A person answers the `Approval` form (Slack buttons, a signed link, the Prefect UI,
`remediate approve`). Each question is bound to one plan: its pause key is the incident and the
plan's digest, and the form carries the digest, so an answer given for another plan, or to an
earlier execution of the same run, never covers this one. The gate checks who answered through
which channel (`slack` and `link` answers carry a proof the receiver signs after verifying the
channel; the UI form and the CLI cannot prove a name), the allow-list and the "approver is not the
requester" rule, asks again when an answer is refused, and gives up at the timeout with no action.
An auto-approve policy (`AUTO_APPROVE` rules per runbook, action and environment) or an explicit
`remediate run --auto-approve` answers instead of a person. Every question and answer goes to the
incident's timeline.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field, SecretStr

from remediate.domain.models import Plan
from remediate.domain.settings import Settings
from remediate.store.database import Store

__all__ = [
    "CHANNELS",
    "Approval",
    "ApprovalPolicy",
    "Decision",
    "Identity",
    "NotWaiting",
    "Pending",
    "answer_proof",
    "auto_approval_rule",
    "identify",
    "pending_approval",
    "plan_digest",
    "refusal_reason",
    "request_approval",
]

# Channels an answer comes through; the first two carry a proof signed by the receiver.
CHANNELS = ("slack", "link", "cli", "ui")
PROVEN_CHANNELS = frozenset({"slack", "link"})
# Channels whose proof also proves the approver's identity (Slack signs who clicked).
IDENTITY_CHANNELS = frozenset({"slack"})


class Approval(RunInput):
    """The form the approver fills in; the plan is shown above it as markdown."""

    approve: bool = Field(default=False, description="Tick to approve the plan above.")
    approver: str = Field(default="", description="Your name, as on the approver list.")
    note: str = Field(default="", description="Why; kept in the incident's timeline.")
    plan_digest: str = Field(
        default="", description="The digest of the plan above (filled in: leave it as it is)."
    )
    channel: str = Field(default="ui", description="How this answer is given (leave it).")
    proof: str = Field(default="", description="Set by remediate's receiver only (leave empty).")


class Decision(BaseModel):
    status: Literal["approved", "declined", "timed-out"]
    approver: str | None = None
    note: str = ""
    auto: bool = False
    channel: str | None = None
    verified: bool = False

    @property
    def approved(self) -> bool:
        return self.status == "approved"


def plan_digest(plan: Plan) -> str:
    """The digest that binds an approval to this exact plan (its actions, targets, notices)."""
    canonical = json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def answer_proof(
    secret: SecretStr,
    *,
    flow_run_id: str,
    digest: str,
    approver: str,
    channel: str,
    approve: bool,
) -> str:
    """What the receiver signs after verifying a channel (Slack's signature, a signed link), so
    the run can tell its answer from one typed into the Prefect UI with the same fields."""
    message = "\n".join(
        ["remediate-approval-v1", flow_run_id, digest, approver, channel, str(bool(approve))]
    )
    key = secret.get_secret_value().encode()
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Identity:
    channel: str
    verified: bool
    forged: bool = False


def identify(answer: Approval, *, secret: SecretStr | None, flow_run_id: str | None) -> Identity:
    """Through which channel an answer came, and whether that channel proved it."""
    channel = answer.channel if answer.channel in CHANNELS else "ui"
    if channel not in PROVEN_CHANNELS:
        return Identity(channel=channel, verified=False)
    if secret is None or not flow_run_id or not answer.proof:
        return Identity(channel=channel, verified=False, forged=True)
    expected = answer_proof(
        secret,
        flow_run_id=flow_run_id,
        digest=answer.plan_digest,
        approver=answer.approver.strip(),
        channel=channel,
        approve=answer.approve,
    )
    if not hmac.compare_digest(expected.encode(), answer.proof.encode("utf-8", "replace")):
        return Identity(channel=channel, verified=False, forged=True)
    return Identity(channel=channel, verified=channel in IDENTITY_CHANNELS)


@dataclass(frozen=True, kw_only=True)
class ApprovalPolicy:
    environment: str
    approvers: frozenset[str] = frozenset()
    require_distinct_approver: bool = False
    timeout_seconds: int = 900
    poll_seconds: float = 1.0
    auto_rules: tuple[str, ...] = ()
    # When APPROVERS is set: do answers whose channel cannot prove the name (UI, CLI, links) count?
    accept_unverified: bool = True
    # The key the receiver signs channel proofs with (APPROVAL_LINK_SECRET).
    proof_secret: SecretStr | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ApprovalPolicy:
        return cls(
            environment=settings.remediation_environment,
            approvers=frozenset(settings.approvers),
            require_distinct_approver=settings.approval_require_distinct_approver,
            timeout_seconds=settings.approval_timeout_seconds,
            poll_seconds=settings.approval_poll_seconds,
            auto_rules=tuple(settings.auto_approve),
            accept_unverified=settings.approval_accept_unverified,
            proof_secret=settings.approval_key,
        )


def auto_approval_rule(policy: ApprovalPolicy, plan: Plan) -> str | None:
    """The configured rule that covers every destructive action of `plan`, if one does. None for
    a plan with something the run cannot prove harmless (`Plan.manual_only`)."""
    if plan.manual_only:
        return None
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
    answer: Approval,
    *,
    policy: ApprovalPolicy,
    requester: str | None,
    digest: str | None = None,
    identity: Identity | None = None,
) -> str | None:
    """Why an answer cannot count (None when it can). A decline is refused on the same rules."""
    name = answer.approver.strip()
    if digest is not None and answer.plan_digest != digest:
        given = answer.plan_digest[:12] or "none"
        return f"the answer is for another plan ({given}), not the one waiting ({digest[:12]})"
    if identity is not None and identity.forged:
        return f"the answer claims the {identity.channel} channel but its proof does not verify"
    if not name:
        return "the answer names no approver"
    if (
        policy.approvers
        and identity is not None
        and not identity.verified
        and not policy.accept_unverified
    ):
        return (
            f"answers through {identity.channel} cannot prove who gave them, and"
            " APPROVAL_ACCEPT_UNVERIFIED is off (answer from Slack)"
        )
    if policy.approvers and name not in policy.approvers:
        return f"{name} is not on the approver list"
    if policy.require_distinct_approver and requester and name == requester:
        return f"{name} requested this run and may not approve it"
    return None


Ask = Callable[..., Approval | None]


def _auto_decision(
    *, plan: Plan, incident_id: str, policy: ApprovalPolicy, store: Store, auto_approve: bool
) -> Decision | None:
    """The decision an auto-approve rule (or `--auto-approve`) gives without asking, if one
    does; recorded."""
    rule = (
        "--auto-approve"
        if auto_approve and not plan.manual_only
        else auto_approval_rule(policy, plan)
    )
    if rule is None:
        return None
    store.record(
        incident_id,
        "approval-answered",
        actor="auto-approve",
        detail=f"approved automatically ({rule})",
        data={"approve": True, "rule": rule},
    )
    return Decision(status="approved", approver="auto-approve", note=rule, auto=True)


def _take_answer(
    answer: Approval,
    *,
    key: str,
    digest: str,
    incident_id: str,
    requester: str | None,
    policy: ApprovalPolicy,
    store: Store,
    flow_run_id: str | None,
) -> Decision | None:
    """Check and record one answer: its decision, or None when it was refused (the run asks
    again)."""
    identity = identify(answer, secret=policy.proof_secret, flow_run_id=flow_run_id)
    heard = {
        "approve": answer.approve,
        "note": answer.note,
        "channel": identity.channel,
        "verified": identity.verified,
        "plan_digest": answer.plan_digest,
        "key": key,
    }
    reason = refusal_reason(
        answer, policy=policy, requester=requester, digest=digest, identity=identity
    )
    if reason is not None:
        store.record(
            incident_id,
            "approval-refused",
            actor=answer.approver.strip()[:200] or None,
            detail=reason,
            data=heard,
        )
        return None
    status: Literal["approved", "declined"] = "approved" if answer.approve else "declined"
    name = answer.approver.strip()
    how = f"{identity.channel}, {'verified' if identity.verified else 'identity not verified'}"
    store.record(
        incident_id,
        "approval-answered",
        actor=name,
        detail=f"{status} by {name} ({how})" + (f": {answer.note}" if answer.note else ""),
        data=heard,
    )
    return Decision(
        status=status,
        approver=name,
        note=answer.note,
        channel=identity.channel,
        verified=identity.verified,
    )


def _wait_for_answer(
    *,
    ask: Ask,
    form: type[Approval],
    base_key: str,
    digest: str,
    incident_id: str,
    requester: str | None,
    policy: ApprovalPolicy,
    store: Store,
    flow_run_id: str | None,
) -> Decision | None:
    """Ask until an answer counts (its decision) or the timeout (None); a new input key per
    question."""
    deadline = time.monotonic() + policy.timeout_seconds
    attempt = 0
    while (remaining := deadline - time.monotonic()) > 0:
        attempt += 1
        key = f"{base_key}-{attempt}"
        try:
            answer = ask(
                wait_for_input=form,
                timeout=max(1, round(remaining)),
                poll_interval=policy.poll_seconds,
                key=key,
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
        decision = _take_answer(
            answer,
            key=key,
            digest=digest,
            incident_id=incident_id,
            requester=requester,
            policy=policy,
            store=store,
            flow_run_id=flow_run_id,
        )
        if decision is not None:
            return decision
    return None


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
    flow_run_id: str | None = None,
) -> Decision:
    """Ask for permission to run `plan`; returns the recorded decision. Must run inside a flow."""
    automatic = _auto_decision(
        plan=plan, incident_id=incident_id, policy=policy, store=store, auto_approve=auto_approve
    )
    if automatic is not None:
        return automatic

    digest = plan_digest(plan)
    # One key per incident (a new one each time a run executes) and plan: a run executed again
    # (recovered, retried) never gets an earlier execution's answer back from Prefect.
    base_key = f"approval-{incident_id}-{digest[:16]}"
    store.record(
        incident_id,
        "approval-asked",
        actor=requester,
        detail=f"waiting up to {policy.timeout_seconds} s for an approver of plan {digest[:12]}",
        data={"plan": plan.model_dump(mode="json"), "plan_digest": digest, "key": base_key},
    )
    if announce is not None:
        announce()
    form = Approval.with_initial_data(
        description=plan.to_markdown() + f"\n\nPlan digest: `{digest}`",
        approve=False,
        plan_digest=digest,
    )
    decision = _wait_for_answer(
        ask=ask,
        form=form,
        base_key=base_key,
        digest=digest,
        incident_id=incident_id,
        requester=requester,
        policy=policy,
        store=store,
        flow_run_id=flow_run_id,
    )
    if decision is not None:
        return decision

    store.record(
        incident_id,
        "approval-timed-out",
        detail=f"no valid answer within {policy.timeout_seconds} s; nothing was changed",
    )
    return Decision(status="timed-out")


@dataclass(frozen=True)
class Pending:
    """The question a paused run is asking: its input key and the plan digest its form carries."""

    flow_run_id: str
    key: str
    plan_digest: str
    state: str


SCHEMA_WAIT_SECONDS = 5.0


def pending_approval(client: object, flow_run_id: str) -> Pending:
    """What `flow_run_id` waits for (through a sync Prefect client). Raises `NotWaiting`, naming
    the run's state, when it is not paused on one of this gate's questions."""
    from uuid import UUID

    run = client.read_flow_run(UUID(flow_run_id))  # type: ignore[attr-defined]
    state = run.state
    name = state.name if state is not None else "unknown"
    keyset = state.state_details.run_input_keyset if state is not None else None
    if state is None or not state.is_paused() or not keyset:
        raise NotWaiting(f"flow run {flow_run_id} is not waiting for an approval (it is {name})")
    # Prefect marks the run Paused first and saves the form's schema right after: a question
    # read in between is not there yet.
    deadline = time.monotonic() + SCHEMA_WAIT_SECONDS
    while True:
        try:
            schema = client.read_flow_run_input(UUID(flow_run_id), keyset["schema"])  # type: ignore[attr-defined]
            break
        except Exception:  # noqa: BLE001 - Prefect's 404 for an input not saved yet
            if time.monotonic() > deadline:
                raise NotWaiting(
                    f"flow run {flow_run_id} is paused but its question cannot be read"
                ) from None
            time.sleep(0.1)
    try:
        default = json.loads(schema)["properties"]["plan_digest"]["default"]
    except (ValueError, KeyError, TypeError):
        raise NotWaiting(f"flow run {flow_run_id} waits for input, not an approval") from None
    response = keyset["response"]
    return Pending(
        flow_run_id=flow_run_id,
        key=response.removeprefix("paused-").removesuffix("-response"),
        plan_digest=str(default),
        state=name,
    )


class NotWaiting(Exception):
    """The run asks no question now (finished, crashed, cancelled, running); safe to show."""


def answer_run(
    flow_run_id: str,
    *,
    approve: bool,
    approver: str,
    note: str = "",
    channel: str = "cli",
    proof_secret: SecretStr | None = None,
    digest: str | None = None,
) -> Pending:
    """Answer the question `flow_run_id` is asking now, bound to its plan's digest (or refuse,
    with `NotWaiting`, when it asks none, or asks about another plan than `digest`). A proven
    channel's answer is signed with `proof_secret`. Returns the question that was answered."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    try:
        with get_client(sync_client=True) as client:
            pending = pending_approval(client, flow_run_id)
    except ObjectNotFound:
        raise NotWaiting(f"no flow run {flow_run_id}") from None
    if digest is not None and digest != pending.plan_digest:
        raise NotWaiting(
            f"flow run {flow_run_id} now waits for another plan ({pending.plan_digest[:12]}),"
            f" not the one answered ({digest[:12]})"
        )
    run_input: dict[str, object] = {
        "approve": approve,
        "approver": approver,
        "note": note,
        "plan_digest": pending.plan_digest,
        "channel": channel,
    }
    if channel in PROVEN_CHANNELS and proof_secret is not None:
        run_input["proof"] = answer_proof(
            proof_secret,
            flow_run_id=flow_run_id,
            digest=pending.plan_digest,
            approver=approver,
            channel=channel,
            approve=approve,
        )
    try:
        resume_flow_run(UUID(flow_run_id), run_input=run_input)
    except (NotPausedError, ObjectNotFound):
        raise NotWaiting(
            f"flow run {flow_run_id} is not waiting for an approval any more"
        ) from None
    return pending


def taken(store: Store, flow_run_id: str, key: str) -> tuple[str, str] | None:
    """How the run took the answer to question `key`: (`approval-answered` or
    `approval-refused`, the detail), or None while it has not read it."""
    incident = store.incident_for_flow_run(flow_run_id)
    if incident is None:
        return None
    for event in reversed(store.timeline(incident.id)):
        if event.kind in {"approval-answered", "approval-refused"} and event.data.get("key") == key:
            return event.kind, event.detail
    return None


def pending_approval_digest(flow_run_id: str) -> str:
    """The digest of the plan `flow_run_id` asks about now (`NotWaiting` when it asks none)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return pending_approval(client, flow_run_id).plan_digest
