"""The product's image (Dockerfile, built by scripts/build-image.sh from Debian's packages: no
registry is reachable) run as the compose service of examples/compose/compose.remediate.yaml runs
it: non-root, the engine's socket mounted with its group added, the state in a volume, the
app's network. Beside a compose-labelled stack it fixes a real incident: the stack's database
container stopped, Alertmanager's alert, the container restarted with its data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
import yaml

from tests.conftest import PG_ADMIN_URL, ROOT, db_url
from tests.e2e.conftest import DOCKER_HOST, TOKEN, postgres_container
from tests.e2e.test_serve import wait_healthz
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")
CANARY = "image-db-password-7c1e"
ENGINE_GID = 4711  # the socket's group, as the docker group's id on a host
HEALTHCHECK = [
    "python3",
    "-c",
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=4)",
]


@pytest.fixture(scope="module")
def image() -> str:
    """The image of this tree (rebuilt only when what goes in changed)."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def engine_socket(tmp_path: Path) -> Iterator[Path]:
    """The engine's API on a socket of its own, owned by group ENGINE_GID with mode 0660, as
    Docker's /var/run/docker.sock is (root:docker): the image's non-root user reaches it only
    through `group_add`, as in the compose file."""
    folder = Path(f"/run/remediate-test-{uuid.uuid4().hex[:8]}")
    folder.mkdir(mode=0o755)
    socket = folder / "engine.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not socket.exists():
        assert time.monotonic() < deadline and service.poll() is None, "no engine socket"
        time.sleep(0.2)
    os.chown(socket, 0, ENGINE_GID)
    socket.chmod(0o660)
    yield socket
    service.terminate()
    service.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


def compose_service() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "examples" / "compose" / "compose.remediate.yaml").read_text())
    service: dict[str, Any] = compose["services"]["remediate"]
    return service


def test_the_image_beside_a_compose_stack_fixes_a_stopped_database(
    image: str, engine_socket: Path, env: dict[str, str], tmp_path: Path
) -> None:
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    project = f"rt-{uuid.uuid4().hex[:8]}"
    database, url = postgres_container(engine, password=CANARY, project=project)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)")
    store_name = f"rt_store_image_{uuid.uuid4().hex[:8]}"
    port = free_port()
    service = compose_service()
    # What the compose service sets, with this machine's values (host network: the test's
    # PostgreSQL, Redis and Prefect server are on 127.0.0.1).
    assert service["user"] == "remediate"
    assert "/var/run/docker.sock" in " ".join(service["volumes"])
    assert service["environment"]["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert service["group_add"] and service["healthcheck"]["test"][0] == "CMD"
    environment = {
        "DOCKER_HOST": "unix:///var/run/docker.sock",
        "COMPOSE_PROJECT_NAME": project,
        "TARGET_DATABASE_URL": url,
        "DATABASE_SERVICE": "db",
        "REMEDIATION_DATABASE_URL": db_url(store_name),
        "ALERT_WEBHOOK_TOKEN": TOKEN,
        "AUTO_APPROVE": "database-connection-errors:restart-database-container:*",
        "PREFECT_API_URL": os.environ["PREFECT_API_URL"],
        "SWEEP_INTERVAL_SECONDS": "3600",
        "REMEDIATION_COOLDOWN_SECONDS": "0",
    }
    remediate = engine.containers.run(
        image,
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        detach=True,
        network_mode="host",
        environment=environment,
        volumes={
            str(engine_socket): {"bind": "/var/run/docker.sock", "mode": "rw"},
            f"remediate-state-{project}": {"bind": "/var/lib/remediate", "mode": "rw"},
        },
        group_add=[str(ENGINE_GID)],
        labels={"remediate.test": "1"},
    )
    receiver = f"http://127.0.0.1:{port}"

    def gone() -> bool:
        remediate.reload()
        return bool(remediate.status != "running")

    try:
        try:
            wait_healthz(receiver, gone=gone, timeout=120)
        except AssertionError:
            raise AssertionError(remediate.logs()[-3000:].decode()) from None
        whoami = remediate.exec_run(["id", "-u"])
        assert whoami.output.decode().strip() == "10001"  # not root
        probe = [*HEALTHCHECK[:2], HEALTHCHECK[2].format(port=port)]
        assert remediate.exec_run(probe).exit_code == 0  # the image's own health check

        # The incident: the stack's database container stops; Alertmanager alerts with the
        # postgres_exporter mixin's name.
        database.stop(timeout=10)
        alert = json.loads(
            (ROOT / "tests" / "fixtures" / "alerts" / "alertmanager.json").read_text()
        )
        alert["alerts"][0]["labels"].update({"alertname": "PostgreSQLDown", "datname": "postgres"})
        alert["commonLabels"]["alertname"] = "PostgreSQLDown"
        response = httpx.post(
            f"{receiver}/alerts/alertmanager",
            json=alert,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 202, response.text

        deadline = time.monotonic() + 180
        row = None
        while row is None or row[0] not in {"resolved", "escalated", "failed"}:
            assert time.monotonic() < deadline, (row, remediate.logs()[-4000:].decode())
            time.sleep(0.5)
            with psycopg.connect(db_url(store_name), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT status FROM incidents WHERE runbook = 'database-connection-errors'"
                ).fetchone()
        assert row[0] == "resolved", remediate.logs()[-4000:].decode()
        database.reload()
        assert database.status == "running"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]
        logs = remediate.logs().decode()
        assert CANARY not in logs and TOKEN not in logs
    finally:
        remediate.remove(force=True)
        database.remove(force=True)
        for volume in engine.volumes.list(filters={"name": f"remediate-state-{project}"}):
            volume.remove(force=True)
        engine.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{store_name}" WITH (FORCE)')
