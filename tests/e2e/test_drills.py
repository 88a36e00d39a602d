"""`remediate drill ID` for every runbook, as a user runs it: the incident is built in a sandbox,
the runbook fixes it through the approval gate, and the sandbox is gone afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker
import psycopg
import pytest
import redis

from remediate.drills.worlds import DRILLS
from remediate.engine import catalogue
from tests.conftest import PG_ADMIN_URL, REDIS_URL
from tests.e2e.conftest import DOCKER_HOST

pytestmark = pytest.mark.usefixtures("prefect_server")
REMEDIATE = str(Path(sys.executable).with_name("remediate"))


def test_every_runbook_has_a_drill() -> None:
    assert set(DRILLS) == set(catalogue.CATALOGUE)


def leftovers() -> list[str]:
    with psycopg.connect(PG_ADMIN_URL) as conn:
        databases = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'remediate\\_drill\\_%'"
            )
        ]
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k.decode() for k in client.scan_iter(match="remediate-drill-*")]
    client.close()
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    containers = [
        c.name for c in engine.containers.list(all=True, filters={"label": "remediate.drill"})
    ]
    engine.close()
    return databases + keys + containers


@pytest.mark.parametrize("runbook_id", list(catalogue.CATALOGUE))
def test_drill_fixes_the_incident_and_removes_its_sandbox(
    runbook_id: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A drill never touches what the shell points at: a target set here must be ignored.
    monkeypatch.setenv("TARGET_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/not_this_one")
    (tmp_path / ".env").write_text("TARGET_REDIS_URL=redis://127.0.0.1:1/0\n")
    result = subprocess.run(
        [REMEDIATE, "drill", runbook_id, "--approve-as", "drill-tester"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "approving as drill-tester" in out
    assert "outcome: resolved" in out
    assert "[FAIL]" not in out and out.count("[ok]") >= 1
    assert "sandbox removed: " in out
    assert leftovers() == []
