"""Fault: the incident store (the product's own PostgreSQL) goes down in the middle of a run.

The store is a real PostgreSQL server in a container of the local engine; stopping the container
mid-run is the outage. Before an action the run fails closed (the kill switch, budget and lock
live in the store); after one, the run finishes and keeps its record on disk. Either way nothing
is lost: once the store is back, the record is written there, in order, with its times.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from pydantic import SecretStr

from remediate.store.database import Store
from tests.e2e.conftest import (
    DOCKER_HOST,
    answer,
    paused_run_where,
    postgres_container,
    start,
    wait_reachable,
)
from tests.support.httpcapture import CaptureServer
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")
CANARY = "store-password-canary-3e9a"
REMEDIATE = str(Path(sys.executable).with_name("remediate"))


@dataclass(frozen=True)
class StoreDownWorld(IncidentWorld):
    """The world, with its store in a container a test stops."""

    container: Any  # the store's PostgreSQL server
    url: str  # the store's URL
    spool: Path  # where the runs keep their record while the store is down
    slack: CaptureServer


@pytest.fixture
def store_down(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[StoreDownWorld]:
    """The world's incident, with the store in a container and Slack listening."""
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    container, url = postgres_container(
        engine, password=CANARY, project=f"rt-{uuid.uuid4().hex[:8]}", service="store"
    )
    url = url.rsplit("/", 1)[0] + "/remediate"  # made by the product, as on a first start
    slack = CaptureServer()
    spool = tmp_path / "spool"
    monkeypatch.setenv("REMEDIATION_DATABASE_URL", url)
    monkeypatch.setenv("REMEDIATION_SPOOL_DIR", str(spool))
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/T0/B0/x")
    Store.open(SecretStr(url))  # the schema, while it is up
    yield StoreDownWorld(
        **vars(incident_world), container=container, url=url, spool=spool, slack=slack
    )
    slack.close()
    container.remove(force=True)
    engine.close()


def back_up(w: StoreDownWorld) -> Store:
    w.container.start()
    wait_reachable(w.url, w.container)
    return Store(SecretStr(w.url))


def remediate(w: StoreDownWorld, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REMEDIATION_DATABASE_URL": w.url,
        "REMEDIATION_SPOOL_DIR": str(w.spool),
    }
    return subprocess.run(
        [REMEDIATE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def spooled(w: StoreDownWorld) -> list[Path]:
    return sorted(w.spool.glob("*.jsonl"))


def test_store_down_while_the_approval_waits_changes_nothing_and_keeps_the_record(
    store_down: StoreDownWorld,
) -> None:
    w = store_down
    from remediate.flows.connection_pool_exhausted import connection_pool_exhausted

    future = start(flow=connection_pool_exhausted, **w.params, requested_by="fault-store-down")
    run_id = paused_run_where("requested_by", "fault-store-down")
    w.container.stop(timeout=10)
    answer(run_id, approve=True, approver="ana")
    outcome = future.result(timeout=120)

    # Fail closed: the lock, budget and kill switch could not be checked, so nothing ran.
    assert outcome.status == "failed", outcome.summary
    assert outcome.summary.startswith("not attempted: the incident store is unreachable")
    assert "nothing was changed" in outcome.summary
    assert not any(a.executed for a in outcome.actions)
    assert pids_alive(w.idle) == w.idle
    assert pids_alive(w.survivors) == w.survivors
    # A person is told at once, store or not.
    assert any("ESCALATED" in t and "unreachable" in t for t in _texts(w)), _texts(w)
    # The record is on disk, private, and holds no secret.
    assert outcome.timeline_spooled > 0
    [path] = spooled(w)
    assert path.name == f"{outcome.incident_id}.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert CANARY not in path.read_text() and CANARY not in outcome.model_dump_json()

    # Once the store is back, the first look at it writes the record, in order.
    back_up(w)
    shown = remediate(w, "incident", outcome.incident_id or "", "--json")
    assert shown.returncode == 0, shown.stderr
    incident = json.loads(shown.stdout)
    kinds = [e["kind"] for e in incident["timeline"]]
    assert kinds[:3] == ["detected", "diagnosed", "planned"]
    assert kinds.index("approval-answered") < kinds.index("escalated")
    assert "acted" not in kinds
    assert incident["status"] == "failed"
    assert spooled(w) == []


def test_store_down_before_the_run_still_reports_the_incident_and_changes_nothing(
    store_down: StoreDownWorld,
) -> None:
    """An alert's run starts while the store is down: the incident is detected, declared and
    handed to a person; nothing is changed; the incident itself appears in the store later."""
    w = store_down
    from remediate.flows.connection_pool_exhausted import connection_pool_exhausted

    w.container.stop(timeout=10)
    outcome = connection_pool_exhausted(**w.params, auto_approve=True)

    assert outcome.status == "failed", outcome.summary
    assert "the incident store is unreachable" in outcome.summary
    assert not any(a.executed for a in outcome.actions)
    assert pids_alive(w.idle) == w.idle
    texts = _texts(w)
    assert texts[0].startswith("🚨 INCIDENT") and any("ESCALATED" in t for t in texts), texts

    store = back_up(w)
    shown = remediate(w, "incidents", "--json")
    assert shown.returncode == 0, shown.stderr
    [listed] = json.loads(shown.stdout)
    assert listed["id"] == outcome.incident_id and listed["status"] == "failed"
    kinds = [e.kind for e in store.timeline(listed["id"])]
    assert kinds[:3] == ["detected", "diagnosed", "planned"] and "escalated" in kinds
    assert "acted" not in kinds


def test_store_down_during_the_fix_finishes_it_and_writes_the_record_when_back(
    store_down: StoreDownWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store dies after the lock was taken, as the sessions are terminated: the fix goes
    on, is verified and reported; the `acted` event and the rest wait on disk for the store."""
    w = store_down
    from remediate.flows.connection_pool_exhausted import connection_pool_exhausted
    from remediate.tasks import postgres

    real = postgres.terminate_idle_sessions

    def store_dies_then_terminate(*args: Any, **kwargs: Any) -> Any:
        w.container.stop(timeout=10)
        return real(*args, **kwargs)

    monkeypatch.setattr(postgres, "terminate_idle_sessions", store_dies_then_terminate)
    outcome = connection_pool_exhausted(**w.params, auto_approve=True)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.verified
    assert "the incident store was unreachable" in outcome.summary
    assert pids_alive(w.idle) == set()
    assert pids_alive(w.survivors) == w.survivors
    assert any(t.startswith("✅ INCIDENT RESOLVED") for t in _texts(w)), _texts(w)
    assert outcome.timeline_spooled > 0 and len(spooled(w)) == 1

    # The watchdog (as `remediate serve` runs it) writes the record once the store is back.
    store = back_up(w)
    from remediate.flows.incident_watchdog import incident_watchdog

    report = incident_watchdog()
    assert report.replayed_entries == outcome.timeline_spooled
    assert spooled(w) == []
    incident = store.incident(outcome.incident_id or "")
    assert incident is not None and incident.status == "resolved"
    assert incident.closed_at is not None
    events = store.timeline(incident.id)
    kinds = [e.kind for e in events]
    assert kinds.index("acted") < kinds.index("verified") < kinds.index("resolved")
    [acted] = [e for e in events if e.kind == "acted"]
    assert len(acted.data["action"]["targets"]) == len(w.idle)
    assert [e.at for e in events] == sorted(e.at for e in events)  # the times they happened


def _texts(w: StoreDownWorld) -> list[str]:
    import time

    time.sleep(0.5)  # deliveries run on the notifier's threads
    return [json.loads(r.body).get("text", "") for r in w.slack.received]
