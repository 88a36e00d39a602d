"""The whole runbook on a real Prefect server and a real PostgreSQL, approvals answered for real.

Each test opens sessions in a sandbox database, runs the flow (in a thread, as the server would),
answers the approval through Prefect's resume API from the test's thread, and asserts on which
sessions still exist and on the incident's timeline in the store.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import sql

from remediate.flows.connection_pool_exhausted import connection_pool_exhausted
from tests.conftest import PG_ADMIN_URL, db_url
from tests.e2e.conftest import answer, kinds, paused_run, start
from tests.support.sessions import Herd, pids_alive, wait_idle
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_approved_run_terminates_exactly_the_planned_sessions(
    incident_world: IncidentWorld,
) -> None:
    w = incident_world
    future = start(**w.params, requested_by="oncall")
    run_id = paused_run(w.database)
    assert pids_alive(w.idle) == w.idle, "nothing may change before the approval"
    answer(run_id, approve=True, approver="alice", note="pool is full")

    outcome = future.result(timeout=60)
    assert outcome.status == "resolved" and outcome.verified
    assert outcome.flow_run_id == run_id
    (action,) = outcome.actions
    assert action.executed and action.approved_by == "alice"
    assert {int(t.split()[1]) for t in action.targets} == w.idle
    assert pids_alive(w.idle) == set()
    assert pids_alive(w.survivors) == w.survivors

    events = w.store.timeline(outcome.incident_id)
    assert [e.kind for e in events] == [
        "detected",
        "diagnosed",
        "planned",
        "approval-asked",
        "approval-answered",
        "rechecked",
        "acted",
        "verified",
        "resolved",
        "post-mortem",  # a P1: the draft is written once the run ends
    ]
    answered = events[4]
    assert answered.actor == "alice"
    assert {k: answered.data[k] for k in ("approve", "note", "channel", "verified")} == {
        "approve": True,
        "note": "pool is full",
        "channel": "cli",
        "verified": False,  # `remediate approve --as` names, it does not prove
    }
    assert answered.data["plan_digest"] == events[3].data["plan_digest"]
    incident = w.store.incident(outcome.incident_id)
    assert incident.status == "resolved" and incident.closed_at is not None


def test_declined_run_changes_nothing(incident_world: IncidentWorld) -> None:
    w = incident_world
    future = start(**w.params)
    answer(paused_run(w.database), approve=False, approver="bob", note="not now")
    outcome = future.result(timeout=60)
    assert outcome.status == "declined" and not outcome.actions[0].executed
    assert pids_alive(w.idle) == w.idle
    assert pids_alive(w.survivors) == w.survivors
    assert kinds(w.store, outcome.incident_id)[-3:] == [
        "approval-answered",
        "escalated",
        "post-mortem",
    ]


def test_timed_out_approval_escalates_and_changes_nothing(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = incident_world
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "3")
    outcome = start(**w.params).result(timeout=60)
    assert outcome.status == "timed-out" and outcome.exit_code == 1
    assert pids_alive(w.idle) == w.idle
    assert kinds(w.store, outcome.incident_id)[-3:] == [
        "approval-timed-out",
        "escalated",
        "post-mortem",
    ]


def test_dry_run_plans_and_changes_nothing(incident_world: IncidentWorld) -> None:
    w = incident_world
    outcome = connection_pool_exhausted(**w.params, dry_run=True)
    assert outcome.status == "planned" and outcome.exit_code == 1
    assert {int(t.split()[1]) for t in outcome.actions[0].targets} == w.idle
    assert not outcome.actions[0].executed
    assert pids_alive(w.idle) == w.idle
    assert "acted" not in kinds(w.store, outcome.incident_id)


def test_refused_answers_are_recorded_and_a_listed_approver_decides(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = incident_world
    monkeypatch.setenv("APPROVERS", "alice,bob")
    monkeypatch.setenv("APPROVAL_REQUIRE_DISTINCT_APPROVER", "true")
    future = start(**w.params, requested_by="alice")
    answer(paused_run(w.database), approve=True, approver="mallory")
    time.sleep(1.5)
    answer(paused_run(w.database), approve=True, approver="alice")  # the requester herself
    time.sleep(1.5)
    assert pids_alive(w.idle) == w.idle
    answer(paused_run(w.database), approve=True, approver="bob")
    outcome = future.result(timeout=60)
    assert outcome.status == "resolved" and outcome.actions[0].approved_by == "bob"
    events = w.store.timeline(outcome.incident_id)
    refused = [(e.actor, e.detail) for e in events if e.kind == "approval-refused"]
    assert refused == [
        ("mallory", "mallory is not on the approver list"),
        ("alice", "alice requested this run and may not approve it"),
    ]
    assert pids_alive(w.idle) == set()


def test_auto_approve_policy_from_configuration(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = incident_world
    monkeypatch.setenv("REMEDIATION_ENVIRONMENT", "staging")
    monkeypatch.setenv("AUTO_APPROVE", "connection-pool-exhausted:terminate-idle-sessions:staging")
    outcome = connection_pool_exhausted(**w.params)
    assert outcome.status == "resolved"
    assert outcome.actions[0].approved_by == "auto-approve"
    assert pids_alive(w.idle) == set()


def test_policy_for_another_environment_does_not_auto_approve(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = incident_world
    monkeypatch.setenv("AUTO_APPROVE", "connection-pool-exhausted:*:staging")
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    outcome = connection_pool_exhausted(**w.params)  # environment is production
    assert outcome.status == "timed-out"
    assert pids_alive(w.idle) == w.idle


def test_two_concurrent_runs_remediate_once(incident_world: IncidentWorld) -> None:
    w = incident_world
    futures = [start(**w.params, auto_approve=True) for _ in range(2)]
    outcomes = [f.result(timeout=90) for f in futures]
    assert {o.status for o in outcomes} == {"resolved"}, [o.summary for o in outcomes]
    executed = [a for o in outcomes for a in o.actions if a.executed]
    assert len(executed) == 1
    assert {int(t.split()[1]) for t in executed[0].targets} == w.idle
    acted = [k for o in outcomes for k in kinds(w.store, o.incident_id) if k == "acted"]
    assert acted == ["acted"]
    assert pids_alive(w.survivors) == w.survivors


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("REMEDIATION_KILL_SWITCH", "true", "kill switch"),
        ("REMEDIATION_MAX_BLAST_RADIUS", "3", "blast-radius cap"),
    ],
)
def test_safety_envelope_refuses_before_asking(
    incident_world: IncidentWorld,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    value: str,
    reason: str,
) -> None:
    w = incident_world
    monkeypatch.setenv(setting, value)
    outcome = connection_pool_exhausted(**w.params, auto_approve=True)
    assert outcome.status == "escalated" and reason in outcome.summary
    assert pids_alive(w.idle) == w.idle
    assert "approval-asked" not in kinds(w.store, outcome.incident_id)


def test_budget_and_cooldown_stop_a_remediation_loop(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch, herd: Herd
) -> None:
    w = incident_world
    monkeypatch.setenv("REMEDIATION_BUDGET_MAX", "1")
    first = connection_pool_exhausted(**w.params, auto_approve=True)
    assert first.status == "resolved"

    again = herd.idle(db_url(w.database), 20)  # the incident comes back
    wait_idle(again)
    second = connection_pool_exhausted(**w.params, auto_approve=True)
    assert second.status == "escalated" and "budget" in second.summary
    assert pids_alive(again) == again

    monkeypatch.setenv("REMEDIATION_BUDGET_MAX", "10")
    monkeypatch.setenv("REMEDIATION_COOLDOWN_SECONDS", "600")
    third = connection_pool_exhausted(**w.params, auto_approve=True)
    assert third.status == "escalated" and "cooldown" in third.summary
    assert pids_alive(again) == again


def test_healthy_target_opens_no_incident(env: dict[str, str], sandbox: str) -> None:
    outcome = connection_pool_exhausted(usage_threshold=0.99, database=sandbox)
    assert outcome.status == "healthy" and outcome.incident_id is None and outcome.exit_code == 0


def test_a_server_refusing_the_runner_escalates_instead_of_failing(
    env: dict[str, str], sandbox: str, herd: Herd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every slot the runner's role may use is taken: an incident, escalated, not a crash."""
    role = f"rt_full_{sandbox[-6:]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 1").format(sql.Identifier(role))
        )
    try:
        url = db_url(sandbox).replace("postgres@", f"{role}@")
        herd.idle(url, 1)
        monkeypatch.setenv("TARGET_DATABASE_URL", url)
        outcome = connection_pool_exhausted(auto_approve=True)
        assert outcome.status == "escalated"
        assert "too many connections" in outcome.findings[0].detail
        assert "reserved slots" in outcome.summary
        assert outcome.incident_id is not None
    finally:
        herd.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_person_may_act_inside_the_cooldown_and_is_warned(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch, herd: Herd
) -> None:
    w = incident_world
    monkeypatch.setenv("REMEDIATION_COOLDOWN_SECONDS", "600")
    assert connection_pool_exhausted(**w.params, auto_approve=True).status == "resolved"

    again = herd.idle(db_url(w.database), 20)
    wait_idle(again)
    assert connection_pool_exhausted(**w.params, auto_approve=True).status == "escalated"
    future = start(**w.params)
    answer(paused_run(w.database), approve=True, approver="dana")
    outcome = future.result(timeout=60)
    assert outcome.status == "resolved" and pids_alive(again) == set()
    asked = next(e for e in w.store.timeline(outcome.incident_id) if e.kind == "approval-asked")
    assert "1 action(s) already ran" in asked.data["plan"]["notices"][0]
