"""app-not-starting on a real compose-labelled project (seed 000): a crashed backend is restarted;
a missing variable is escalated without a restart, its value never shown."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from remediate.flows.app_not_starting import app_not_starting
from tests.e2e.conftest import answer, paused_run_where, start
from tests.support.backend import BackendProject
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")
SECRET = "s3cret-key-canary-0123456789abcdef"
REQUIRED = "SECRET_KEY PROJECT_NAME FIRST_SUPERUSER FIRST_SUPERUSER_PASSWORD DATABASE_URL"


@dataclass(frozen=True)
class Project:
    """A compose project with its worker service running; `backend()` adds a backend."""

    compose: BackendProject
    worker: Any

    def backend(self, **environment: str) -> Any:
        """A backend container on a port of its own, needing the REQUIRED variables (not waited
        for: without one it exits)."""
        backend = self.compose.start_backend(
            free_port(), environment={"REQUIRED": REQUIRED, **environment}, wait=False
        )
        return backend.container


@pytest.fixture
def project(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    compose = BackendProject()
    for name, value in compose.env.items():
        monkeypatch.setenv(name, value)
    worker = compose.engine.containers.run(
        "localhost/remediate-test:3",
        ["/bin/sh", "-c", "exec sleep 100000"],
        detach=True,
        labels={
            "com.docker.compose.project": compose.name,
            "com.docker.compose.service": "worker",
            "remediate.test": "1",
        },
    )
    compose.containers.append(worker)
    yield Project(compose, worker)
    compose.close()


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


def test_crashed_backend_is_restarted(project: Project) -> None:
    backend = project.backend(**FULL)
    wait_status(backend, "running")
    assert app_not_starting().status == "healthy"
    backend.kill()
    wait_status(backend, "exited")
    project.worker.reload()
    worker_started = project.worker.attrs["State"]["StartedAt"]

    future = start(flow=app_not_starting, requested_by="crash-test", settle_seconds=2)
    answer(paused_run_where("requested_by", "crash-test"), approve=True, approver="pat")
    outcome = future.result(timeout=90)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.causes == ["crashed"]
    assert outcome.actions[0].targets == [f"container {backend.name}"]
    wait_status(backend, "running")
    project.worker.reload()
    assert project.worker.attrs["State"]["StartedAt"] == worker_started  # left alone
    variables = [f.detail for f in outcome.findings if f.check == "variable"]
    assert f"SECRET_KEY: set ({len(SECRET)} characters)" in variables
    assert SECRET not in outcome.model_dump_json()
    assert "pg-password-canary" not in outcome.model_dump_json()


def test_missing_variable_is_escalated_without_a_restart(project: Project) -> None:
    backend = project.backend(**{k: v for k, v in FULL.items() if k != "SECRET_KEY"})
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


def test_dry_run_restarts_nothing(project: Project) -> None:
    backend = project.backend(**FULL)
    wait_status(backend, "running")
    backend.kill()
    wait_status(backend, "exited")
    outcome = app_not_starting(dry_run=True)
    assert outcome.status == "planned"
    backend.reload()
    assert backend.status == "exited"


def test_declined_and_timed_out_restart_nothing(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = project.backend(**FULL)
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
