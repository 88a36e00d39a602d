"""health-sweep against real databases: read-only, snapshots while healthy, one run per finding."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from pydantic import SecretStr

from remediate.flows.connection_pool_exhausted import connection_pool_exhausted
from remediate.flows.health_sweep import health_sweep
from remediate.flows.rls_auth_failure import SNAPSHOT
from remediate.store.database import Store
from tests.conftest import PG_ADMIN_URL, db_url
from tests.e2e.conftest import runs_for
from tests.support import supabase

pytestmark = pytest.mark.usefixtures("prefect_server")
REMEDIATE = str(Path(sys.executable).with_name("remediate"))
RLS = {"rls-auth-failure": {"probe_user_id": supabase.ALICE}}


@pytest.fixture
def school(receiver_env: dict[str, str], sandbox: str) -> Iterator[str]:
    with supabase.supabase_roles(PG_ADMIN_URL):
        supabase.build(db_url(sandbox))
        yield sandbox


def policy_names(database: str) -> list[str]:
    with psycopg.connect(db_url(database)) as conn:
        return [r[0] for r in conn.execute("SELECT policyname FROM pg_policies ORDER BY 1")]


def test_sweep_snapshots_while_healthy_then_starts_the_runbook_once(
    school: str, receiver_env: dict[str, str], deployment_ids: dict[str, uuid.UUID]
) -> None:
    store = Store.open(SecretStr(receiver_env["REMEDIATION_DATABASE_URL"]))
    resource = f"postgres://127.0.0.1:5432/{school}"
    assert store.latest_snapshot(SNAPSHOT, resource) is None

    healthy = health_sweep(
        runbooks=["rls-auth-failure", "connection-pool-exhausted"], parameters=RLS
    )
    assert [(c.runbook, c.status) for c in healthy.checks] == [
        ("rls-auth-failure", "healthy"),
        ("connection-pool-exhausted", "healthy"),
    ]
    assert store.latest_snapshot(SNAPSHOT, resource) is not None  # the known-good state

    with psycopg.connect(db_url(school), autocommit=True) as conn:
        conn.execute("DROP POLICY auth_policy_select ON users")
    before = policy_names(school)
    opened = len(store.incidents(limit=1000))

    found = health_sweep(runbooks=["rls-auth-failure"], parameters=RLS)
    [check] = found.checks
    assert check.status == "finding" and "auth_policy_select" in check.detail
    assert check.started and check.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(check.flow_run_id))
    assert run.deployment_id == deployment_ids["rls-auth-failure"]
    assert run.parameters == {"probe_user_id": supabase.ALICE, "requested_by": "alert:sweep"}
    # Read-only: nothing was changed, and the sweep itself opened no incident.
    assert policy_names(school) == before
    assert len(store.incidents(limit=1000)) == opened

    # The next sweep (here through the CLI) finds it again but starts nothing new.
    result = subprocess.run(
        [REMEDIATE, "sweep", "--json"], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    [rls] = [c for c in report["checks"] if c["runbook"] == "rls-auth-failure"]
    assert rls["status"] == "finding"
    assert rls["started"] is False and rls["flow_run_id"] == check.flow_run_id
    assert report["status"] == "findings"


def test_sweep_covers_every_configured_database(
    receiver_env: dict[str, str],
    make_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    deployment_ids: dict[str, uuid.UUID],
) -> None:
    extra = [make_database(), make_database()]
    monkeypatch.setenv("SWEEP_DATABASES", ",".join(extra))
    gone = f"rt_gone_{uuid.uuid4().hex[:6]}"
    report = health_sweep(
        runbooks=["connection-pool-exhausted", "database-connection-errors", "rate-limiter"],
        databases=[gone],
    )
    by_target: dict[tuple[str, Any], str] = {
        (c.runbook, c.parameters.get("database")): c.status for c in report.checks
    }
    for database in [None, *extra]:
        assert by_target[("connection-pool-exhausted", database)] == "healthy"
        assert by_target[("database-connection-errors", database)] == "healthy"
    # A database that does not exist is a finding of database-connection-errors, and its run
    # is started; rate-limiter has no Redis configured and is skipped with the reason.
    assert by_target[("database-connection-errors", gone)] == "finding"
    assert by_target[("rate-limiter", None)] == "skipped"
    assert [r.parameters["database"] for r in runs_for(deployment_ids, gone)] == [gone]


class HeldConnections:
    """The most connections the product held at once to `databases`, read from pg_stat_activity
    every few milliseconds while the block runs."""

    def __init__(self, databases: list[str]) -> None:
        self.databases = databases
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)"
                    " AND application_name = 'remediate:postgres'",
                    (self.databases,),
                ).fetchone()
                assert row is not None
                self.most = max(self.most, int(row[0]))
                time.sleep(0.002)

    def __enter__(self) -> HeldConnections:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_sweep_of_many_databases_holds_its_connection_bound_and_no_task_run_per_probe(
    receiver_env: dict[str, str],
    make_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue "Past one machine": SWEEP_CONNECTIONS_PER_SERVER bounds the connections a sweep
    holds to the database server however many databases it covers, and the probes of a sweep
    are plain calls, not a Prefect task run each (the old sweep made four or five per check)."""
    databases = [make_database() for _ in range(12)]
    monkeypatch.setenv("SWEEP_CONNECTIONS_PER_SERVER", "1")
    monkeypatch.setenv("SWEEP_CONCURRENCY", "8")
    default = receiver_env["TARGET_DATABASE_URL"].rsplit("/", 1)[1]
    runbooks = ["connection-pool-exhausted", "database-connection-errors", "rls-auth-failure"]
    with HeldConnections([default, *databases]) as held:
        state = health_sweep(
            runbooks=runbooks, databases=databases, start_runs=False, return_state=True
        )
    report = state.result()
    assert len(report.checks) == 3 * 13
    assert {c.status for c in report.checks} == {"healthy"}, report.to_markdown()
    # The bound, and at most one more: a backend whose client has closed stays listed in
    # pg_stat_activity until its process exits.
    assert 1 <= held.most <= 2, held.most
    # The same runbook run as itself records its probes as task runs, as before.
    run = connection_pool_exhausted(database=databases[0], dry_run=True, return_state=True)
    assert run.result().status == "healthy"
    with get_client(sync_client=True) as client:

        def task_runs(flow_run_id: uuid.UUID | None) -> list[str]:
            found = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            return [t.name for t in found]

        assert task_runs(state.state_details.flow_run_id) == []
        assert [n for n in task_runs(run.state_details.flow_run_id) if "read-activity" in n]
