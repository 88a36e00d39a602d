"""The built wheel is the product: installed with pipx, away from any checkout, with the locked
versions, `remediate serve` creates its store from the schema the wheel carries and fixes an
alert's incident; `--version` and shell completion work."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from remediate.app.worker import runs_under
from tests.conftest import PG_ADMIN_URL, ROOT, db_url
from tests.e2e.conftest import Installed
from tests.e2e.test_serve import post_alert, start_serve
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_the_wheel_carries_what_it_runs(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "remediate/store/_migrations/env.py" in names
    store_revisions = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    carried = {Path(n).name for n in names if n.startswith("remediate/store/_migrations/")}
    assert store_revisions <= carried
    assert "remediate/intake/routes.yaml" in names and "remediate/deployments/serve.py" in names
    assert "remediate/flows/rls_auth_failure.py" in names and "remediate/drills/assets" in {
        str(Path(n).parent.parent) for n in names if n.startswith("remediate/drills/assets/")
    } | {str(Path(n).parent) for n in names if n.startswith("remediate/drills/assets/")}
    # One top-level package in a shared environment: no `core`, `flows`, `tasks`… of ours.
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"remediate"}, top
    version = subprocess.run(
        [str(installed.bin / "remediate"), "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("remediate 0."), version
    completion = subprocess.run(
        [str(installed.bin / "remediate"), "--show-completion", "bash"],
        capture_output=True,
        text=True,
        env={**os.environ, "SHELL": "/bin/bash"},
    )
    assert completion.returncode == 0 and "complete" in completion.stdout, completion


def test_installed_serve_makes_its_store_and_fixes_an_alert(
    installed: Installed,
    incident_world: IncidentWorld,
    receiver_env: dict[str, str],
    tmp_path: Path,
) -> None:
    w = incident_world
    store_name = f"rt_store_wheel_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    fresh = db_url(store_name)  # no such database yet: serve creates it from the wheel's schema
    away = tmp_path / "away"  # no checkout here: nothing but the installed wheel to read
    away.mkdir()
    try:
        process, url, log = start_serve(
            w,
            away,
            auto_approve=True,
            extra_env={"REMEDIATION_DATABASE_URL": fresh, "PYTHONPATH": ""},
            command=str(installed.bin / "remediate"),
        )
        try:
            post_alert(url, w.database)
            deadline = time.monotonic() + 120
            with psycopg.connect(fresh, autocommit=True) as conn:
                while True:
                    row = conn.execute(
                        "SELECT id::text, status FROM incidents WHERE runbook = %s",
                        ("connection-pool-exhausted",),
                    ).fetchone()
                    if row and row[1] in {"resolved", "escalated", "failed"}:
                        break
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.3)
                versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            assert row[1] == "resolved", log.read_text()[-3000:]
            assert pids_alive(w.idle) == set()
            assert pids_alive(w.survivors) == w.survivors
            assert versions == [(ScriptDirectory(str(ROOT / "migrations")).get_current_head(),)]
        finally:
            # The runs serve's runner started (its scheduled watchdog) outlive a killed serve and
            # would create the store again after the drop below: serve is frozen (it starts no
            # more), they go first.
            process.send_signal(signal.SIGSTOP)
            for pid in runs_under(process.pid).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{store_name}" WITH (FORCE)')
