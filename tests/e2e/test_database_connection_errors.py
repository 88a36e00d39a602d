"""database-connection-errors with a real PostgreSQL server in a container of the local engine.

The server runs this machine's own PostgreSQL binaries (mounted read-only) in the test image;
stopping its container reproduces seed 000's "could not connect to server".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import psycopg
import pytest

from remediate.drills.sandbox import reachable
from remediate.flows.database_connection_errors import database_connection_errors
from tests.e2e.conftest import (
    DOCKER_HOST,
    answer,
    paused_run,
    postgres_container,
    start,
    wait_reachable,
)

pytestmark = pytest.mark.usefixtures("prefect_server")
CANARY = "db-password-canary-51f2"


@dataclass(frozen=True)
class TargetDatabase:
    """The guarded PostgreSQL server, in a container."""

    container: Any
    url: str
    port: int


@pytest.fixture
def db(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TargetDatabase]:
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    project = f"rt-{uuid.uuid4().hex[:8]}"
    container, url = postgres_container(engine, password=CANARY, project=project)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)")
    for name, value in {
        "TARGET_DATABASE_URL": url,
        "DOCKER_HOST": DOCKER_HOST,
        "COMPOSE_PROJECT_NAME": project,
    }.items():
        monkeypatch.setenv(name, value)
    container.reload()
    yield TargetDatabase(
        container=container, url=url, port=int(url.rsplit(":", 1)[1].split("/")[0])
    )
    container.remove(force=True)
    engine.close()


def test_running_database_is_healthy(db: TargetDatabase) -> None:
    outcome = database_connection_errors()
    assert outcome.status == "healthy" and outcome.incident_id is None


def test_stopped_database_container_is_restarted_after_approval(db: TargetDatabase) -> None:
    db.container.stop(timeout=10)
    assert not reachable(db.url)

    future = start(flow=database_connection_errors, database="postgres")
    answer(paused_run("postgres"), approve=True, approver="jo")
    outcome = future.result(timeout=120)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.causes == ["database-container-stopped"]
    checks = {f.check: f for f in outcome.findings}
    assert "exited" in checks["database-container"].detail
    assert checks["connection-settings"].detail == (
        f"host 127.0.0.1, port {db.port}, database postgres, user postgres"
    )
    assert any(f.check == "database-log" for f in outcome.findings)
    db.container.reload()
    assert db.container.status == "running"
    with psycopg.connect(db.url) as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]
    assert CANARY not in outcome.model_dump_json()


def test_dry_run_and_declined_leave_it_stopped(db: TargetDatabase) -> None:
    db.container.stop(timeout=10)
    assert database_connection_errors(dry_run=True).status == "planned"
    future = start(flow=database_connection_errors, database="postgres")
    answer(paused_run("postgres"), approve=False, approver="kim")
    assert future.result(timeout=60).status == "declined"
    db.container.reload()
    assert db.container.status == "exited" and not reachable(db.url)


def test_running_container_with_wrong_settings_is_escalated_not_restarted(
    db: TargetDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = db.container.attrs["State"]["StartedAt"]
    monkeypatch.setenv("TARGET_DATABASE_URL", db.url.replace(str(db.port), "1"))
    outcome = database_connection_errors(auto_approve=True)
    assert outcome.status == "escalated"
    assert outcome.causes == ["database-up-but-unreachable"]
    assert "check the connection settings (host 127.0.0.1, port 1," in outcome.summary
    db.container.reload()
    assert db.container.attrs["State"]["StartedAt"] == started
    assert CANARY not in json.dumps(outcome.model_dump())


def test_target_down_while_the_approval_waits_changes_nothing_and_escalates(
    db: TargetDatabase,
) -> None:
    """Fault: the guarded PostgreSQL dies between the plan and the approval. The approved plan is
    re-read, no longer holds, and nothing is half-done; the incident escalates with the reason."""
    from remediate.drills.runner import threshold_below
    from remediate.flows.connection_pool_exhausted import connection_pool_exhausted
    from tests.e2e.conftest import kinds

    url = db.url
    idle = [psycopg.connect(url, autocommit=True, application_name="app-pool") for _ in range(20)]
    try:
        threshold = threshold_below(20, admin_url=url)
        future = start(
            flow=connection_pool_exhausted,
            usage_threshold=threshold,
            idle_minutes=0,
            database="postgres",
            requested_by="fault-target-down",
        )
        from tests.e2e.conftest import paused_run_where

        run_id = paused_run_where("requested_by", "fault-target-down")
        db.container.stop(timeout=10)
        answer(run_id, approve=True, approver="ana")
        outcome = future.result(timeout=120)
    finally:
        for conn in idle:
            conn.close()
    assert outcome.status == "escalated"
    assert "the plan no longer holds" in outcome.summary
    assert not any(a.executed for a in outcome.actions)
    from remediate.domain.settings import load_settings
    from remediate.store.database import Store

    store = Store.open(load_settings().remediation_database_url)
    events = kinds(store, outcome.incident_id)
    assert "acted" not in events and "escalated" in events
    db.container.start()
    wait_reachable(url, db.container)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]


@dataclass(frozen=True)
class ExhaustedDatabase(TargetDatabase):
    params: dict[str, Any]  # connection-pool-exhausted's, auto-approved


@pytest.fixture
def exhausted(db: TargetDatabase) -> Iterator[ExhaustedDatabase]:
    """20 idle application sessions on the container's server, over the runbook's threshold."""
    from remediate.drills.runner import threshold_below

    idle = [
        psycopg.connect(db.url, autocommit=True, application_name="app-pool") for _ in range(20)
    ]
    yield ExhaustedDatabase(
        **vars(db),
        params={
            "usage_threshold": threshold_below(20, admin_url=db.url),
            "idle_minutes": 0,
            "database": "postgres",
            "auto_approve": True,
        },
    )
    for conn in idle:
        conn.close()


def stop_then(container: Any, fn: Any, *, before: bool) -> Any:
    """`fn`, with the container stopped just before it runs or just after it returned."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            container.stop(timeout=10)
            return fn(*args, **kwargs)
        result = fn(*args, **kwargs)
        container.stop(timeout=10)
        return result

    return wrapped


def incident_events(incident_id: str | None) -> list[Any]:
    from remediate.domain.settings import load_settings
    from remediate.store.database import Store

    assert incident_id
    return Store.open(load_settings().remediation_database_url).timeline(incident_id)


def test_target_down_during_diagnosis_changes_nothing_and_escalates(
    exhausted: ExhaustedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: the guarded PostgreSQL dies after detection, while the run diagnoses, with the fix
    auto-approved. The plan is re-read before acting, no longer holds, and nothing is half-done."""
    from remediate.flows import connection_pool_exhausted as module

    monkeypatch.setattr(
        module, "diagnose", stop_then(exhausted.container, module.diagnose, before=True)
    )
    outcome = module.connection_pool_exhausted(**exhausted.params)

    assert outcome.status == "escalated", outcome.summary
    assert "the plan no longer holds" in outcome.summary
    assert not any(a.executed for a in outcome.actions)
    events = [e.kind for e in incident_events(outcome.incident_id)]
    assert "acted" not in events and "escalated" in events
    assert CANARY not in outcome.model_dump_json()


def test_target_down_after_the_fix_fails_the_run_loudly_with_what_was_done(
    exhausted: ExhaustedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: the server dies right after the idle sessions were terminated, so verification
    cannot connect. The run does not crash with its incident open and silent: it ends `failed`,
    names the phase and what it had already done, and the incident is escalated at once."""
    from remediate.domain.settings import load_settings
    from remediate.store.database import Store
    from remediate.tasks import postgres

    monkeypatch.setattr(
        postgres,
        "terminate_idle_sessions",
        stop_then(exhausted.container, postgres.terminate_idle_sessions, before=False),
    )
    from remediate.flows.connection_pool_exhausted import connection_pool_exhausted

    outcome = connection_pool_exhausted(**exhausted.params)

    assert outcome.status == "failed", outcome.summary
    assert outcome.summary.startswith("the run broke while verifying (")
    assert "done before it broke: terminate-idle-sessions: 20 target(s)" in outcome.summary
    [done] = [a for a in outcome.actions if a.executed]
    assert len(done.targets) == 20
    events = incident_events(outcome.incident_id)
    kinds_ = [e.kind for e in events]
    assert kinds_.index("acted") < kinds_.index("run-broke") < kinds_.index("escalated")
    store = Store.open(load_settings().remediation_database_url)
    incident = store.incident(outcome.incident_id or "")
    assert incident is not None and incident.status == "failed"
    assert CANARY not in outcome.model_dump_json()
    assert not [e for e in events if CANARY in e.model_dump_json()]
