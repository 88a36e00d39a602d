"""tasks/postgres.py against the real PostgreSQL: what is read, and what may be terminated."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from remediate.flows.connection_pool_exhausted import plan_idle_terminations, skip_reason
from remediate.tasks import postgres
from remediate.tasks.postgres import PgTarget, TargetUnreachable
from tests.conftest import PG_ADMIN_URL, db_url
from tests.support.sessions import Herd, pids_alive, wait_idle


def target(name: str) -> PgTarget:
    return PgTarget(url=SecretStr(db_url(name)))


@pytest.fixture
def replication_url(sandbox: str) -> str:
    """A role with the REPLICATION attribute (not a walsender): its idle sessions are eligible."""
    role = f"rt_role_{sandbox[-6:]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield db_url(sandbox).replace("postgres@", f"{role}@")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s"),
            (role,),
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_activity_sees_every_kind_of_session(sandbox: str, herd: Herd) -> None:
    url = db_url(sandbox)
    idle = herd.idle(url, 3)
    in_tx = herd.idle_in_transaction(url)
    active = herd.active(url, 2)
    wait_idle(idle | {in_tx})

    activity = postgres.read_activity.fn(target(sandbox))

    mine = {s.pid: s for s in activity.client_sessions if s.database == sandbox}
    assert {p for p, s in mine.items() if s.state == "idle" and s.application == "app-pool"} == idle
    assert mine[in_tx].state == "idle in transaction"
    assert {p for p, s in mine.items() if s.state == "active" and not s.own} == active
    assert sum(s.own for s in activity.sessions) == 1
    assert activity.max_connections >= 10
    assert 0 < activity.usage <= 1


def test_only_plain_idle_sessions_of_the_target_are_planned_and_terminated(
    make_database: Callable[[], str], herd: Herd, replication_url: str
) -> None:
    db, other = make_database(), make_database()
    url = db_url(db)
    idle = herd.idle(url, 5)
    role_idle = herd.idle(replication_url.replace(replication_url.rsplit("/", 1)[1], db), 1)
    protected = herd.idle(url, 1, app="pg_dump")  # superuser maintenance
    console = herd.idle(url, 1, app="psql")  # a DBA at a superuser console
    migrating = herd.idle(url, 1, app="alembic")
    for conn in herd.conns[-1:]:  # a migration tool's session-level lock, held while idle
        conn.execute("SELECT pg_advisory_lock(4242)")
    runner_own = herd.idle(url, 1, app="remediate:store")
    in_tx = {herd.idle_in_transaction(url)}
    active = herd.active(url, 2)
    elsewhere = herd.idle(db_url(other), 3)
    wait_idle(idle | role_idle | protected | console | migrating | runner_own | in_tx | elsewhere)

    activity = postgres.read_activity.fn(target(db))
    plan = plan_idle_terminations(
        activity,
        resource="r",
        database=db,
        idle_seconds=0,
        protected_roles=frozenset(),
        suggestions=[],
    )
    planned = {int(t.split()[1]) for t in plan.actions[0].targets}
    assert planned == idle | role_idle

    # Hand the task every pid, planned or not: its own guards must still spare the rest.
    everyone = {s.pid: s for s in activity.client_sessions}
    spared = protected | console | migrating | runner_own | in_tx | active | elsewhere
    terminated = postgres.terminate_idle_sessions.fn(
        target(db),
        sessions=[(pid, everyone[pid].backend_start) for pid in planned | spared],
        idle_seconds=0,
        protected_roles=[],
    )
    assert set(terminated) == planned
    assert pids_alive(planned) == set()
    assert pids_alive(spared) == spared


def test_a_reused_pid_is_never_terminated(sandbox: str, herd: Herd) -> None:
    """Sessions are named by (pid, backend_start): a stale start time matches nothing."""
    idle = herd.idle(db_url(sandbox), 1)
    wait_idle(idle)
    activity = postgres.read_activity.fn(target(sandbox))
    (session,) = [s for s in activity.client_sessions if s.pid in idle]
    stale = session.backend_start.replace(year=2000)
    assert (
        postgres.terminate_idle_sessions.fn(
            target(sandbox), sessions=[(session.pid, stale)], idle_seconds=0, protected_roles=[]
        )
        == []
    )
    assert pids_alive(idle) == idle


def test_sessions_idle_for_less_than_the_limit_and_protected_roles_stay(
    sandbox: str, herd: Herd
) -> None:
    idle = herd.idle(db_url(sandbox), 2)
    wait_idle(idle)
    activity = postgres.read_activity.fn(target(sandbox))
    sessions = [s for s in activity.client_sessions if s.pid in idle]
    assert all(
        skip_reason(s, database=sandbox, idle_seconds=600, protected_roles=frozenset())
        for s in sessions
    )
    named = [(s.pid, s.backend_start) for s in sessions]
    assert (
        postgres.terminate_idle_sessions.fn(
            target(sandbox), sessions=named, idle_seconds=600, protected_roles=[]
        )
        == []
    )
    assert (
        postgres.terminate_idle_sessions.fn(
            target(sandbox), sessions=named, idle_seconds=0, protected_roles=["postgres"]
        )
        == []
    )
    assert pids_alive(idle) == idle


def test_probe_query_answers_and_an_unreachable_target_is_named(sandbox: str) -> None:
    result = postgres.probe_query.fn(target(sandbox), timeout_seconds=5)
    assert result.ok and result.latency_ms < 5000

    down = PgTarget(url=SecretStr("postgresql://postgres:s3cret-canary@127.0.0.1:1/app"))
    assert not postgres.probe_query.fn(down, timeout_seconds=1).ok
    with pytest.raises(TargetUnreachable) as excinfo:
        postgres.read_activity.fn(down)
    assert "127.0.0.1:1/app" in str(excinfo.value)
    assert "s3cret-canary" not in str(excinfo.value)


def test_the_plans_statement_is_what_runs(sandbox: str, herd: Herd) -> None:
    """The approver reads the statement the task runs: executed as shown, on the real server, it
    terminates exactly the planned sessions and spares the others."""
    url = db_url(sandbox)
    idle = herd.idle(url, 3)
    in_tx = {herd.idle_in_transaction(url)}
    active = herd.active(url, 1)
    wait_idle(idle | in_tx)
    activity = postgres.read_activity.fn(target(sandbox))
    plan = plan_idle_terminations(
        activity,
        resource="r",
        database=sandbox,
        idle_seconds=0,
        protected_roles=frozenset({"nobody"}),
        suggestions=[],
    )
    (shown,) = plan.actions[0].statements
    assert "pg_terminate_backend" in shown and f"'{sandbox}'" in shown
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(shown).fetchall()
    assert {pid for pid, ok in rows if ok} == idle
    deadline = time.monotonic() + 5  # pg_terminate_backend only signals
    while pids_alive(idle) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_alive(idle) == set()
    assert pids_alive(in_tx | active) == in_tx | active
