"""The receiver alone (`remediate receive`, `uvicorn remediate.receiver.asgi:app`): it creates the
run on
the shared Prefect server and another process executes it (here a `remediate serve`, as a
worker would); without the settings a receiver of its own needs, one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_serve import ended_incident, post_alert, start_serve, wait_healthz
from tests.support.ports import free_port
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("unset", "named"),
    [("PREFECT_API_URL", "PREFECT_API_URL"), ("ALERT_WEBHOOK_TOKEN", "ALERT_WEBHOOK_TOKEN")],
)
def test_receive_without_what_it_needs_is_one_line_and_exit_2(
    receiver_env: dict[str, str], unset: str, named: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {unset, "SENTRY_CLIENT_SECRET"}}
    for command in (
        [str(BIN / "remediate"), "receive", "--port", str(free_port())],
        [str(BIN / "uvicorn"), "remediate.receiver.asgi:app", "--port", str(free_port())],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.strip().splitlines() if "remediate" in line]
        assert len(lines) == 1 and named in lines[0], result.stderr


def test_a_receiver_on_its_own_starts_a_run_another_process_executes(
    incident_world: IncidentWorld, receiver_env: dict[str, str], tmp_path: Path
) -> None:
    w = incident_world
    serve, _, serve_log = start_serve(w, tmp_path, auto_approve=True)  # the executing side
    port = free_port()
    log = tmp_path / "receiver.log"
    receiver = subprocess.Popen(
        [str(BIN / "uvicorn"), "remediate.receiver.asgi:app", "--port", str(port)],
        env={
            **os.environ,
            "ALERT_ROUTES_FILE": str(tmp_path / "routes.yaml"),  # the routes serve was given
            "APPROVAL_LINK_SECRET": "x" * 32,
            "RECEIVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        },
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthz(url, gone=lambda: receiver.poll() is not None, timeout=60)
        except AssertionError:
            raise AssertionError(log.read_text()) from None
        run_id = post_alert(url, w.database)
        incident = ended_incident(w.store, run_id, log=serve_log)
        events = [(e.kind, e.detail) for e in w.store.timeline(incident.id)]
        assert incident.status == "resolved", events
        assert pids_alive(w.idle) == set()
        assert pids_alive(w.survivors) == w.survivors
    finally:
        for process in (receiver, serve):
            process.kill()
            process.wait()
