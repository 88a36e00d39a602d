"""The incident store and the safety envelope on the real PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
import zlib
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from remediate.domain.models import Plan, PlannedAction
from remediate.engine import safety
from remediate.store.database import LockTimeout, Store, StoreUnavailable
from tests.conftest import create_database, db_url, drop_database


@pytest.fixture
def store(store_url: str) -> Store:
    return Store.open(SecretStr(store_url))


def plan(resource: str, targets: int = 2) -> Plan:
    return Plan(
        runbook="connection-pool-exhausted",
        resource=resource,
        summary="s",
        actions=[
            PlannedAction(
                name="terminate-idle-sessions",
                destructive=True,
                resource=resource,
                description="d",
                targets=[f"pid {i}" for i in range(targets)],
            )
        ],
    )


def test_a_spooled_record_the_store_cannot_take_is_set_aside_not_replayed_for_ever(
    store: Store, tmp_path: Path
) -> None:
    """A spool file naming an incident this store never held (the store was replaced, or
    restored from an older backup) used to fail every replay: the watchdog crashed each minute
    and `remediate incidents` with it. It is moved aside; the other files are written."""
    from remediate.domain.settings import Settings
    from remediate.engine.journal import UNPLAYABLE, replay_spool

    known = store.open_incident(runbook="rate-limiter", severity="P2", resource="r", title="t")
    spool = tmp_path / "spool"
    spool.mkdir()
    at = "2026-12-04T10:00:00+00:00"
    stray = "5da7aae4-a48b-449a-b701-705cfaffd8c6"
    (spool / f"{stray}.jsonl").write_text(
        json.dumps({"op": "event", "incident_id": stray, "kind": "acted", "at": at}) + "\n"
    )
    (spool / f"{known.id}.jsonl").write_text(
        json.dumps({"op": "event", "incident_id": known.id, "kind": "verified", "at": at}) + "\n"
    )
    settings = Settings(remediation_spool_dir=spool)  # type: ignore[call-arg]
    assert replay_spool(settings, store=store) == 1
    assert [e.kind for e in store.timeline(known.id)][-1] == "verified"
    assert not list(spool.glob("*.jsonl"))
    (kept,) = (spool / UNPLAYABLE).glob(f"{stray}.*.jsonl")  # kept for a person
    assert "acted" in kept.read_text()
    assert replay_spool(settings, store=store) == 0


def test_store_creates_its_database_and_schema_once() -> None:
    name = f"rt_fresh_{time.monotonic_ns() % 10**8}"
    url = SecretStr(db_url(name))
    try:
        store = Store.open(url)
        incident = store.open_incident(
            runbook="connection-pool-exhausted",
            severity="P1",
            resource="postgres://h:5432/app",
            title="t",
        )
        store.record(incident.id, "detected", detail="x", data={"n": 1})
        store.close()
        with psycopg.connect(db_url(name)) as conn:
            tables = {
                r[0]
                for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            }
            (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert {
            "incidents",
            "incident_events",
            "snapshots",
            "controls",
            "alerts",
            "approval_links_used",
            "postmortems",
            "alembic_version",
        } <= tables
        assert version == "0005"  # head
    finally:
        drop_database(name)


def test_an_older_store_is_brought_to_head_on_first_use() -> None:
    """A store left at the first schema by an older version keeps its incidents and gains the
    new tables the first time this version opens it."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from remediate.store import database as store_module

    name = create_database("rt_old")
    url = db_url(name)
    try:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as connection:
            config = Config()
            config.set_main_option("script_location", str(store_module.MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.commit()
        engine.dispose()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO incidents (id, runbook, severity, status, resource, title)"
                " VALUES (gen_random_uuid(), 'rate-limiter', 'P2', 'open', 'redis://r', 't')"
            )
        store = Store.open(SecretStr(url))
        [kept] = store.incidents()
        assert kept.runbook == "rate-limiter"
        store.save_postmortem(kept.id, "# draft")
        assert store.postmortem(kept.id) == "# draft"
        store.close()
        with psycopg.connect(url) as conn:
            (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert version == "0005"
    finally:
        drop_database(name)


def test_unreachable_store_is_one_clear_line() -> None:
    with pytest.raises(StoreUnavailable) as excinfo:
        Store.open(SecretStr("postgresql://postgres:canary-pw@127.0.0.1:1/remediate"))
    message = str(excinfo.value)
    assert message.startswith(
        "REMEDIATION_DATABASE_URL (postgresql://postgres@127.0.0.1:1/remediate)"
    )
    assert "canary-pw" not in message and "\n" not in message


def test_timeline_keeps_order_and_snapshots_return_latest(store: Store) -> None:
    incident = store.open_incident(runbook="r", severity="P2", resource="res", title="t")
    for kind in ("detected", "planned", "resolved"):
        store.record(incident.id, kind)
    assert [e.kind for e in store.timeline(incident.id)] == ["detected", "planned", "resolved"]
    store.save_snapshot("policies", "res-snap", {"v": 1})
    store.save_snapshot("policies", "res-snap", {"v": 2})
    assert store.latest_snapshot("policies", "res-snap") == {"v": 2}
    assert store.latest_snapshot("policies", "nothing") is None


def test_resource_lock_excludes_across_connections(store: Store, store_url: str) -> None:
    other = Store.open(SecretStr(store_url))
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.resource_lock("postgres://h:5432/locked", timeout=1):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(5)
    with pytest.raises(LockTimeout), other.resource_lock("postgres://h:5432/locked", timeout=0.3):
        pass
    with other.resource_lock("postgres://h:5432/another", timeout=0.3):
        pass  # other resources are free
    release.set()
    thread.join()
    with other.resource_lock("postgres://h:5432/locked", timeout=1):
        pass


def test_envelope_refusals(store: Store) -> None:
    resource = f"postgres://h:5432/env-{time.monotonic_ns()}"
    policy = safety.SafetyPolicy(cooldown_seconds=0, budget_max=2, max_blast_radius=5)
    assert safety.refusal(plan(resource), policy=policy, store=store) is None
    assert "blast-radius" in safety.refusal(plan(resource, 6), policy=policy, store=store)
    assert "kill switch" in safety.refusal(
        plan(resource), policy=safety.SafetyPolicy(kill_switch=True), store=store
    )

    incident = store.open_incident(runbook="r", severity="P1", resource=resource, title="t")
    store.record(incident.id, "acted", resource=resource, data={"automatic": True})
    assert "cooldown" in safety.refusal(
        plan(resource), policy=safety.SafetyPolicy(cooldown_seconds=60, budget_max=9), store=store
    )
    store.record(incident.id, "acted", resource=resource, data={"automatic": True})
    assert "budget" in safety.refusal(plan(resource), policy=policy, store=store)
    # A person approving with the plan in front of them is not held back by budget or cooldown.
    assert safety.refusal(plan(resource), policy=policy, store=store, automatic=False) is None
    assert len(store.executed_actions(resource, within_seconds=60, automatic_only=False)) == 2


def test_kill_switch_in_the_store(store: Store) -> None:
    try:
        store.set_kill_switch(True, by="tester")
        assert "kill switch" in safety.refusal(plan("r"), policy=safety.SafetyPolicy(), store=store)
    finally:
        store.set_kill_switch(False, by="tester")
    assert store.kill_switch() is False


def restart_plan(runbook: str, incident_resource: str, container: str) -> Plan:
    return Plan(
        runbook=runbook,
        resource=incident_resource,
        summary="restart the backend",
        actions=[
            PlannedAction(
                name="restart-backend",
                destructive=True,
                resource=container,
                description="d",
                targets=["container app-backend-1"],
            )
        ],
    )


def test_two_runbooks_changing_one_container_share_its_lock_and_budget(
    store: Store, store_url: str
) -> None:
    """api-500-errors (incident on the API URL) and app-not-starting (incident on the compose
    project) both restart the backend: one lock, one cooldown, one budget for that container."""
    backend = f"compose://app-{time.monotonic_ns()}/backend"
    api = restart_plan("api-500-errors", "http://api.example:8000", backend)
    compose = restart_plan("app-not-starting", "compose://app", backend)
    assert safety.changed_objects(api) == safety.changed_objects(compose) == [backend]
    policy = safety.SafetyPolicy(cooldown_seconds=3600, budget_max=5, lock_timeout_seconds=0.3)
    other = Store.open(SecretStr(store_url))
    with safety.guard(safety.changed_objects(api), policy=policy, store=store) as held:
        assert held()
        with (
            pytest.raises(LockTimeout),
            safety.guard(safety.changed_objects(compose), policy=policy, store=other),
        ):
            pass
    incident = store.open_incident(
        runbook="api-500-errors", severity="P2", resource="http://api.example:8000", title="t"
    )
    store.record(incident.id, "acted", resource=backend, data={"automatic": True})
    why = safety.refusal(compose, policy=policy, store=store)
    assert why is not None and "cooldown" in why and backend in why


def test_a_lock_whose_connection_dropped_is_seen_as_lost(store: Store, store_url: str) -> None:
    resource = f"postgres://h:5432/drop-{time.monotonic_ns()}"
    with store.resource_lock(resource, timeout=1) as held:
        assert held()
        with psycopg.connect(store_url, autocommit=True) as admin:
            key = zlib.crc32(f"remediate:{resource}".encode())  # this lock's key only
            [(killed,)] = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype ="
                " 'advisory' AND classid = 0 AND objid = %s::bigint::oid AND objsubid = 1",
                (key,),
            ).fetchall()
        assert killed == 1
        assert not held(), "a run must not go on acting without its lock"
