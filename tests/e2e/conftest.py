"""Running the connection-pool runbook from a test: in a thread, answered through the real API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
import redis
import uvicorn
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from pydantic import SecretStr

from remediate.domain.models import Outcome
from remediate.domain.settings import load_settings
from remediate.drills import ASSETS
from remediate.drills.runner import threshold_below
from remediate.engine import catalogue
from remediate.engine.approval import answer_run
from remediate.flows.connection_pool_exhausted import connection_pool_exhausted
from remediate.receiver import create_app
from remediate.store.database import Store
from tests.conftest import PG_ADMIN_URL, REDIS_URL, ROOT, db_url
from tests.support.ports import free_port
from tests.support.sessions import Herd, wait_idle
from tests.support.worlds import IncidentWorld


def start(*, flow: Any = connection_pool_exhausted, **params: Any) -> Future[Outcome]:
    """Run a runbook flow in a thread, as a served deployment would; the future holds its result."""
    future: Future[Outcome] = Future()

    def target() -> None:
        try:
            future.set_result(flow(**params))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True).start()
    return future


def paused_run_where(parameter: str, value: Any, timeout: float = 30.0) -> str:
    """The id of the flow run waiting for an approval whose `parameter` is `value`."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            for run in runs:
                if run.parameters.get(parameter) == value:
                    return str(run.id)
            time.sleep(0.2)
    raise AssertionError(f"no run with {parameter}={value!r} paused within {timeout} s")


def paused_run(database: str, timeout: float = 30.0) -> str:
    """The id of the flow run on `database` that waits for an approval."""
    return paused_run_where("database", database, timeout)


def answer(flow_run_id: str, *, approve: bool, approver: str, note: str = "") -> None:
    """As `remediate approve` answers: bound to the plan the run is asking about now."""
    answer_run(str(flow_run_id), approve=approve, approver=approver, note=note, channel="cli")


@pytest.fixture
def incident_world(
    env: dict[str, str], sandbox: str, herd: Herd, make_database: Callable[[], str]
) -> IncidentWorld:
    """Idle sessions to terminate, and sessions that must survive every run."""
    url = db_url(sandbox)
    idle = herd.idle(url, 20)
    in_tx = {herd.idle_in_transaction(url)}
    active = herd.active(url, 2)
    other = herd.idle(db_url(make_database()), 3)
    wait_idle(idle | in_tx | other)
    return IncidentWorld(
        database=sandbox,
        idle=idle,
        survivors=in_tx | active | other,
        # Low enough that this world is "exhausted", high enough that it is not once idle is gone.
        params={
            "usage_threshold": threshold_below(len(idle), admin_url=PG_ADMIN_URL),
            "idle_minutes": 0,
            "database": sandbox,
        },
        store=Store.open(SecretStr(env["REMEDIATION_DATABASE_URL"])),
    )


def kinds(store: Store, incident_id: str | None) -> list[str]:
    assert incident_id
    return [e.kind for e in store.timeline(incident_id)]


DOCKER_HOST = "unix:///run/podman/podman.sock"
POOLER_SCRIPT = ASSETS / "pooler.sh"


def postgres_container(
    engine: docker.DockerClient, *, password: str, project: str, service: str = "db"
) -> tuple[Any, str]:
    """A real PostgreSQL server in a compose-labelled container of the test image (its data
    survives a stop and start), once it answers: the container and its URL."""
    from remediate.drills.sandbox import free_port, postgres_server

    port = free_port()
    server = postgres_server(port)
    container = engine.containers.run(
        "localhost/remediate-test:3",
        server.pop("command"),
        detach=True,
        network_mode="host",
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": service,
            "remediate.test": "1",
        },
        **server,
    )
    url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    wait_reachable(url, container)
    return container, url


def wait_reachable(url: str, container: Any, timeout: float = 60) -> None:
    from remediate.drills.sandbox import reachable

    deadline = time.monotonic() + timeout
    while not reachable(url):
        assert time.monotonic() < deadline, container.logs()[-2000:]
        time.sleep(0.3)


def pooler_sessions(database: str, state: str) -> set[int]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'pgbouncer'"
            " AND state = %s",
            (database, state),
        ).fetchall()
    return {row[0] for row in rows}


@pytest.fixture
def pooler(incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A compose-labelled pooler container leaking 16 sessions idle in a transaction."""
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    project = f"rt-{uuid.uuid4().hex[:8]}"
    container = engine.containers.run(
        "localhost/remediate-test:3",
        ["/bin/sh", "/pooler.sh"],
        detach=True,
        network_mode="host",
        environment={"DB": incident_world.database, "LEAK": "16", "KEEP": "1"},
        volumes={str(POOLER_SCRIPT): {"bind": "/pooler.sh", "mode": "ro"}},
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": "pgbouncer",
            "remediate.test": "1",
        },
    )
    deadline = time.monotonic() + 20
    while len(pooler_sessions(incident_world.database, "idle in transaction")) < 16:
        assert time.monotonic() < deadline, "the pooler did not open its sessions"
        time.sleep(0.1)
    monkeypatch.setenv("DOCKER_HOST", DOCKER_HOST)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", project)
    monkeypatch.setenv("POOLER_SERVICE", "pgbouncer")
    container.reload()
    yield container
    container.remove(force=True)
    engine.close()


def assert_no_secret(outcome: Outcome, canaries: list[str], *, messages: list[str] = ()) -> None:  # type: ignore[assignment]
    """No canary in the outcome JSON, the run's logs and artifacts on the server, or `messages`
    (what a notification endpoint received)."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    assert outcome.flow_run_id, "the run has a flow run id"
    seen = [outcome.model_dump_json(), *messages]
    with get_client(sync_client=True) as client:
        run_id = uuid.UUID(outcome.flow_run_id)
        time.sleep(2)  # logs reach the server in batches
        seen += [
            log.message
            for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
        ]
        seen += [
            str(a.data) + str(a.description)
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        ]
        seen.append(str(client.read_flow_run(run_id).parameters))
    for canary in canaries:
        assert not [text for text in seen if canary in text], f"{canary!r} leaked"


def run_host_python(
    engine: docker.DockerClient,
    script: Path,
    args: list[str],
    *,
    project: str,
    service: str,
    environment: dict[str, str] | None = None,
    mounts: dict[str, str] | None = None,
) -> Any:
    """A compose-labelled container of the test image running `script` with this machine's
    Python (mounted read-only, host network): the test stack's backend and frontend."""
    volumes = {
        sys.base_prefix: sys.base_prefix,
        str(script): f"/srv/{script.name}",
        "/usr/lib/x86_64-linux-gnu": "/usr/lib/x86_64-linux-gnu",
        "/lib64": "/lib64",
        **(mounts or {}),
    }
    return engine.containers.run(
        "localhost/remediate-test:3",
        [str(Path(sys.base_prefix) / "bin" / "python3"), "-u", f"/srv/{script.name}", *args],
        detach=True,
        network_mode="host",
        environment=environment or {},
        volumes={src: {"bind": dst, "mode": "ro"} for src, dst in volumes.items()},
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": service,
            "remediate.test": "1",
        },
    )


def wait_http(url: str, container: Any, timeout: float = 30) -> None:
    """Until `url` answers 200 (the container's log tail in the failure message)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, container.logs()[-2000:]
        time.sleep(0.2)


TOKEN = "rt-alert-token-5d1c-9e2b7f40"
SENTRY_SECRET = "rt-sentry-client-secret-77a0"


@pytest.fixture(scope="session")
def deployment_ids(prefect_server: str) -> Iterator[dict[str, uuid.UUID]]:
    """Every runbook's deployment on the test server (no runner: runs stay SCHEDULED)."""
    ids = {
        r.id: r.load_flow().to_deployment(name=r.id).apply() for r in catalogue.CATALOGUE.values()
    }
    yield ids
    delete_scheduled_runs()


def unpool_deployments(ids: dict[str, uuid.UUID]) -> None:
    """After a test of the production layout: the deployments `prefect deploy` put in a work pool
    are registered again without one and without schedules, as the other tests have them (a
    `serve` refuses pooled ones; re-registering alone keeps the pool). `ids` (the session's
    deployment ids) is updated in place."""
    from remediate.flows.health_sweep import health_sweep
    from remediate.flows.incident_watchdog import incident_watchdog

    with get_client(sync_client=True) as client:
        pooled = [d for d in client.read_deployments() if d.work_pool_name]
        for deployment in pooled:
            client.delete_deployment(deployment.id)
    flows = {r.id: r.load_flow() for r in catalogue.CATALOGUE.values()}
    flows.update({"health-sweep": health_sweep, "incident-watchdog": incident_watchdog})
    for deployment in pooled:
        flow = flows.get(deployment.name)
        if flow is None:
            continue
        new_id = flow.to_deployment(name=deployment.name).apply()
        if deployment.name in ids:
            ids[deployment.name] = new_id
    delete_scheduled_runs()


def delete_scheduled_runs() -> None:
    """Runs the receiver or the sweep started with no runner to take them: gone, so that a later
    `remediate serve` on this server does not run them against databases dropped since."""
    with get_client(sync_client=True) as client:
        while runs := client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
            limit=200,
        ):
            for run in runs:
                client.delete_flow_run(run.id)


def runs_for(deployment_ids: dict[str, uuid.UUID], database: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=list(deployment_ids.values()))
            ),
            limit=200,
        )
    return [r for r in runs if r.parameters.get("database") == database]


@pytest.fixture
def receiver_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    prefix = f"rt-{uuid.uuid4().hex[:8]}:"
    values = {
        "ALERT_WEBHOOK_TOKEN": TOKEN,
        "SENTRY_CLIENT_SECRET": SENTRY_SECRET,
        "REMEDIATION_REDIS_URL": REDIS_URL,
        "REMEDIATION_REDIS_PREFIX": prefix,
        "ALERT_MAX_BODY_BYTES": "65536",
    }
    for name in ("ALERT_ROUTES_FILE", "APPROVAL_LINK_SECRET", "RECEIVER_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield {**env, **values}
    delete_scheduled_runs()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


class LiveReceiver:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.05)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    @property
    def receiver(self) -> Any:
        return self.app.state.receiver

    def post(
        self, path: str, body: bytes | dict[str, Any], *, token: str | None = TOKEN, **headers: str
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.post(path, content=content, headers=headers)

    def metric(self, name: str) -> float:
        text = self.client.get("/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live(
    receiver_env: dict[str, str], deployment_ids: dict[str, uuid.UUID]
) -> Iterator[Callable[..., LiveReceiver]]:
    """Start receivers in this process on free ports (settings overridden per call)."""
    started: list[LiveReceiver] = []

    def start(**overrides: Any) -> LiveReceiver:
        started.append(LiveReceiver(create_app(load_settings(**overrides))))
        return started[-1]

    yield start
    for server in started:
        server.close()


def uv(*args: str, cwd: Path = ROOT) -> None:
    result = subprocess.run(
        ["uv", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]


@dataclass(frozen=True)
class Installed:
    """The product as `pipx install` put it, away from this checkout."""

    wheel: Path  # the wheel built from this checkout
    bin: Path  # pipx's bin folder: its `remediate` command
    away: Path  # the folder holding it all


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from this checkout, installed by `pipx install` (a virtual environment
    of its own, as users install it) at the versions of uv.lock."""
    root = tmp_path_factory.mktemp("wheel")
    uv("build", "--wheel", "--out-dir", str(root / "dist"))
    (wheel,) = (root / "dist").glob("remediate-*.whl")
    pins = root / "pins.txt"
    uv("export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-o", str(pins))
    pipx = Path(sys.executable).with_name("pipx")
    result = subprocess.run(
        [str(pipx), "install", f"--pip-args=-c {pins}", str(wheel)],
        env={**os.environ, "PIPX_HOME": str(root / "pipx"), "PIPX_BIN_DIR": str(root / "bin")},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return Installed(wheel=wheel, bin=root / "bin", away=root)
