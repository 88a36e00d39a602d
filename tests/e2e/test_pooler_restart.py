"""connection-pool-exhausted with a pooler service on the real container engine (seed 002 §2).

The pooler is a compose-labelled container leaking sessions idle in a transaction, which the
session step may not touch: only its restart releases them, and only when the plan says so.
"""

from __future__ import annotations

from typing import Any

import pytest

from remediate.drills.runner import threshold_below
from remediate.flows.connection_pool_exhausted import RESTART, connection_pool_exhausted
from tests.conftest import PG_ADMIN_URL
from tests.e2e.conftest import answer, paused_run, pooler_sessions, start
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_pooler_is_restarted_when_terminating_idle_sessions_is_not_enough(
    incident_world: IncidentWorld, pooler: Any
) -> None:
    w = incident_world
    leaked = pooler_sessions(w.database, "idle in transaction")
    started = pooler.attrs["State"]["StartedAt"]
    # Over the threshold even once the 20 idle sessions are gone; under it once the leak is too.
    params = {
        **w.params,
        "usage_threshold": threshold_below(40 + 16, admin_url=PG_ADMIN_URL),
        "pooler_stop_timeout_seconds": 1,
    }
    future = start(**params)
    run_id = paused_run(w.database)
    assert pids_alive(leaked) == leaked
    answer(run_id, approve=True, approver="erin")
    outcome = future.result(timeout=90)

    assert outcome.status == "resolved", outcome.summary
    by_name = {a.name: a for a in outcome.actions}
    assert by_name["terminate-idle-sessions"].executed
    assert by_name[RESTART].executed and by_name[RESTART].targets == [f"container {pooler.name}"]
    pooler.reload()
    assert pooler.status == "running" and pooler.attrs["State"]["StartedAt"] != started
    assert pids_alive(leaked) == set()
    assert pids_alive(w.survivors) == w.survivors


def test_pooler_is_left_alone_when_terminating_is_enough(
    incident_world: IncidentWorld, pooler: Any
) -> None:
    w = incident_world
    leaked = pooler_sessions(w.database, "idle in transaction")
    started = pooler.attrs["State"]["StartedAt"]
    params = {**w.params, "usage_threshold": threshold_below(20, admin_url=PG_ADMIN_URL)}
    outcome = connection_pool_exhausted(**params, auto_approve=True)
    assert outcome.status == "resolved"
    assert [a.name for a in outcome.actions] == ["terminate-idle-sessions"]
    assert any(f.check == "pooler" and f.ok for f in outcome.findings)
    pooler.reload()
    assert pooler.attrs["State"]["StartedAt"] == started
    assert pids_alive(leaked) == leaked


def test_dry_run_plans_the_restart_and_restarts_nothing(
    incident_world: IncidentWorld, pooler: Any
) -> None:
    w = incident_world
    leaked = pooler_sessions(w.database, "idle in transaction")
    started = pooler.attrs["State"]["StartedAt"]
    params = {**w.params, "usage_threshold": threshold_below(40 + 16, admin_url=PG_ADMIN_URL)}
    outcome = connection_pool_exhausted(**params, dry_run=True)
    assert outcome.status == "planned"
    assert [a.name for a in outcome.actions] == ["terminate-idle-sessions", RESTART]
    assert not any(a.executed for a in outcome.actions)
    pooler.reload()
    assert pooler.attrs["State"]["StartedAt"] == started
    assert pids_alive(leaked) == leaked
    assert pids_alive(w.idle) == w.idle


def test_unreachable_engine_is_evidence_not_a_crash(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = incident_world
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine.sock")
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "app")
    monkeypatch.setenv("POOLER_SERVICE", "pgbouncer")
    outcome = connection_pool_exhausted(**w.params, auto_approve=True)
    assert outcome.status == "resolved"
    (finding,) = [f for f in outcome.findings if f.check == "pooler"]
    assert not finding.ok and finding.detail.startswith("DOCKER_HOST (unix:///nonexistent")


def test_the_kill_switch_turned_on_between_two_steps_stops_the_second(
    incident_world: IncidentWorld, pooler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person runs `remediate kill-switch on` while the sessions are being terminated: the
    pooler restart, the plan's next step, does not run, and the run escalates saying what was
    done. The switch is read before every step, not once per plan."""
    from remediate.tasks import postgres

    w = incident_world
    store = w.store
    started = pooler.attrs["State"]["StartedAt"]
    params = {
        **w.params,
        "usage_threshold": threshold_below(40 + 16, admin_url=PG_ADMIN_URL),
        "pooler_stop_timeout_seconds": 1,
    }
    real = postgres.terminate_idle_sessions

    def terminate_then_switch_off(*args: Any, **kwargs: Any) -> Any:
        done = real(*args, **kwargs)
        store.set_kill_switch(True, by="on-call, mid-plan")
        return done

    monkeypatch.setattr(postgres, "terminate_idle_sessions", terminate_then_switch_off)
    try:
        outcome = connection_pool_exhausted(**params, auto_approve=True)
    finally:
        store.set_kill_switch(False, by="test")
    assert outcome.status == "escalated", outcome.summary
    assert "kill switch" in outcome.summary and "terminate-idle-sessions" in outcome.summary
    by_name = {a.name: a for a in outcome.actions}
    assert by_name["terminate-idle-sessions"].executed
    assert not by_name[RESTART].executed
    pooler.reload()
    assert pooler.attrs["State"]["StartedAt"] == started, "the pooler was restarted"
    assert pids_alive(w.idle) == set()
    kinds = [e.kind for e in store.timeline(outcome.incident_id)]
    assert "step-refused" in kinds and "verified" not in kinds
