"""The drills' small backend app (`drills/assets/backend.py`, answering as the FastAPI
full-stack template's backend does) in a compose-labelled container of the test image running
this machine's Python, on the podman engine: what the app-not-starting, auth-failures,
auth-server-health and api-500-errors tests act on. What each test sets around it (its settings,
its other services, when it restarts) stays in the test."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import docker

from remediate.drills import ASSETS
from tests.e2e.conftest import DOCKER_HOST, run_host_python, wait_http

__all__ = ["BACKEND", "Backend", "BackendProject"]

BACKEND = ASSETS / "backend.py"


@dataclass(frozen=True)
class Backend:
    """A backend container, and the URL it answers on."""

    container: Any
    url: str


class BackendProject:
    """A compose project of its own (`rt-…`) on the podman engine, its `backend` service the
    drills' backend; `close()` removes every container in `containers` and closes the engine."""

    def __init__(self) -> None:
        self.engine = docker.DockerClient(base_url=DOCKER_HOST)
        self.name = f"rt-{uuid.uuid4().hex[:8]}"
        self.containers: list[Any] = []

    @property
    def env(self) -> dict[str, str]:
        """The settings pointing a runbook at this project: DOCKER_HOST, COMPOSE_PROJECT_NAME."""
        return {"DOCKER_HOST": DOCKER_HOST, "COMPOSE_PROJECT_NAME": self.name}

    def start_backend(
        self,
        port: int,
        *,
        environment: dict[str, str] | None = None,
        mounts: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Backend:
        """backend.py listening on `port` (`mounts`: host path to container path, read-only),
        once it answers /health unless not `wait`."""
        container = run_host_python(
            self.engine,
            BACKEND,
            [str(port)],
            project=self.name,
            service="backend",
            environment=environment,
            mounts=mounts,
        )
        self.containers.append(container)
        backend = Backend(container, f"http://127.0.0.1:{port}")
        if wait:
            wait_http(f"{backend.url}/health", container)
        return backend

    def remove_containers(self) -> None:
        while self.containers:
            self.containers.pop(0).remove(force=True)

    def close(self) -> None:
        self.remove_containers()
        self.engine.close()
