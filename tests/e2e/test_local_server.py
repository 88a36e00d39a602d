"""Which Prefect server a command uses (issue "Past one machine"): `PREFECT_API_URL` as Prefect
reads it, profiles included; otherwise a local server owned by the command that started it,
stopped when that command ends (SIGKILL included), never something else found on the port."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime

from tests.e2e.test_serve import REMEDIATE, wait_healthz
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")


def dry_run(env: dict[str, str], database: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            REMEDIATE,
            "run",
            "connection-pool-exhausted",
            "--set",
            f"database={database}",
            "--dry-run",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_silent(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while answers(port):
        assert time.monotonic() < deadline, f"a server still answers on {port}"
        time.sleep(0.3)


@pytest.fixture
def bare_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The test's settings without PREFECT_API_URL, a Prefect home and a local port of its own."""
    values = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    values.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        REMEDIATE_HOME=str(tmp_path / "home"),
        REMEDIATE_PREFECT_PORT=str(free_port()),
    )
    return values


def test_a_prefect_profile_names_the_server(
    bare_env: dict[str, str], sandbox: str, prefect_server: str
) -> None:
    """`prefect config set PREFECT_API_URL=…` (a profile, no environment variable) is obeyed: the
    run is on that server, and no local one is started."""
    began = datetime.now(UTC)
    configured = subprocess.run(
        [
            str(Path(REMEDIATE).with_name("prefect")),
            "config",
            "set",
            f"PREFECT_API_URL={prefect_server}",
        ],
        env=bare_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert configured.returncode == 0, configured.stderr
    done = dry_run(bare_env, sandbox)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "starting a Prefect server" not in done.stderr
    assert not answers(int(bare_env["REMEDIATE_PREFECT_PORT"]))
    # a dry run on a healthy database opens no incident, so the outcome names no flow run: find it
    # among the runs created since the test began (a fixed page of the server's runs misses it
    # once the session has made a few hundred)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=began)
            ),
            limit=200,
        )
    assert any(r.parameters.get("database") == sandbox for r in runs)


def test_a_local_server_stops_with_the_command_that_started_it(
    bare_env: dict[str, str], sandbox: str
) -> None:
    port = int(bare_env["REMEDIATE_PREFECT_PORT"])
    done = dry_run(bare_env, sandbox)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "starting a Prefect server for this command" in done.stderr
    wait_silent(port)


def test_a_killed_serve_takes_its_prefect_server_with_it(
    bare_env: dict[str, str], tmp_path: Path
) -> None:
    port, local = free_port(), int(bare_env["REMEDIATE_PREFECT_PORT"])
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [REMEDIATE, "serve", "--port", str(port)],
        env={**bare_env, "SWEEP_INTERVAL_SECONDS": "3600"},
        cwd=tmp_path,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthz(f"http://127.0.0.1:{port}", gone=lambda: serve.poll() is not None, timeout=120)
        assert answers(local), log.read_text()
        serve.send_signal(signal.SIGKILL)
        serve.wait()
        wait_silent(local)  # before: it stayed up, and the next serve adopted it
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


class _Impostor(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor(bare_env: dict[str, str]) -> Iterator[int]:
    """Something that answers /api/health on the local port, started by nobody of ours."""
    port = int(bare_env["REMEDIATE_PREFECT_PORT"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()
    server.server_close()


def test_a_server_this_installation_did_not_start_is_refused_not_adopted(
    bare_env: dict[str, str], sandbox: str, impostor: int
) -> None:
    done = dry_run(bare_env, sandbox)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "did not start" in done.stderr and "Traceback" not in done.stderr
