"""The production layout of docs/service.md on this machine: one Prefect server on PostgreSQL,
`prefect deploy` the only thing registering deployments (into a process work pool), two
`remediate worker`s and two `remediate receive`rs, every process of its own.

What it proves (issue "Past one machine"): an alert is fixed through a worker; a worker killed
while its run waits for an approval does not lose the approval (the run carries on and the fix
happens once); a worker and its run both killed (a lost machine) are noticed within seconds: the
incident escalates, the run is marked Crashed, the approval is refused loudly and the next alert
starts a new run; a worker stopped with SIGTERM hands its waiting run back to the other worker,
which asks again and fixes it once."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from remediate.app.worker import runs_under
from tests.conftest import ROOT
from tests.e2e.conftest import TOKEN, kinds, unpool_deployments
from tests.e2e.test_prefect_deploy import remediate_deploy
from tests.e2e.test_serve import alert, wait_healthz, write_routes
from tests.support.ports import free_port
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")
BIN = Path(sys.executable).parent
LEASE = "3"


@pytest.fixture(scope="module")
def pool(deployment_ids: dict[str, uuid.UUID]) -> Iterator[str]:
    """A process work pool of this module's own, and the deployment `prefect deploy` put in it."""
    name = f"rt-layout-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)  # the workers import the flows from the installed product
    for command in (
        [str(BIN / "prefect"), "work-pool", "create", name, "--type", "process"],
        [
            str(BIN / "prefect"),
            "--no-prompt",
            "deploy",
            "--name",
            "connection-pool-exhausted",
            "--pool",
            name,
        ],
    ):
        done = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    yield name
    unpool_deployments(deployment_ids)


class Layout:
    def __init__(self, world: IncidentWorld, pool: str, tmp_path: Path) -> None:
        self.world = world
        self.tmp = tmp_path
        routes = write_routes(world, tmp_path / "routes.yaml")
        self.env = {
            **os.environ,
            "ALERT_ROUTES_FILE": str(routes),
            "RUN_LEASE_SECONDS": LEASE,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            # Prefect's INFO lines are what a run writes into its worker's pipe: with the worker
            # gone, the first one after the approval killed the run (a broken pipe).
            "PREFECT_LOGGING_LEVEL": "INFO",
            "APPROVAL_TIMEOUT_SECONDS": "300",
            "APPROVAL_LINK_SECRET": "l" * 32,
            "REMEDIATE_HOME": str(tmp_path / "home"),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: list[str] = []
        for number in (1, 2):
            self.worker(f"worker-{number}", pool)
        for number in (1, 2):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            process = self.start(
                f"receiver-{number}",
                ["receive", "--port", str(port)],
                RECEIVER_PUBLIC_URL=url,
            )
            wait_healthz(url, gone=lambda p=process: p.poll() is not None, timeout=60)
            self.urls.append(url)

    def start(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        process = subprocess.Popen(
            [str(BIN / "remediate"), *args],
            env={**self.env, **extra},
            cwd=self.tmp,
            stdout=log.open("w"),  # a file: a full pipe would stall it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def worker(self, name: str, pool: str) -> None:
        self.start(
            name, ["worker", "--pool", pool, "--name", f"{pool}-{name}", "--drain-seconds", "2"]
        )

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def logs(self) -> str:
        return "\n".join(f"== {n}\n{self.log(n)[-2500:]}" for n in self.processes)

    def post(self, receiver: int = 0) -> httpx.Response:
        return httpx.post(
            f"{self.urls[receiver]}/alerts/alertmanager",
            content=alert(self.world.database),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )

    def executing(self, run_id: str) -> tuple[str, int]:
        """(the worker's name, the run's pid) of the worker executing `run_id`."""
        for name, process in self.processes.items():
            if name.startswith("worker") and process.poll() is None:
                pid = runs_under(process.pid).get(run_id)
                if pid is not None:
                    return name, pid
        raise AssertionError(f"no worker executes {run_id}\n{self.logs()}")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def layout(
    incident_world: IncidentWorld, receiver_env: dict[str, str], pool: str, tmp_path: Path
) -> Iterator[Layout]:
    made = Layout(incident_world, pool, tmp_path)
    yield made
    made.close()


def state(run_id: str) -> str:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
    return run.state.type.value if run.state else "NONE"


def wait_for(what: str, check: Any, layout: Layout, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}\n{layout.logs()}"
        time.sleep(0.3)


def paused_incident(layout: Layout, run_id: str, *, not_id: str | None = None) -> Any:
    """The incident whose approval `run_id` is waiting for (another than `not_id`)."""
    store = layout.world.store

    def asked() -> Any:
        incident = store.incident_for_flow_run(run_id)
        return (
            incident
            if incident is not None
            and incident.id != not_id
            and "approval-asked" in kinds(store, incident.id)
            and state(run_id) == "PAUSED"
            else None
        )

    return wait_for(f"run {run_id} never asked for an approval", asked, layout)


def assert_resolved(layout: Layout, incident_id: str) -> None:
    """Once the run has ended its incident: resolved (a verified fix)."""
    store = layout.world.store
    wait_for(
        "the run did not finish",
        lambda: (i := store.incident(incident_id)) is not None and i.status != "open",
        layout,
    )
    assert store.incident(incident_id).status == "resolved", kinds(store, incident_id)


def approve(run_id: str, *, deny: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "remediate"), "approve", run_id, "--as", "alice", *(["--deny"] if deny else [])],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_alert_is_fixed_through_a_worker_even_when_the_worker_dies_while_the_run_waits(
    layout: Layout,
) -> None:
    w = layout.world
    response = layout.post(receiver=1)
    assert response.status_code == 202, response.text
    (run_id,) = response.json()["flow_run_ids"]
    incident = paused_incident(layout, run_id)
    name, run_pid = layout.executing(run_id)
    worker = layout.processes[name]
    worker.kill()  # the worker alone; the run's process lives on without its output pipe
    worker.wait()
    os.kill(run_pid, 0)  # the run's process is still there
    answered = approve(run_id)
    assert answered.returncode == 0, answered.stdout + answered.stderr
    store = w.store
    assert_resolved(layout, incident.id)
    events = kinds(store, incident.id)
    assert events.count("acted") == 1 and "executor-lost" not in events
    assert pids_alive(w.idle) == set()
    assert pids_alive(w.survivors) == w.survivors
    wait_for("the run is not Completed", lambda: state(run_id) == "COMPLETED", layout)


def test_a_lost_worker_and_run_are_noticed_and_a_later_approval_is_refused(
    layout: Layout,
) -> None:
    w = layout.world
    store = w.store
    (run_id,) = layout.post().json()["flow_run_ids"]
    incident = paused_incident(layout, run_id)
    name, run_pid = layout.executing(run_id)
    lost_at = time.monotonic()
    os.kill(run_pid, signal.SIGKILL)  # the machine is gone: the run's process and its worker
    os.killpg(layout.processes[name].pid, signal.SIGKILL)
    layout.processes[name].wait()

    wait_for(
        "the lost run was not noticed",
        lambda: "executor-lost" in kinds(store, incident.id),
        layout,
        timeout=60,
    )
    noticed = time.monotonic() - lost_at
    assert noticed < 30, noticed  # a 3 s lease: expired, then a whole lease more, then a check
    assert store.incident(incident.id).status == "escalated"
    wait_for("the run is not Crashed", lambda: state(run_id) == "CRASHED", layout, timeout=10)
    [lost] = [e for e in store.timeline(incident.id) if e.kind == "executor-lost"]
    assert "waiting for an approval" in lost.detail and "done: nothing" in lost.detail

    refused = approve(run_id)
    assert refused.returncode == 1
    assert "executor was lost" in refused.stderr, refused.stderr
    assert pids_alive(w.idle) == w.idle  # nothing was done

    # The claim of the lost run swallows no alert: the next one starts a new run.
    again = layout.post(receiver=1)
    assert again.status_code == 202, again.text
    (new_run,) = again.json()["flow_run_ids"]
    assert new_run != run_id
    paused_incident(layout, new_run)
    assert approve(new_run, deny=True).returncode == 0
    print(f"executor lost noticed after {noticed:.1f} s")


def test_sigterm_drains_a_worker_and_its_waiting_run_is_fixed_once_by_the_other(
    layout: Layout,
) -> None:
    w = layout.world
    store = w.store
    (run_id,) = layout.post().json()["flow_run_ids"]
    first = paused_incident(layout, run_id)
    name, _ = layout.executing(run_id)
    worker = layout.processes[name]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, layout.log(name)
    assert "handed back" in layout.log(name)
    assert store.incident(first.id).status == "handed-back", kinds(store, first.id)

    second = paused_incident(layout, run_id, not_id=first.id)  # the other worker asks again
    other, _ = layout.executing(run_id)
    assert other != name
    answered = approve(run_id)
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert_resolved(layout, second.id)
    assert kinds(store, second.id).count("acted") == 1
    assert "acted" not in kinds(store, first.id)
    assert pids_alive(w.idle) == set()
    assert pids_alive(w.survivors) == w.survivors


def test_sweeps_fire_on_schedule_through_the_workers_and_never_two_at_once(
    pool: str, receiver_env: dict[str, str], tmp_path: Path
) -> None:
    """`remediate deploy` gives health-sweep (and the watchdog) a deployment concurrency limit of
    one, CANCEL_NEW: under workers the schedule still fires (seen completing, auto-scheduled), and
    three sweeps started at once never run together: at least one is cancelled. (Under `serve` on
    Prefect 3.9.1 the same limit stopped every scheduled run: `serve` registers none.)"""
    env = {
        **os.environ,
        "SWEEP_INTERVAL_SECONDS": "10",
        "WATCHDOG_INTERVAL_SECONDS": "3600",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    remediate_deploy(pool, env, cwd=tmp_path)
    quiet = {"runbooks": ["database-connection-errors"], "start_runs": False}
    with get_client(sync_client=True) as client:
        sweep = client.read_deployment_by_name("health-sweep/health-sweep")
        assert sweep.work_pool_name == pool
        assert sweep.global_concurrency_limit is not None
        assert sweep.global_concurrency_limit.limit == 1
        assert sweep.concurrency_options is not None
        assert sweep.concurrency_options.collision_strategy == "CANCEL_NEW"
        for schedule in sweep.schedules:  # one database, no runs started from findings
            client.update_deployment_schedule(sweep.id, schedule.id, parameters=quiet)
        manual = {
            client.create_flow_run_from_deployment(sweep.id, parameters=quiet).id for _ in range(3)
        }
    workers = []
    for number in (1, 2):
        log = tmp_path / f"worker-{number}.log"
        workers.append(
            subprocess.Popen(
                [str(BIN / "remediate"), "worker", "--pool", pool, "--drain-seconds", "2"],
                env=env,
                cwd=tmp_path,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def sweeps() -> list[Any]:
        with get_client(sync_client=True) as client:
            return [
                r
                for r in client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[sweep.id])),
                    limit=200,
                )
                if r.state is not None
            ]

    def settled() -> bool:
        runs = sweeps()
        scheduled_done = [
            r for r in runs if r.auto_scheduled and r.state and r.state.type.value == "COMPLETED"
        ]
        by_hand = [r for r in runs if r.id in manual and r.state and r.state.is_final()]
        return len(scheduled_done) >= 2 and len(by_hand) == 3

    try:
        deadline = time.monotonic() + 180
        while not settled():
            logs = "\n".join((tmp_path / f"worker-{n}.log").read_text()[-2000:] for n in (1, 2))
            assert time.monotonic() < deadline, f"sweeps did not settle\n{logs}"
            time.sleep(1)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    runs = sweeps()
    ran = sorted(
        (r.start_time, r.end_time)
        for r in runs
        if r.state and r.state.type.value == "COMPLETED" and r.start_time and r.end_time
    )
    for (_, ended), (began, _) in itertools.pairwise(ran):
        assert began >= ended, f"two sweeps ran at once: {ran}"
    states = {r.id: r.state.type.value for r in runs if r.id in manual and r.state}
    assert "CANCELLED" in states.values(), states
