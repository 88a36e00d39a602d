"""The approval gate's pure rules: auto-approve policy matching and refused answers."""

from __future__ import annotations

from remediate.domain.models import Plan, PlannedAction
from remediate.engine.approval import Approval, ApprovalPolicy, auto_approval_rule, refusal_reason


def plan(*actions: tuple[str, bool]) -> Plan:
    return Plan(
        runbook="connection-pool-exhausted",
        resource="postgres://h:5432/app",
        summary="s",
        actions=[
            PlannedAction(name=n, destructive=d, resource="r", description="d", targets=["x"])
            for n, d in actions
        ],
    )


def policy(*rules: str, environment: str = "staging", **kw: object) -> ApprovalPolicy:
    return ApprovalPolicy(environment=environment, auto_rules=rules, **kw)  # type: ignore[arg-type]


def test_rule_must_cover_runbook_action_and_environment() -> None:
    p = plan(("terminate-idle-sessions", True))
    assert auto_approval_rule(
        policy("connection-pool-exhausted:terminate-idle-sessions:staging"), p
    )
    assert auto_approval_rule(policy("*:*:staging"), p) == "*:*:staging"
    assert auto_approval_rule(policy("*:*:staging", environment="production"), p) is None
    assert auto_approval_rule(policy("rate-limiter:*:*"), p) is None
    assert auto_approval_rule(policy("connection-pool-exhausted:restart-pooler:*"), p) is None
    assert auto_approval_rule(policy(), p) is None


def test_every_destructive_action_needs_a_rule() -> None:
    p = plan(("terminate-idle-sessions", True), ("restart-pooler", True), ("report", False))
    assert auto_approval_rule(policy("*:terminate-idle-sessions:*"), p) is None
    assert auto_approval_rule(policy("*:terminate-idle-sessions:*", "*:restart-pooler:*"), p)


def test_refused_answers() -> None:
    open_policy = policy()
    strict = policy(approvers=frozenset({"alice", "bob"}), require_distinct_approver=True)
    assert refusal_reason(Approval(approve=True, approver=""), policy=open_policy, requester=None)
    assert (
        refusal_reason(Approval(approve=True, approver="eve"), policy=open_policy, requester="x")
        is None
    )
    assert refusal_reason(Approval(approve=True, approver="eve"), policy=strict, requester="x") == (
        "eve is not on the approver list"
    )
    assert refusal_reason(
        Approval(approve=True, approver="alice"), policy=strict, requester="alice"
    )
    assert (
        refusal_reason(Approval(approve=False, approver="bob"), policy=strict, requester="alice")
        is None
    )
