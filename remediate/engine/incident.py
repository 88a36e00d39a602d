"""One incident from detection to outcome: the part every runbook flow shares.

A flow detects and diagnoses with its own tasks and pure functions, then hands its plan to
`IncidentRun.carry_out`, which runs the common choreography: safety envelope, approval, lock,
re-read and re-check of the plan, act, verify, and the timeline and notifications around each step.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import ParamSpec

from prefect import Flow, flow, get_run_logger, runtime

from remediate.domain.models import ActionResult, Diagnosis, Finding, Outcome, Plan, Status
from remediate.domain.settings import ConfigError, Settings, load_settings
from remediate.engine import approval_links, catalogue, lifecycle, monitoring, safety
from remediate.engine.approval import (
    ApprovalPolicy,
    Decision,
    auto_approval_rule,
    plan_digest,
    request_approval,
)
from remediate.engine.comms import IncidentComms
from remediate.engine.journal import JournaledStore
from remediate.engine.liveness import ExecutorLost, Lease
from remediate.store.database import LockTimeout, Store, StoreUnavailable
from remediate.tasks import slack

__all__ = ["Detected", "IncidentRun", "detect_only", "runbook_flow", "step_refusal"]

log = logging.getLogger(__name__)

Recheck = Callable[[Plan], Plan]
Act = Callable[[Plan], list[ActionResult]]
Verify = Callable[[], list[Finding]]


class Detected(Exception):
    """Raised instead of opening an incident while detecting only (the health sweep)."""

    def __init__(self, runbook_id: str, *, resource: str, findings: list[Finding]) -> None:
        super().__init__(f"{runbook_id} on {resource}: " + "; ".join(_failed(findings)))
        self.runbook_id = runbook_id
        self.resource = resource
        self.findings = findings


_DETECT_ONLY: ContextVar[bool] = ContextVar("remediate_detect_only", default=False)


@contextmanager
def detect_only() -> Iterator[None]:
    """Run a runbook's detection and stop where it would open an incident (raises `Detected`).

    Every flow's code before `IncidentRun.open` only reads (and records known-good snapshots
    while its checks pass), so this is the runbook's own detector, without a second copy of it.
    """
    token = _DETECT_ONLY.set(True)
    try:
        yield
    finally:
        _DETECT_ONLY.reset(token)


def _failed(findings: Sequence[Finding]) -> list[str]:
    return [f"{f.check}: {f.detail}" for f in findings if not f.ok]


def _first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a timeline and a chat message. A
    database error is named by its class and SQLSTATE only: its text can carry bound values."""
    import psycopg

    from remediate.domain.redact import redact

    if isinstance(exc, psycopg.Error):
        return f"{type(exc).__name__} (SQLSTATE {exc.sqlstate or 'unknown'})"
    text = redact(str(exc).strip())
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


P = ParamSpec("P")
_OPENED: ContextVar[list[IncidentRun] | None] = ContextVar("remediate_opened", default=None)


@dataclass(frozen=True)
class _RunFlags:
    dry_run: bool = False
    # `auto_approve=true` arrived as a parameter of a run created through the Prefect API.
    auto_approve_ignored: bool = False


_NO_FLAGS = _RunFlags()
_FLAGS: ContextVar[_RunFlags] = ContextVar("remediate_run_flags", default=_NO_FLAGS)
_LEASE: ContextVar[Lease | None] = ContextVar("remediate_run_lease", default=None)


def _first_lease() -> Lease | None:
    """The run's lease from its first step; None in a health sweep's detection, outside a flow
    run, or with the settings or the store unusable (the run goes on, and meets that itself)."""
    if _DETECT_ONLY.get() or not runtime.flow_run.id:
        return None
    try:
        settings = load_settings()
        Store.open(settings.remediation_database_url)  # the schema, once per process
        return Lease.take(
            settings,
            flow_run_id=str(runtime.flow_run.id),
            run_count=int(runtime.flow_run.run_count or 0),
        )
    except ConfigError:
        return None
    except Exception as exc:  # noqa: BLE001 - no lease is a lost signal, never a lost run
        logging.getLogger(__name__).warning("no run lease: %s", _first_line(exc))
        return None


_STEP_GATE: ContextVar[Callable[[], str | None] | None] = ContextVar(
    "remediate_step_gate", default=None
)


def step_refusal() -> str | None:
    """Called by a runbook's `act` before each step after the first (the pooler restart after
    the sessions, the upgrade after the version reset…): why it must not run now (the kill switch,
    read again), or None. A step refused here stops the plan; the run escalates with what was
    done and what was not."""
    gate = _STEP_GATE.get()
    return gate() if gate is not None else None


def _auto_approve_granted() -> bool:
    """`auto_approve` counts only in a direct call of the flow (`remediate run --auto-approve` in
    the operator's shell, or Python holding the settings): never for a run created through the
    Prefect API (the UI, a deployment run, a schedule, an alert), whatever its parameters say."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    return flow_run is not None and flow_run.deployment_id is None


def runbook_flow(name: str) -> Callable[[Callable[P, Outcome]], Flow[P, Outcome]]:
    """`@flow` for a runbook. A run that breaks after it opened its incident (the target gone
    in the middle of a diagnosis, a verification that cannot connect, a bug) does not leave that
    incident open and silent: it ends as `failed`, escalated at once with what the run knows and
    whether anything was changed before it broke."""

    def decorate(fn: Callable[P, Outcome]) -> Flow[P, Outcome]:
        @functools.wraps(fn)
        def body(*args: P.args, **kwargs: P.kwargs) -> Outcome:
            opened: list[IncidentRun] = []
            token = _OPENED.set(opened)
            ignored = bool(kwargs.get("auto_approve")) and not _auto_approve_granted()
            if ignored:
                kwargs["auto_approve"] = False
            flags = _FLAGS.set(
                _RunFlags(dry_run=bool(kwargs.get("dry_run")), auto_approve_ignored=ignored)
            )
            # Held from the first step: a run whose process dies while it still detects is
            # noticed too (its claim freed), not only one that opened its incident.
            early = _first_lease()
            leased = _LEASE.set(early)
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not opened or opened[-1].ended:
                    raise
                return opened[-1].broke(exc)
            finally:
                for run in opened:  # stopped without an outcome (cancelled): the lease lapses
                    if run.lease is not None and not run.ended:
                        run.lease.close()
                if early is not None and early.incident_id is None:
                    early.release()  # ended without an incident (healthy, refused, an error)
                _LEASE.reset(leased)
                _FLAGS.reset(flags)
                _OPENED.reset(token)

        return flow(name=name, log_prints=True)(body)

    return decorate


@dataclass(kw_only=True)
class IncidentRun:
    runbook: catalogue.Runbook
    resource: str
    settings: Settings
    store: JournaledStore
    incident_id: str
    requester: str | None
    findings: list[Finding]
    causes: list[str]
    flow_run_id: str | None
    comms: IncidentComms
    phase: str = "after detection"
    ended: bool = False
    executed: list[ActionResult] = field(default_factory=list)
    lease: Lease | None = None

    @classmethod
    def open(
        cls,
        runbook_id: str,
        *,
        resource: str,
        findings: list[Finding],
        impact: str,
        settings: Settings,
        requester: str | None = None,
    ) -> IncidentRun:
        """Record the incident as detected and declare it."""
        if _DETECT_ONLY.get():
            raise Detected(runbook_id, resource=resource, findings=list(findings))
        runbook = catalogue.get(runbook_id)
        early = _LEASE.get()
        if early is not None and early.incident_id is None and early.lost_now():
            # Declared lost while detecting: its flow run is Crashed and the alert's claim freed
            # for a new run; this execution opens nothing and tells nobody.
            raise ExecutorLost(
                "this run's lease was declared lost while it detected (another run takes the"
                " incident over): it stops without opening an incident"
            )
        store = JournaledStore.for_run(settings)
        flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
        incident = store.open_incident(
            runbook=runbook.id,
            severity=runbook.severity,
            resource=resource,
            title=runbook.component,
            flow_run_id=flow_run_id,
            requested_by=requester,
        )
        monitoring.tag_incident(runbook=runbook.id, incident_id=incident.id, settings=settings)
        run = cls(
            runbook=runbook,
            resource=resource,
            settings=settings,
            store=store,
            incident_id=incident.id,
            requester=requester,
            findings=list(findings),
            causes=[],
            flow_run_id=flow_run_id,
            comms=IncidentComms.for_incident(
                incident, settings=settings, store=store, silent=_FLAGS.get().dry_run
            ),
        )
        opened = _OPENED.get()
        if opened is not None:
            opened.append(run)  # from here on, a failure is this incident's (`broke`)
        if early is not None and early.incident_id is None:
            early.attach(incident.id)
            run.lease = early
        else:
            run.lease = Lease.take(
                settings,
                incident_id=incident.id,
                flow_run_id=flow_run_id,
                run_count=int(runtime.flow_run.run_count or 0),
            )
        targets = lifecycle.targets_for(runbook.id, runbook.severity, settings)
        run._record(
            "detected",
            detail="; ".join(_failed(findings)),
            findings=findings,
            severity=runbook.severity,
            response_target_minutes=targets.response.total_seconds() / 60,
            resolution_target_minutes=targets.resolution.total_seconds() / 60,
        )
        run.comms.declared(impact=impact, opened_at=incident.opened_at)
        run.phase = "while diagnosing"
        return run

    @staticmethod
    def misconfigured(runbook_id: str, *, findings: list[Finding], problem: str) -> Outcome:
        """The run's own probes do not fit the target (a wrong route, a form sent as JSON): a
        configuration problem to report, not an incident to remediate. Nothing is opened."""
        runbook = catalogue.get(runbook_id)
        get_run_logger().error("%s: %s", runbook.id, problem)
        return Outcome(
            runbook=runbook.id,
            status="failed",
            severity=runbook.severity,
            findings=[*findings, Finding(check="probe-configuration", ok=False, detail=problem)],
            summary=problem,
        )

    @staticmethod
    def healthy(runbook_id: str, *, findings: list[Finding]) -> Outcome:
        """Every check passed: no incident is opened."""
        runbook = catalogue.get(runbook_id)
        return Outcome(
            runbook=runbook.id,
            status="healthy",
            severity=runbook.severity,
            findings=findings,
            verified=True,
            summary="; ".join(f.detail for f in findings),
        )

    @property
    def _card(self) -> slack.IncidentCard:
        return self.comms.card

    def _record(
        self,
        kind: str,
        *,
        detail: str = "",
        actor: str | None = None,
        resource: str | None = None,
        findings: Sequence[Finding] = (),
        **data: object,
    ) -> None:
        if findings:
            data["findings"] = [f.model_dump() for f in findings]
        self.store.record(
            self.incident_id, kind, actor=actor, resource=resource, detail=detail, data=data
        )

    def _notify(self, text: str) -> None:
        self.comms.slack(text)

    # Phases a flow reports.

    def diagnosed(self, diagnosis: Diagnosis) -> None:
        self.causes = list(diagnosis.causes)
        self.findings += diagnosis.evidence
        self._record(
            "diagnosed",
            detail=", ".join(diagnosis.causes) or "no cause found",
            findings=diagnosis.evidence,
            causes=diagnosis.causes,
            suggestions=diagnosis.suggestions,
        )
        self.comms.raise_severity(self.causes)
        self.phase = "while planning"

    def planned(self, plan: Plan) -> None:
        self._record("planned", detail=plan.summary, plan=plan.model_dump(mode="json"))
        _publish_plan(plan, self.incident_id)
        self.phase = "before the approval"

    # Endings.

    def outcome(
        self,
        status: Status,
        *,
        actions: Sequence[ActionResult] = (),
        verified: bool = False,
        summary: str = "",
    ) -> Outcome:
        self.ended = True
        if self.lease is not None:
            self.lease.release()
        if not self.store.flush():
            get_run_logger().warning(
                "the incident store is unreachable: %d timeline entries of incident %s are kept"
                " in %s and written there once it is back",
                self.store.spooled,
                self.incident_id,
                self.store.spool,
            )
            summary += (
                f" (the incident store was unreachable: {self.store.spooled} timeline entries are"
                f" kept in {self.store.spool} until it is back)"
            )
        return Outcome(
            runbook=self.runbook.id,
            status=status,
            severity=self.comms.severity,
            incident_id=self.incident_id,
            flow_run_id=self.flow_run_id,
            findings=self.findings,
            causes=self.causes,
            actions=list(actions),
            verified=verified,
            summary=summary,
            timeline_spooled=self.store.spooled,
        )

    def broke(self, exc: Exception) -> Outcome:
        """The run raised after opening its incident: record it and hand it to a person now."""
        monitoring.capture_exception(exc)
        error = _first_line(exc)
        get_run_logger().error("the run broke %s: %s", self.phase, error)
        done = "; ".join(f"{a.name}: {len(a.targets)} target(s)" for a in self.executed)
        changed = f"done before it broke: {done}" if self.executed else "nothing was changed"
        self._record("run-broke", detail=f"{self.phase}: {error}", phase=self.phase)
        return self.escalate(
            f"the run broke {self.phase} ({error}); {changed}",
            status="failed",
            actions=self.executed,
        )

    def dry_run(self, plan: Plan) -> Outcome:
        self._record("dry-run", detail="dry run: the plan was not carried out")
        self.store.close_incident(self.incident_id, status="planned")
        self.comms.ended("planned", causes=self.causes)
        return self.outcome("planned", actions=_not_executed(plan), summary=plan.summary)

    def escalate(
        self,
        reason: str,
        *,
        status: Status = "escalated",
        actions: Sequence[ActionResult] = (),
        verified: bool = False,
    ) -> Outcome:
        self._record("escalated", detail=reason, level="L1", reason=reason)
        self.store.set_incident_status(self.incident_id, status=status)
        if status == "failed":
            monitoring.capture_message(f"{self.runbook.id} failed: {reason}")
        self.comms.ended(
            status, causes=self.causes, needs_person=reason, evidence=_failed(self.findings)
        )
        return self.outcome(status, actions=actions, verified=verified, summary=reason)

    def resolve(
        self, *, resolution: str, actions: Sequence[ActionResult], prevention: str
    ) -> Outcome:
        self._record("resolved", detail=resolution)
        self.store.close_incident(self.incident_id, status="resolved")
        duration = self.store.now() - (self._opened_at())
        self._notify(
            slack.resolved(
                self._card,
                resolution=resolution,
                impact=f"{duration.total_seconds() / 60:.1f} min from detection to verified fix",
                root_cause=", ".join(self.causes) or "not determined",
                prevention=prevention,
            )
        )
        self.comms.ended("resolved", causes=self.causes, resolution=resolution)
        return self.outcome("resolved", actions=actions, verified=True, summary=resolution)

    def _opened_at(self) -> datetime:
        incident = self.store.incident(self.incident_id)
        assert incident is not None
        return incident.opened_at

    def _announce_approval(self, plan: Plan) -> None:
        ui_url = runtime.flow_run.ui_url
        get_run_logger().warning(
            "Waiting for an approval of: %s. Answer with `remediate approve %s` (add --deny to"
            " decline) or in the Prefect UI%s",
            plan.summary,
            self.flow_run_id,
            f": {ui_url}" if ui_url else "",
        )
        text = slack.approval_requested(
            self._card,
            plan=plan,
            flow_run_id=self.flow_run_id or "?",
            ui_url=ui_url,
            timeout_seconds=self.settings.approval_timeout_seconds,
            links=self._approval_links(plan),
        )
        self.comms.slack(text, blocks=self._approval_buttons(plan, text))

    def _approval_buttons(self, plan: Plan, text: str) -> list[dict[str, object]] | None:
        """Approve/Decline buttons, when the Slack app's signing secret is set (the click comes
        back to the receiver's /slack/interactions, signed by Slack)."""
        s = self.settings
        key = s.approval_key
        if not (s.slack_signing_secret and key and self.flow_run_id):
            return None
        value = approval_links.sign(
            key,
            flow_run_id=self.flow_run_id,
            incident_id=self.incident_id,
            summary=plan.summary,
            ttl_seconds=s.approval_timeout_seconds,
            plan_digest=plan_digest(plan),
        )
        return slack.approval_blocks(text, plan=plan, value=value)

    def _approval_links(self, plan: Plan) -> list[tuple[str, str]]:
        """Signed links to answer from chat, one per approver a link can stand for, when the
        receiver's public URL and key are set: (approver or "", link)."""
        s = self.settings
        if not (s.receiver_public_url and s.approval_link_secret and self.flow_run_id):
            return []
        return [
            (
                who,
                approval_links.approval_link(
                    s.receiver_public_url,
                    s.approval_link_secret,
                    flow_run_id=self.flow_run_id,
                    incident_id=self.incident_id,
                    summary=plan.summary,
                    ttl_seconds=s.approval_timeout_seconds,
                    plan_digest=plan_digest(plan),
                    approver=who,
                ),
            )
            for who in approval_links.link_approvers(s.approvers)
        ]

    # The shared choreography of a destructive remediation.

    def carry_out(
        self,
        plan: Plan,
        *,
        auto_approve: bool,
        recheck: Recheck,
        act: Act,
        verify: Verify,
        prevention: str,
    ) -> Outcome:
        """Envelope, approval, lock, re-check, act, verify; returns the run's outcome."""
        policy = safety.SafetyPolicy.from_settings(self.settings)
        approval_policy = ApprovalPolicy.from_settings(self.settings)
        auto_approve = self._auto_approve_allowed(plan, auto_approve)
        automatic = auto_approve or auto_approval_rule(approval_policy, plan) is not None
        screened = self._screen(plan, policy=policy, automatic=automatic)
        if isinstance(screened, Outcome):
            return screened
        plan = screened

        decision = self._await_decision(
            plan, approval_policy=approval_policy, auto_approve=auto_approve
        )
        if isinstance(decision, Outcome):
            return decision

        return self._act_under_lock(
            plan,
            policy=policy,
            decision=decision,
            recheck=recheck,
            act=act,
            verify=verify,
            prevention=prevention,
        )

    def _auto_approve_allowed(self, plan: Plan, auto_approve: bool) -> bool:
        """Whether `auto_approve` still stands for this plan; every refusal of it is recorded."""
        if _FLAGS.get().auto_approve_ignored:
            self._record(
                "auto-approve-ignored",
                detail="auto_approve=true came as a parameter of a run created through the"
                " Prefect API: that is not an approval (only AUTO_APPROVE rules and `remediate"
                " run --auto-approve` are); a person is asked",
            )
        if auto_approve and plan.manual_only:
            self._record(
                "auto-approve-refused",
                detail="--auto-approve does not cover this plan; a person is asked: "
                + "; ".join(plan.manual_only)[:500],
            )
            auto_approve = False
        return auto_approve

    def _screen(
        self, plan: Plan, *, policy: safety.SafetyPolicy, automatic: bool
    ) -> Plan | Outcome:
        """The safety envelope before the approval: the run's outcome when it refuses the plan,
        otherwise the plan to ask about (with a notice of recent actions on the same objects)."""
        try:
            refused = safety.refusal(plan, policy=policy, store=self.store, automatic=automatic)
            recent = [] if automatic else self._recent_actions(plan, policy=policy)
        except StoreUnavailable as exc:
            return self._store_down(exc, plan)
        if refused:
            return self.escalate(f"not attempted: {refused}", actions=_not_executed(plan))
        if recent:  # only asked for when a person approves
            plan = plan.model_copy(
                update={
                    "notices": [
                        f"{len(recent)} action(s) already ran on"
                        f" {', '.join(safety.changed_objects(plan))} in the last"
                        f" {policy.budget_window_seconds // 60} min, the latest at"
                        f" {recent[0]:%Y-%m-%d %H:%M:%S %Z}: is this incident coming back?"
                    ]
                }
            )
        return plan

    def _recent_actions(self, plan: Plan, *, policy: safety.SafetyPolicy) -> list[datetime]:
        """When actions last ran on the objects `plan` changes (within the budget window),
        newest first."""
        return sorted(
            (
                at
                for resource in safety.changed_objects(plan)
                for at in self.store.executed_actions(
                    resource,
                    within_seconds=policy.budget_window_seconds,
                    automatic_only=False,
                )
            ),
            reverse=True,
        )

    def _await_decision(
        self, plan: Plan, *, approval_policy: ApprovalPolicy, auto_approve: bool
    ) -> Decision | Outcome:
        """The approval of `plan`, or the run's outcome when it is not approved."""
        try:
            decision = request_approval(
                plan=plan,
                incident_id=self.incident_id,
                requester=self.requester,
                policy=approval_policy,
                store=self.store,
                auto_approve=auto_approve,
                announce=lambda: self._announce_approval(plan),
                flow_run_id=self.flow_run_id,
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the Prefect server gone for good
            # Waiting for the answer broke (Prefect's client retries ride out a short outage):
            # nothing was changed, and the incident is handed to a person now, not left silent.
            return self.escalate(
                f"the approval could not be awaited ({_first_line(exc)}); nothing was changed",
                status="failed",
                actions=_not_executed(plan),
            )
        if decision.status == "declined":
            return self.escalate(
                f"plan declined by {decision.approver}; nothing was changed",
                status="declined",
                actions=_not_executed(plan),
            )
        if decision.status == "timed-out":
            return self.escalate(
                f"no approval within {self.settings.approval_timeout_seconds} s;"
                " nothing was changed",
                status="timed-out",
                actions=_not_executed(plan),
            )
        return decision

    def _act_under_lock(
        self,
        plan: Plan,
        *,
        policy: safety.SafetyPolicy,
        decision: Decision,
        recheck: Recheck,
        act: Act,
        verify: Verify,
        prevention: str,
    ) -> Outcome:
        """The approved plan, carried out holding the lock on the objects it changes."""
        try:
            with safety.guard(
                safety.changed_objects(plan), policy=policy, store=self.store
            ) as locked:
                return self._act_and_verify(
                    plan,
                    locked=locked,
                    policy=policy,
                    approver=decision.approver,
                    automatic=decision.auto,
                    recheck=recheck,
                    act=act,
                    verify=verify,
                    prevention=prevention,
                )
        except LockTimeout as exc:
            return self.escalate(f"not attempted: {exc}", actions=_not_executed(plan))
        except StoreUnavailable as exc:
            if self.executed:
                raise  # after an action: the run's wrapper reports what was done (`broke`)
            return self._store_down(exc, plan)

    def _step_gate(
        self, policy: safety.SafetyPolicy, halted: list[str], locked: Callable[[], bool]
    ) -> str | None:
        try:
            why = safety.kill_switch_refusal(policy, store=self.store)
        except StoreUnavailable as exc:
            why = f"the incident store is unreachable ({exc}), so the kill switch cannot be read"
        if why is None and not locked():
            why = "the connection holding the resource lock dropped, so the lock is gone"
        if why is not None:
            halted.append(why)
            self._record("step-refused", detail=why)
        return why

    def _stand_down(self, plan: Plan) -> Outcome | None:
        """Right before acting: an execution whose lease was declared lost (its incident already
        escalated by the check that declared it, its flow run marked Crashed) does not act."""
        why = self.lease.confirm() if self.lease is not None else None
        if why is None:
            return None
        self._record("stood-down", detail=f"not acting: {why}")
        return self.outcome(
            "escalated", actions=_not_executed(plan), summary=f"not attempted: {why}"
        )

    def _store_down(self, exc: StoreUnavailable, plan: Plan) -> Outcome:
        """Fail closed: the kill switch, the budget and the lock cannot be checked."""
        return self.escalate(
            f"not attempted: {exc}; the kill switch, the action budget and the resource lock"
            " live there, so nothing was changed",
            status="failed",
            actions=_not_executed(plan),
        )

    def _act_and_verify(
        self,
        plan: Plan,
        *,
        locked: Callable[[], bool],
        policy: safety.SafetyPolicy,
        approver: str | None,
        automatic: bool,
        recheck: Recheck,
        act: Act,
        verify: Verify,
        prevention: str,
    ) -> Outcome:
        current = self._recheck(plan, recheck)
        if isinstance(current, Outcome):
            return current
        actions: list[ActionResult] = []
        if not current.empty:
            acted = self._act(
                plan,
                current,
                locked=locked,
                policy=policy,
                approver=approver,
                automatic=automatic,
                act=act,
            )
            if isinstance(acted, Outcome):
                return acted
            actions = acted
        return self._verify(actions, verify=verify, prevention=prevention)

    def _recheck(self, plan: Plan, recheck: Recheck) -> Plan | Outcome:
        """The approved plan as it stands now (recorded), or the run's outcome when it no longer
        holds."""
        self.phase = "while re-checking the approved plan"
        try:
            current = recheck(plan)  # the world may have moved while the approver read the plan
        except Exception as exc:  # noqa: BLE001 - a plan that no longer holds is not carried out
            return self.escalate(f"the plan no longer holds: {exc}", actions=_not_executed(plan))
        dropped = sorted(
            {t for a in plan.actions for t in a.targets}
            - {t for a in current.actions for t in a.targets}
        )
        self._record(
            "rechecked",
            detail=f"{len(dropped)} planned target(s) no longer eligible",
            dropped=dropped,
        )
        return current

    def _act(
        self,
        plan: Plan,
        current: Plan,
        *,
        locked: Callable[[], bool],
        policy: safety.SafetyPolicy,
        approver: str | None,
        automatic: bool,
        act: Act,
    ) -> list[ActionResult] | Outcome:
        """Carry out the re-checked plan: its results, or the run's outcome when it was refused,
        stood down, failed or was stopped in the middle."""
        refused = safety.refusal(current, policy=policy, store=self.store, automatic=automatic)
        if refused:
            return self.escalate(f"not attempted: {refused}", actions=_not_executed(plan))
        stand_down = self._stand_down(plan)
        if stand_down is not None:
            return stand_down
        self.phase = "while acting"
        halted: list[str] = []
        actions = self._run_steps(
            plan, current, policy=policy, halted=halted, locked=locked, act=act
        )
        if isinstance(actions, Outcome):
            return actions
        self.executed = [a for a in actions if a.executed]
        self._record_actions(current, actions, approver=approver, automatic=automatic)

        if halted:
            done = "; ".join(f"{a.name}: {len(a.targets)} target(s)" for a in self.executed)
            return self.escalate(
                f"stopped in the middle of the plan: {halted[0]}; done: {done or 'nothing'};"
                " the remaining steps were not run",
                actions=actions,
            )
        return actions

    def _run_steps(
        self,
        plan: Plan,
        current: Plan,
        *,
        policy: safety.SafetyPolicy,
        halted: list[str],
        locked: Callable[[], bool],
        act: Act,
    ) -> list[ActionResult] | Outcome:
        """The runbook's `act`, with the step gate set (why a step is refused goes to `halted`);
        a failure escalates while the gate is still set."""
        gate = _STEP_GATE.set(lambda: self._step_gate(policy, halted, locked))
        try:
            return act(current)
        except Exception as exc:  # noqa: BLE001 - a failed action escalates with its reason
            self._record("action-failed", detail=_first_line(exc))
            return self.escalate(
                f"action failed: {_first_line(exc)}",
                status="failed",
                actions=_not_executed(plan),
            )
        finally:
            _STEP_GATE.reset(gate)

    def _record_actions(
        self,
        current: Plan,
        actions: list[ActionResult],
        *,
        approver: str | None,
        automatic: bool,
    ) -> None:
        # Each action is recorded on the object it changed: the key of budgets and cooldowns.
        changed = {a.name: a.resource for a in current.actions if a.destructive}
        for result in actions:
            result.approved_by = approver
            if not result.executed:
                self._record("skipped", actor=approver, detail=f"{result.name}: {result.detail}")
                continue
            self._record(
                "acted",
                actor=approver,
                resource=changed.get(result.name, self.resource),
                detail=f"{result.name}: {len(result.targets)} target(s)",
                action=result.model_dump(),
                automatic=automatic,
            )

    def _verify(self, actions: list[ActionResult], *, verify: Verify, prevention: str) -> Outcome:
        """Verify the fix: resolved when every check passes, escalated otherwise."""
        self.phase = "while verifying"
        checks = verify()
        self.findings += checks
        ok = all(c.ok for c in checks)
        self._record(
            "verified" if ok else "verification-failed",
            detail="; ".join(c.detail for c in checks),
            findings=checks,
        )
        if not ok:
            return self.escalate(
                "verification failed: " + "; ".join(_failed(checks)), actions=actions
            )
        resolution = (
            "; ".join(f"{a.name}: {len(a.targets)} target(s)" for a in actions)
            if actions
            else "nothing left to change after re-check (already remediated)"
        )
        return self.resolve(resolution=resolution, actions=actions, prevention=prevention)


def _not_executed(plan: Plan) -> list[ActionResult]:
    return [
        ActionResult(name=a.name, destructive=a.destructive, executed=False, targets=a.targets)
        for a in plan.actions
    ]


def _publish_plan(plan: Plan, incident_id: str) -> None:
    """The plan as a Prefect artifact, so the UI shows it beside the run."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            key=f"plan-{plan.runbook}",
            markdown=plan.to_markdown(),
            description=f"Plan of incident {incident_id}",
        )
    except Exception as exc:  # noqa: BLE001 - an artifact is a convenience, never a reason to stop
        log.warning("could not publish the plan artifact: %s", exc)
