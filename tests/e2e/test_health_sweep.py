"""health-sweep against real databases: read-only, snapshots while healthy, one run per finding."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from core.store import Store
from flows.health_sweep import health_sweep
from flows.rls_auth_failure import SNAPSHOT
from tests import supabase
from tests.conftest import PG_ADMIN_URL, db_url
from tests.e2e.conftest import runs_for

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
