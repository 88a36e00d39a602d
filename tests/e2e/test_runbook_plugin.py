"""A runbook written outside the product (`examples/runbook-plugin`, under 100 lines), installed
from its own folder beside the installed wheel, as a user adds one: `remediate list` shows it,
`serve` registers its deployment with a form for its typed parameters (what the Prefect UI
shows), the health sweep finds its incident and starts it, and only a person's approval lets it
act. The world is real: a physical replication slot on the PostgreSQL server keeping WAL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from remediate.store.database import Store
from tests.conftest import PG_ADMIN_URL, ROOT, db_url
from tests.e2e.conftest import Installed, kinds, paused_run_where
from tests.e2e.test_serve import ended_incident, start_serve
from tests.support.worlds import ParamsOnly

pytestmark = pytest.mark.usefixtures("prefect_server")

PLUGIN = ROOT / "examples" / "runbook-plugin"
RUNBOOK = "disk-almost-full"


@pytest.fixture(scope="module")
def with_plugin(installed: Installed) -> Installed:
    """The installed product with the example runbook injected from its folder (`pipx inject`)."""
    root = installed.bin.parent
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pipx")), "inject", "remediate", str(PLUGIN)],
        env={**os.environ, "PIPX_HOME": str(root / "pipx"), "PIPX_BIN_DIR": str(root / "bin")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return installed


@pytest.fixture
def full_slot(sandbox: str) -> Iterator[str]:
    """A physical replication slot nobody reads, keeping a few MB of WAL written after it was
    made (the cluster's: dropped at the end whatever the run did)."""
    name = f"rt_slot_{os.getpid()}_{time.monotonic_ns() % 10**8}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
    try:
        with psycopg.connect(db_url(sandbox), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE wal_filler AS"
                " SELECT g, repeat('x', 400) AS pad FROM generate_series(1, 12000) g"
            )
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (name,),
            )


def slot_exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        row = admin.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,))
        return row.fetchone() is not None


def test_a_plugin_runbook_is_listed_served_swept_and_fixed_after_approval(
    with_plugin: Installed,
    full_slot: str,
    receiver_env: dict[str, str],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    remediate = str(with_plugin.bin / "remediate")
    away = {**os.environ, "PYTHONPATH": "", "APPROVERS": "alice"}
    listed = subprocess.run([remediate, "list"], capture_output=True, text=True, env=away)
    assert listed.returncode == 0 and RUNBOOK in listed.stdout, listed.stdout + listed.stderr

    world = ParamsOnly(params={"usage_threshold": 0.99})
    process, _, log = start_serve(
        world,
        tmp_path,
        auto_approve=False,
        extra_env={"PYTHONPATH": "", "APPROVERS": "alice"},
        command=remediate,
    )
    try:
        with get_client(sync_client=True) as client:  # the deployment and its UI form
            deployment = client.read_deployment_by_name(f"{RUNBOOK}/{RUNBOOK}")
        form = deployment.parameter_openapi_schema["properties"]
        assert {"max_retained_mb", "slot_prefix", "dry_run"} <= set(form)

        sweep = subprocess.run(
            [
                remediate,
                "sweep",
                "--json",
                "--runbook",
                RUNBOOK,
                f"--set={RUNBOOK}.max_retained_mb=1",
                f"--set={RUNBOOK}.slot_prefix={full_slot}",
            ],
            capture_output=True,
            text=True,
            env=away,
            cwd=tmp_path,
            timeout=180,
        )
        assert sweep.returncode == 1, sweep.stdout + sweep.stderr  # a finding
        (check,) = json.loads(sweep.stdout)["checks"]
        assert check["status"] == "finding" and full_slot in check["detail"], check
        run_id = paused_run_where("slot_prefix", full_slot, timeout=120)
        assert run_id == check["flow_run_id"]
        assert slot_exists(full_slot)  # nothing is dropped before a person approves

        approved = subprocess.run(
            [remediate, "approve", run_id, "--as", "alice"],
            capture_output=True,
            text=True,
            env=away,
            timeout=120,
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        store = Store.open(SecretStr(env["REMEDIATION_DATABASE_URL"]))
        incident = ended_incident(store, run_id, log=log)
        assert incident.status == "resolved", log.read_text()[-3000:]
        assert not slot_exists(full_slot)
        assert {"planned", "acted", "verified", "resolved"} <= set(kinds(store, incident.id))
        (acted,) = [e for e in store.timeline(incident.id) if e.kind == "acted"]
        assert acted.actor == "alice"
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in log.read_text()
