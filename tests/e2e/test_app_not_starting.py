"""app-not-starting on a real compose-labelled project (seed 000): a crashed backend is restarted;
a missing variable is escalated without a restart, its value never shown."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from remediate.drills import ASSETS
from remediate.flows.app_not_starting import app_not_starting
from tests.e2e.conftest import DOCKER_HOST, answer, paused_run_where, start
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")
BACKEND = ASSETS / "backend.py"
SECRET = "s3cret-key-canary-0123456789abcdef"
REQUIRED = "SECRET_KEY PROJECT_NAME FIRST_SUPERUSER FIRST_SUPERUSER_PASSWORD DATABASE_URL"


@pytest.fixture
def project(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    name = f"rt-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DOCKER_HOST", DOCKER_HOST)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", name)

    def backend(**environment: str) -> Any:
        mounts = {
            sys.base_prefix: sys.base_prefix,
            str(BACKEND): "/app/backend.py",
            "/usr/lib/x86_64-linux-gnu": "/usr/lib/x86_64-linux-gnu",
            "/lib64": "/lib64",
        }
        return engine.containers.run(
            "localhost/remediate-test:3",
            [
                str(Path(sys.base_prefix) / "bin" / "python3"),
                "-u",
                "/app/backend.py",
                str(free_port()),
            ],
            detach=True,
            network_mode="host",
            environment={"REQUIRED": REQUIRED, **environment},
            volumes={src: {"bind": dst, "mode": "ro"} for src, dst in mounts.items()},
            labels={
                "com.docker.compose.project": name,
                "com.docker.compose.service": "backend",
                "remediate.test": "1",
            },
        )

    worker = engine.containers.run(
        "localhost/remediate-test:3",
        ["/bin/sh", "-c", "exec sleep 100000"],
        detach=True,
        labels={
            "com.docker.compose.project": name,
            "com.docker.compose.service": "worker",
            "remediate.test": "1",
        },
    )
    made: list[Any] = [worker]
    yield {
        "engine": engine,
        "name": name,
        "backend": lambda **e: made.append(backend(**e)) or made[-1],
        "worker": worker,
    }
    for container in made:
        container.remove(force=True)
    engine.close()


# The FastAPI template's backend environment (its compose.yml): DATABASE_URL, not POSTGRES_*.
FULL = {
    "SECRET_KEY": SECRET,
    "PROJECT_NAME": "shop",
    "FIRST_SUPERUSER": "admin@example.test",
    "FIRST_SUPERUSER_PASSWORD": "superuser-password-canary",
    "DATABASE_URL": "postgresql://postgres:pg-password-canary@db:5432/app",
}


def wait_status(container: Any, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"{container.name} is {container.status}, not {status}")


def test_crashed_backend_is_restarted(project: dict[str, Any]) -> None:
    backend = project["backend"](**FULL)
    wait_status(backend, "running")
    assert app_not_starting().status == "healthy"
    backend.kill()
    wait_status(backend, "exited")
    project["worker"].reload()
    worker_started = project["worker"].attrs["State"]["StartedAt"]

    future = start(flow=app_not_starting, requested_by="crash-test", settle_seconds=2)
    answer(paused_run_where("requested_by", "crash-test"), approve=True, approver="pat")
    outcome = future.result(timeout=90)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.causes == ["crashed"]
    assert outcome.actions[0].targets == [f"container {backend.name}"]
    wait_status(backend, "running")
    project["worker"].reload()
    assert project["worker"].attrs["State"]["StartedAt"] == worker_started  # left alone
    variables = [f.detail for f in outcome.findings if f.check == "variable"]
    assert f"SECRET_KEY: set ({len(SECRET)} characters)" in variables
    assert SECRET not in outcome.model_dump_json()
    assert "pg-password-canary" not in outcome.model_dump_json()


def test_missing_variable_is_escalated_without_a_restart(project: dict[str, Any]) -> None:
    backend = project["backend"](**{k: v for k, v in FULL.items() if k != "SECRET_KEY"})
    wait_status(backend, "exited")
    backend.reload()
    started = backend.attrs["State"]["StartedAt"]

    outcome = app_not_starting(auto_approve=True)

    assert outcome.status == "escalated"
    assert outcome.causes == ["missing-variable"]
    assert "SECRET_KEY: missing or empty" in outcome.summary
    assert any("SECRET_KEY field required" in f.detail for f in outcome.findings)
    backend.reload()
    assert backend.status == "exited" and backend.attrs["State"]["StartedAt"] == started
    assert "pg-password-canary" not in outcome.model_dump_json()


def test_dry_run_restarts_nothing(project: dict[str, Any]) -> None:
    backend = project["backend"](**FULL)
    wait_status(backend, "running")
    backend.kill()
    wait_status(backend, "exited")
    outcome = app_not_starting(dry_run=True)
    assert outcome.status == "planned"
    backend.reload()
    assert backend.status == "exited"


def test_declined_and_timed_out_restart_nothing(
    project: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = project["backend"](**FULL)
    wait_status(backend, "running")
    backend.kill()
    wait_status(backend, "exited")
    future = start(flow=app_not_starting, requested_by="decline-me")
    answer(paused_run_where("requested_by", "decline-me"), approve=False, approver="quin")
    assert future.result(timeout=60).status == "declined"
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert app_not_starting().status == "timed-out"
    backend.reload()
    assert backend.status == "exited"
