"""The container engine the set-up provides: podman's Docker Engine API, driven by the docker SDK.

Later runbooks restart, inspect and read logs of compose services through this API; this test
proves the set-up left a working engine and a runnable locally built image.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import docker
import pytest

DOCKER_HOST = os.environ.get("TEST_DOCKER_HOST", "unix:///run/podman/podman.sock")
IMAGE = os.environ.get("TEST_IMAGE", "localhost/remediate-test:3")


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    try:
        client = docker.DockerClient(base_url=DOCKER_HOST, timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no container engine at {DOCKER_HOST} (run scripts/setup.sh): {exc}")
    yield client
    for container in client.containers.list(all=True, filters={"label": "remediate.test=1"}):
        container.remove(force=True)
    client.close()


def test_labelled_container_runs_restarts_and_logs(engine: docker.DockerClient) -> None:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    container = engine.containers.run(
        IMAGE,
        ["/bin/sh", "-c", "echo started; exec sleep 300"],
        name=name,
        detach=True,
        labels={
            "remediate.test": "1",
            "com.docker.compose.project": "rt",
            "com.docker.compose.service": "backend",
        },
    )
    found = engine.containers.list(filters={"label": "com.docker.compose.service=backend"})
    assert name in {c.name for c in found}
    deadline = time.monotonic() + 10
    while b"started" not in container.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"started" in container.logs()
    assert container.exec_run(["/bin/echo", "exec-ok"]).output.strip() == b"exec-ok"
    container.restart(timeout=1)
    container.reload()
    assert container.status == "running"
    container.remove(force=True)
    assert name not in {c.name for c in engine.containers.list(all=True)}
