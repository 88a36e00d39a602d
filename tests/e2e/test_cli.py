"""`remediate` as a user runs it: real processes, the contract's exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import paused_run
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")
REMEDIATE = str(Path(sys.executable).with_name("remediate"))


def remediate(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REMEDIATE, *args], capture_output=True, text=True, timeout=timeout)


def run_args(w: IncidentWorld, *extra: str) -> list[str]:
    p = w.params
    return [
        "run",
        "connection-pool-exhausted",
        "--set",
        f"usage_threshold={p['usage_threshold']}",
        "--set",
        "idle_minutes=0",
        "--set",
        f"database={p['database']}",
        *extra,
    ]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


def test_list_names_every_runbook() -> None:
    result = remediate("list")
    assert result.returncode == 0
    from remediate.engine.catalogue import CATALOGUE

    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [[r.id, r.severity] for r in CATALOGUE.values()]


def test_auto_approved_run_prints_the_outcome_json(incident_world: IncidentWorld) -> None:
    w = incident_world
    result = remediate(*run_args(w, "--auto-approve", "--json"))
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert outcome["status"] == "resolved" and outcome["verified"] is True
    assert outcome["actions"][0]["approved_by"] == "auto-approve"
    assert {int(t.split()[1]) for t in outcome["actions"][0]["targets"]} == w.idle
    assert pids_alive(w.idle) == set()
    assert pids_alive(w.survivors) == w.survivors


@pytest.mark.parametrize(
    ("flag", "status", "code"), [([], "resolved", 0), (["--deny"], "declined", 1)]
)
def test_run_waits_for_remediate_approve_from_another_terminal(
    incident_world: IncidentWorld,
    flag: list[str],
    status: str,
    code: int,
) -> None:
    w = incident_world
    waiting = subprocess.Popen(
        [REMEDIATE, *run_args(w, "--json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_id = paused_run(w.database, timeout=60)
    time.sleep(0.5)
    assert pids_alive(w.idle) == w.idle
    answered = remediate("approve", run_id, "--as", "carol", "--note", "checked", *flag)
    assert answered.returncode == 0, answered.stderr
    stdout, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == code, stderr
    assert f"remediate approve {run_id}" in stderr
    outcome = json.loads(stdout)
    assert outcome["status"] == status
    assert pids_alive(w.idle) == (set() if status == "resolved" else w.idle)

    again = remediate("approve", run_id)
    assert_one_line_error(again, 1, "is not waiting for an approval")


def test_dry_run_exits_1_and_changes_nothing(incident_world: IncidentWorld) -> None:
    w = incident_world
    result = remediate(*run_args(w, "--dry-run", "--json"))
    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "planned"
    assert pids_alive(w.idle) == w.idle


@pytest.mark.parametrize(
    ("args", "env_value", "message"),
    [
        (["run", "no-such-runbook"], None, "unknown runbook 'no-such-runbook'"),
        (
            ["run", "connection-pool-exhausted", "--set", "colour=blue"],
            None,
            "--set colour: not a parameter of connection-pool-exhausted",
        ),
        (
            ["run", "connection-pool-exhausted", "--set", "usage_threshold=lots"],
            None,
            "bad parameter for connection-pool-exhausted",
        ),
        (
            ["run", "connection-pool-exhausted"],
            "mysql://u:pw@h/db",
            "TARGET_DATABASE_URL must be a postgresql:// URL",
        ),
        (
            ["run", "connection-pool-exhausted"],
            "postgresql://u:secret-canary@127.0.0.1:1/app",
            "TARGET_DATABASE_URL (postgres://127.0.0.1:1/app)",
        ),
        (["approve", "not-a-uuid"], None, "'not-a-uuid' is not a flow run id"),
        (["run", "tables-missing-after-migration"], None, "ALEMBIC_CONFIG is not set"),
    ],
)
def test_bad_usage_and_configuration_exit_2_with_one_line(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env_value: str | None,
    message: str,
) -> None:
    if env_value:
        monkeypatch.setenv("TARGET_DATABASE_URL", env_value)
    result = remediate(*args)
    assert_one_line_error(result, 2, message)
    assert "secret-canary" not in result.stderr + result.stdout


def test_unreachable_store_exits_2(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMEDIATION_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/remediate")
    assert_one_line_error(
        remediate("run", "connection-pool-exhausted"),
        2,
        "REMEDIATION_DATABASE_URL (postgresql://postgres@127.0.0.1:1/remediate)",
    )


def test_check_migrations(tmp_path: Path) -> None:
    assert remediate("check-migrations").returncode == 0
    assert remediate("check-migrations", str(ROOT / "migrations" / "versions")).returncode == 0
    bad = tmp_path / "0002_bad.py"
    bad.write_text("from alembic import op\ndef upgrade():\n    op.drop_table('user')\n")
    result = remediate("check-migrations", str(ROOT / "migrations" / "versions"), str(tmp_path))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == f"{bad}:1: no downgrade() function", lines
    assert len(lines) == 2 and lines[1].startswith(f"{bad}:3: ") and "user" in lines[1], lines


def test_kill_switch_and_incidents_commands(incident_world: IncidentWorld) -> None:
    w = incident_world
    try:
        assert "ON" in remediate("kill-switch", "on").stdout
        blocked = remediate(*run_args(w, "--auto-approve", "--json"))
        assert blocked.returncode == 1 and "kill switch" in json.loads(blocked.stdout)["summary"]
        assert pids_alive(w.idle) == w.idle
    finally:
        assert "off" in remediate("kill-switch", "off").stdout
    incident_id = json.loads(blocked.stdout)["incident_id"]
    listed = json.loads(remediate("incidents", "--open", "--json").stdout)
    assert incident_id in {i["id"] for i in listed}
    shown = json.loads(remediate("incident", incident_id, "--json").stdout)
    assert [e["kind"] for e in shown["timeline"]][-2:] == ["escalated", "post-mortem"]


@pytest.mark.parametrize("client_retries", ["default", "none"])
def test_a_prefect_server_restart_while_the_approval_waits_loses_nothing(
    incident_world: IncidentWorld, tmp_path: Path, client_retries: str
) -> None:
    """Fault: the Prefect server restarts while `remediate run` waits for an approval. The run
    keeps waiting through the outage, the answer given afterwards counts, and the fix goes on.

    Prefect's client retries ride out a restart: the answer given afterwards counts and the fix
    goes on. With them off (as for an outage longer than they last) the wait breaks: nothing is
    changed and the incident escalates at once; it never stays open and silent."""
    import os

    import httpx

    from remediate.engine.prefect_api import start_server, wait_healthy
    from tests.conftest import create_database, db_url, drop_database
    from tests.support.ports import free_port
    from tests.support.sessions import pids_alive

    w = incident_world
    port, name = free_port(), create_database("rt_prefect_restart")
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path)}
    run_env = {**env, "PREFECT_CLIENT_MAX_RETRIES": "0"} if client_retries == "none" else env

    def server() -> Any:
        process = start_server(
            port=port, log_path=tmp_path / "server.log", database_url=db_url(name), ui=False
        )
        assert wait_healthy(api, timeout=120, process=process), (
            tmp_path / "server.log"
        ).read_text()
        return process

    prefect = server()
    # This test's own Prefect server holds connections to the same PostgreSQL: the threshold
    # is taken with them open (halfway between now and once the idle sessions are gone).
    from remediate.drills.runner import threshold_below

    w.params["usage_threshold"] = threshold_below(len(w.idle))
    run = None
    try:
        run = subprocess.Popen(
            [REMEDIATE, *run_args(w, "--json")],
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            paused = httpx.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}},
            ).json()
            if paused:
                run_id = paused[0]["id"]
                break
            assert time.monotonic() < deadline and run.poll() is None, "the run did not pause"
            time.sleep(0.3)
        prefect.terminate()
        prefect.wait(timeout=30)
        time.sleep(3)  # the run polls a server that is not there
        prefect = server()
        subprocess.run(
            [REMEDIATE, "approve", run_id, "--as", "alice"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out, err = run.communicate(timeout=120)
        incident = w.store.incident_for_flow_run(run_id)
        assert incident is not None
        events = [e.kind for e in w.store.timeline(incident.id)]
        if client_retries == "default":
            assert run.returncode == 0, err[-3000:]
            assert json.loads(out)["status"] == "resolved"
            assert pids_alive(w.idle) == set()
            assert events.count("approval-answered") == 1 and "acted" in events
        else:
            assert incident.status == "failed" and "escalated" in events, events
            assert "acted" not in events
            assert pids_alive(w.idle) == w.idle
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        prefect.terminate()
        prefect.wait(timeout=30)
        drop_database(name)
