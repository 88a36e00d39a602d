"""`remediate serve` as a user runs it: an Alertmanager POST ends in a verified fix in the real
database, a resolved alert lands on the incident, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.conftest import TOKEN, kinds
from tests.support.ports import free_port
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld, ParamsOnly, WithParams

pytestmark = pytest.mark.usefixtures("prefect_server")
REMEDIATE = str(Path(sys.executable).with_name("remediate"))


def write_routes(w: WithParams, routes: Path) -> Path:
    """A routes file sending the world's alert to connection-pool-exhausted on its database."""
    routes.write_text(
        yaml.safe_dump(
            {
                "routes": [
                    {
                        "runbook": "connection-pool-exhausted",
                        "match": {"name": "PostgresqlTooManyConnections"},
                        "parameters": {
                            "database": "$labels.datname",
                            "usage_threshold": w.params["usage_threshold"],
                            "idle_minutes": 0,
                        },
                    }
                ]
            }
        )
    )
    return routes


def start_serve(
    w: WithParams,
    tmp_path: Path,
    *,
    auto_approve: bool,
    extra_env: dict[str, str] | None = None,
    command: str = REMEDIATE,
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`remediate serve` (`command`: another installation's) with a route for the world's
    alert (and auto-approval of the fix if asked), once its receiver answers: the process, its
    URL and its log."""
    routes = write_routes(w, tmp_path / "routes.yaml")
    port = free_port()
    env = {
        **os.environ,
        "ALERT_ROUTES_FILE": str(routes),
        "SWEEP_INTERVAL_SECONDS": "3600",
        "REMEDIATE_HOME": str(tmp_path / "home"),
        **(extra_env or {}),
    }
    if auto_approve:
        env["AUTO_APPROVE"] = "connection-pool-exhausted:terminate-idle-sessions:*"
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [command, "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log.open("w"),  # a file, not a pipe: a full pipe would stall the service
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthz(url, gone=lambda: process.poll() is not None, timeout=90)
    except AssertionError:
        process.kill()
        raise AssertionError(f"remediate serve did not start:\n{log.read_text()[-3000:]}") from None
    return process, url, log


def wait_healthz(url: str, *, gone: Callable[[], bool], timeout: float) -> None:
    """Until the receiver at `url` answers /healthz (AssertionError when the process serving it
    is `gone` or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert not gone() and time.monotonic() < deadline, f"nothing answers {url}/healthz"
        time.sleep(0.2)


@dataclass(frozen=True)
class ServedWorld(IncidentWorld):
    """The world, with `remediate serve` routing its alert."""

    url: str  # the receiver's
    process: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr


@pytest.fixture
def served(
    incident_world: IncidentWorld, receiver_env: dict[str, str], tmp_path: Path
) -> Iterator[ServedWorld]:
    """`remediate serve` with a route for the world's alert and auto-approval of the fix."""
    process, url, log = start_serve(incident_world, tmp_path, auto_approve=True)
    yield ServedWorld(**vars(incident_world), url=url, process=process, log=log)
    if process.poll() is None:
        process.kill()
        process.wait()


def alert(database: str, status: str = "firing") -> bytes:
    payload = json.loads((ROOT / "tests" / "fixtures" / "alerts" / "alertmanager.json").read_text())
    payload["status"] = payload["alerts"][0]["status"] = status
    payload["alerts"][0]["labels"]["datname"] = database
    return json.dumps(payload).encode()


def post_alert(url: str, database: str) -> str:
    """Alertmanager's alert for `database` to the receiver at `url`: the one run it started."""
    response = httpx.post(
        f"{url}/alerts/alertmanager",
        content=alert(database),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 202, response.text
    (run_id,) = response.json()["flow_run_ids"]
    return str(run_id)


def ended_incident(store: Any, run_id: str, *, log: Path, timeout: float = 120) -> Any:
    """The incident of `run_id` once its run ended it (resolved, escalated or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        incident = store.incident_for_flow_run(run_id)
        if incident is not None and incident.status in {"resolved", "escalated", "failed"}:
            return incident
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)


def test_alert_to_verified_fix_through_remediate_serve(served: ServedWorld) -> None:
    w = served
    headers = {"Authorization": f"Bearer {TOKEN}"}
    started = time.monotonic()
    response = httpx.post(
        f"{w.url}/alerts/alertmanager", content=alert(w.database), headers=headers
    )
    assert response.status_code == 202, response.text
    [run_id] = response.json()["flow_run_ids"]

    store = w.store
    deadline = time.monotonic() + 120
    while True:
        incident = store.incident_for_flow_run(run_id)
        if incident is not None and incident.status in {"resolved", "escalated", "failed"}:
            break
        assert time.monotonic() < deadline, "the run did not finish in time"
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    assert incident.status == "resolved", kinds(store, incident.id)
    events = kinds(store, incident.id)
    assert {"acted", "verified", "resolved"} <= set(events)
    # The world: the idle sessions are gone, nothing else was touched.
    assert pids_alive(w.idle) == set()
    assert pids_alive(w.survivors) == w.survivors
    print(f"alert to verified fix: {elapsed:.1f} s")

    resolved = httpx.post(
        f"{w.url}/alerts/alertmanager",
        content=alert(w.database, status="resolved"),
        headers=headers,
    )
    assert resolved.json()["resolved"] == 1
    assert kinds(store, incident.id).count("alert-resolved") == 1

    process = w.process
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    output = w.log.read_text()
    assert process.returncode == 0, output[-2000:]
    assert "remediate stopped" in output and "Traceback" not in output


def alert_until_paused(url: str, database: str) -> str:
    """POST the world's alert to a running serve; the id of its run, once it waits to be
    approved."""
    from tests.e2e.conftest import paused_run

    response = httpx.post(
        f"{url}/alerts/alertmanager",
        content=alert(database),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    [run_id] = response.json()["flow_run_ids"]
    assert paused_run(database) == run_id
    return run_id


def test_serve_names_a_taken_port_in_one_line(receiver_env: dict[str, str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [REMEDIATE, "serve", "--port", str(port)],
            env={**os.environ, "REMEDIATE_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"could not listen on 127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]


def test_the_readme_demo_fixes_its_incident_through_a_signed_link(
    receiver_env: dict[str, str], tmp_path: Path
) -> None:
    """`remediate serve --demo`: the alert, the approval link, the fix, the sandbox removed."""
    import re

    port = free_port()
    log = tmp_path / "demo.log"
    process = subprocess.Popen(
        [REMEDIATE, "serve", "--demo", "--port", str(port)],
        env={
            **os.environ,
            "REMEDIATE_HOME": str(tmp_path / "home"),
            "SWEEP_INTERVAL_SECONDS": "3600",
        },
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:

        def wait_for(pattern: str, timeout: float = 120) -> re.Match[str]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = re.search(pattern, log.read_text())
                if found:
                    return found
                assert process.poll() is None, log.read_text()[-3000:]
                time.sleep(0.3)
            raise AssertionError(f"{pattern!r} not seen:\n{log.read_text()[-3000:]}")

        link = wait_for(r"open once: (\S+)").group(1)
        assert httpx.get(link).status_code == 200
        taken = httpx.post(link, data={"approver": "demo-tester", "decision": "approve"})
        assert taken.status_code == 200, taken.text
        wait_for(r"demo sandbox removed: 8 Redis key")
        text = log.read_text()
        assert re.search(r"demo incident \S+: resolved", text)
        assert "[FAIL]" not in text and text.count("[ok]") == 2
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0


def test_stopping_serve_while_a_run_waits_leaves_no_run_running(
    incident_world: IncidentWorld, receiver_env: dict[str, str], tmp_path: Path
) -> None:
    """A run the alert started in the service's own process, paused for an approval when Ctrl-C
    comes: the service exits at once, the run is marked Crashed, its incident stays open (for the
    watchdog) and nothing was changed."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    w = incident_world
    process, url, log = start_serve(w, tmp_path, auto_approve=False)
    try:
        run_id = alert_until_paused(url, w.database)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log.read_text()[-2000:]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    assert state is not None and state.type.value == "CRASHED"
    incident = w.store.incident_for_flow_run(run_id)
    assert incident is not None and incident.closed_at is None
    assert pids_alive(w.idle) == w.idle


def test_warm_workers_0_leaves_every_run_to_prefects_runner(
    incident_world: IncidentWorld, receiver_env: dict[str, str], tmp_path: Path
) -> None:
    """WARM_WORKERS=0: the alert's run is created Scheduled and Prefect's own runner executes it
    in a process of its own (no warm executor), to the same verified fix."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    w = incident_world
    process, url, log = start_serve(w, tmp_path, auto_approve=True, extra_env={"WARM_WORKERS": "0"})
    try:
        run_id = post_alert(url, w.database)
        incident = ended_incident(w.store, run_id, log=log)
        assert incident.status == "resolved", kinds(w.store, incident.id)
        assert pids_alive(w.idle) == set()
        with get_client(sync_client=True) as client:
            states = client.read_flow_run_states(UUID(run_id))
        # Created Scheduled for the runner to pick up (a warm run is created Pending, taken).
        assert states[0].type.value == "SCHEDULED", [s.type for s in states]
    finally:
        process.kill()
        process.wait()


def test_serve_killed_during_a_burst_of_distinct_alerts_loses_none(
    receiver_env: dict[str, str], make_database: Any, tmp_path: Path
) -> None:
    """Fault: `remediate serve` SIGKILLed in the middle of a burst of distinct alerts. Every alert
    it answered 202 gets its run, and that run finishes after a restart: runs it had created but
    not begun and runs it was executing are handed back to the runner. The alerts it did not
    answer are redelivered by their sender, as Alertmanager does, and start one run each."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Lock
    from uuid import UUID

    from prefect.client.orchestration import get_client

    healthy = ParamsOnly(params={"usage_threshold": 0.99})  # each database's run ends `healthy`
    databases = [make_database() for _ in range(16)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    configured = {"SWEEP_DATABASES": ",".join(databases)}  # alerts name configured targets only
    process, url, _ = start_serve(healthy, tmp_path, auto_approve=False, extra_env=configured)
    answered: dict[str, list[str]] = {}
    unanswered: list[str] = []
    lock = Lock()

    def send(database: str) -> None:
        try:
            response = httpx.post(
                f"{url}/alerts/alertmanager", content=alert(database), headers=headers, timeout=10
            )
        except httpx.HTTPError:
            response = None
        with lock:
            if response is None or response.status_code != 202:
                unanswered.append(database)
                return
            answered[database] = response.json()["flow_run_ids"]
            if len(answered) == 6:
                process.kill()  # SIGKILL: no shutdown, no Crashed marks

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(send, databases))
    finally:
        process.kill()
        process.wait()
    assert len(answered) >= 6 and unanswered, (len(answered), len(unanswered))
    assert all(len(ids) == 1 for ids in answered.values()), answered

    again = tmp_path / "again"
    again.mkdir()
    process, url, log = start_serve(healthy, again, auto_approve=False, extra_env=configured)
    try:
        for database in unanswered:  # the sender's retries, on a 503 too, as Alertmanager's
            # A claim the killed serve took without recording its run answers 503 "run-pending"
            # until it is stale (remediate/intake/dedup.py STALE_CLAIM_SECONDS), then is taken over.
            deadline = time.monotonic() + 30
            while True:
                response = httpx.post(
                    f"{url}/alerts/alertmanager", content=alert(database), headers=headers
                )
                if response.status_code != 503 or time.monotonic() > deadline:
                    break
                assert "run-pending" in response.text or "still being created" in response.text
                time.sleep(1)
            assert response.status_code == 202, response.text
            answered[database] = response.json()["flow_run_ids"]
        assert all(len(ids) == 1 for ids in answered.values()), answered
        run_ids = {database: ids[0] for database, ids in answered.items()}
        assert len(set(run_ids.values())) == len(databases)  # one run per alert, none shared

        deadline = time.monotonic() + 180
        with get_client(sync_client=True) as client:
            while True:
                runs = {d: client.read_flow_run(UUID(i)) for d, i in run_ids.items()}
                states = {d: r.state_type.value if r.state_type else "?" for d, r in runs.items()}
                if set(states.values()) == {"COMPLETED"}:
                    break
                assert time.monotonic() < deadline, (states, log.read_text()[-3000:])
                time.sleep(0.5)
        for database, run in runs.items():
            assert run.parameters["database"] == database
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in log.read_text()


def test_the_health_sweep_schedule_fires_under_serve(
    receiver_env: dict[str, str], tmp_path: Path
) -> None:
    """A schedule registered is not a schedule firing: with SWEEP_INTERVAL_SECONDS=20 the Prefect
    server's own scheduler creates `health-sweep` runs and serve's runner completes two within
    150 s. (SQLAlchemy 2.1 once stopped Prefect's scheduler with every registration intact.)"""
    from datetime import datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    began = datetime.now(UTC)
    healthy = ParamsOnly(params={"usage_threshold": 0.99})
    process, _, log = start_serve(
        healthy, tmp_path, auto_approve=False, extra_env={"SWEEP_INTERVAL_SECONDS": "20"}
    )
    try:
        deadline = time.monotonic() + 150
        with get_client(sync_client=True) as client:
            while True:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=["health-sweep"])
                    ),
                    flow_run_filter=FlowRunFilter(
                        expected_start_time=FlowRunFilterExpectedStartTime(after_=began)
                    ),
                )
                done = [
                    r
                    for r in runs
                    if r.auto_scheduled and r.state_type and r.state_type.value == "COMPLETED"
                ]
                if len(done) >= 2:  # and fires again
                    break
                states = [(r.auto_scheduled, r.state_name) for r in runs]
                assert time.monotonic() < deadline, (states, log.read_text()[-3000:])
                time.sleep(2)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert "Traceback" not in log.read_text()
