"""Pure decisions of connection-pool-exhausted: detection, eligibility, diagnosis, plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from remediate.flows.connection_pool_exhausted import (
    diagnose,
    plan_idle_terminations,
    recheck_plan,
    skip_reason,
    usage_finding,
)
from remediate.tasks.postgres import Activity, Session

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def s(pid: int, **kw: object) -> Session:
    values: dict[str, object] = dict(
        pid=pid,
        backend_start=T0 + timedelta(seconds=pid),
        database="app",
        user="app",
        application="api",
        client="10.0.0.5",
        state="idle",
        backend_type="client backend",
        state_seconds=900.0,
        query_seconds=900.0,
        superuser=False,
        replication=False,
        own=False,
    )
    values.update(kw)
    return Session(**values)  # type: ignore[arg-type]


def activity(*sessions: Session, max_connections: int = 10) -> Activity:
    return Activity(max_connections=max_connections, superuser_reserved=3, sessions=list(sessions))


def eligible(
    session: Session, idle_seconds: float = 600, protected: frozenset[str] = frozenset()
) -> bool:
    return (
        skip_reason(session, database="app", idle_seconds=idle_seconds, protected_roles=protected)
        is None
    )


def test_usage_against_threshold_counts_client_backends_only() -> None:
    a = activity(*(s(i) for i in range(8)), s(99, backend_type="walsender", replication=True))
    assert not usage_finding(a, usage_threshold=0.8).ok
    assert usage_finding(a, usage_threshold=0.81).ok
    assert "8 of 10 connections" in usage_finding(a, usage_threshold=0.8).detail


def test_what_may_never_be_terminated() -> None:
    assert eligible(s(1))
    assert not eligible(s(2, state="active"))
    assert not eligible(s(3, state="idle in transaction"))
    assert not eligible(s(4, database="other"))
    assert not eligible(s(5, own=True))
    assert not eligible(s(6, application="remediate:store"))
    assert not eligible(s(7, backend_type="walsender", replication=True))
    assert not eligible(s(8, superuser=True, application="pg_dump"))
    assert eligible(s(9, superuser=True, application="api"))
    assert not eligible(s(10, user="admin"), protected=frozenset({"admin"}))
    assert not eligible(s(11, state_seconds=30.0))
    assert eligible(s(11, state_seconds=30.0), idle_seconds=0)


def test_diagnosis_names_causes_and_suggests_indexes_for_slow_queries() -> None:
    a = activity(
        s(1),
        s(2),
        s(3, state="idle in transaction"),
        s(4, state="active", query_seconds=42.0, query="SELECT * FROM t WHERE x = '?'"),
    )
    d = diagnose(a, database="app", idle_seconds=600, protected_roles=frozenset())
    assert d.causes == ["idle-sessions", "idle-in-transaction", "slow-queries"]
    assert any("pid 4" in text and "index" in text for text in d.suggestions)
    by_state = next(f for f in d.evidence if f.check == "by-state")
    assert by_state.detail == "idle 2, idle in transaction 1, active 1"


def test_plan_names_each_session_and_recheck_only_narrows() -> None:
    before = activity(s(1), s(2), s(3), s(4, state="active"))
    plan = plan_idle_terminations(
        before,
        resource="postgres://h:5432/app",
        database="app",
        idle_seconds=600,
        protected_roles=frozenset(),
        suggestions=[],
    )
    (action,) = plan.actions
    assert action.destructive and action.targets == ["pid 1", "pid 2", "pid 3"]
    assert "pg_terminate_backend" in plan.to_markdown() and "pid 3" in plan.to_markdown()

    # While the approver read: pid 1 ended, pid 2 turned active, pid 3's pid was reused, pid 5 came.
    after = activity(s(2, state="active"), s(3, backend_start=T0 + timedelta(hours=1)), s(5))
    narrowed = recheck_plan(plan, after, database="app")
    assert narrowed.empty and narrowed.actions[0].targets == []

    still = recheck_plan(plan, activity(s(1), s(2), s(5)), database="app")
    assert still.actions[0].targets == ["pid 1", "pid 2"]  # never pid 5: it was not approved
