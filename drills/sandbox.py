"""A drill's disposable sandbox: everything it makes is named after the drill and removed after.

Databases are `remediate_drill_<id>_<n>` on DRILL_POSTGRES_URL's server, Redis keys start with
`remediate-drill-<id>:`, containers carry the compose project `remediate-drill-<id>` and the label
`remediate.drill`, files live in a temporary folder. Nothing else is touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from remediate.domain.settings import ConfigError

__all__ = [
    "ADMIN_URL",
    "DrillUnavailable",
    "Sandbox",
    "World",
    "git",
    "postgres_server",
    "reachable",
]

ADMIN_URL = os.environ.get("DRILL_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DRILL_REDIS_URL", "redis://127.0.0.1:6379/0")
DOCKER_HOST = os.environ.get("DRILL_DOCKER_HOST", "unix:///run/podman/podman.sock")
IMAGE = os.environ.get("DRILL_IMAGE", "localhost/remediate-test:3")
T = TypeVar("T")

Check = tuple[bool, str]


class DrillUnavailable(ConfigError):
    """A drill needs a local service this machine lacks; the message says which and how."""


@dataclass(kw_only=True)
class World:
    """A broken sandbox: what was done to it, the runbook's parameters, and how to tell it is
    fixed once the runbook has run."""

    story: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    check: Callable[[], list[Check]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PG_HOST_DIRS = [
    "/usr/lib/postgresql",
    "/usr/share/postgresql",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/etc/passwd",
    "/etc/group",
]


def postgres_server(port: int, *, max_connections: int | None = None) -> dict[str, Any]:
    """The `containers.run` arguments (command first) of a real PostgreSQL server on
    127.0.0.1:`port`, from this machine's own binaries mounted read-only into the test image; its
    data survives a stop and a start (`drills/assets/postgres.sh`)."""
    from remediate.drills import ASSETS

    environment = {"PGPORT": str(port)}
    if max_connections is not None:
        environment["PG_MAX_CONNECTIONS"] = str(max_connections)
    return {
        "command": ["/bin/sh", "/postgres.sh"],
        "user": "postgres",
        "environment": environment,
        "volumes": {
            **{d: {"bind": d, "mode": "ro"} for d in PG_HOST_DIRS},
            str(ASSETS / "postgres.sh"): {"bind": "/postgres.sh", "mode": "ro"},
        },
    }


def reachable(url: str) -> bool:
    """Whether PostgreSQL at `url` answers a query."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def git(repo: Path | str, *args: str) -> str:
    """`git -C repo ARGS…` (a list, never a shell); its output."""
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DrillUnavailable(f"drill set-up: {what} within {timeout:.0f} s")
        time.sleep(0.2)


class Sandbox:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.project = f"remediate-drill-{self.id}"
        self.key_prefix = f"remediate-drill-{self.id}:"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.project}-"))
        self.removed: list[str] = []
        self._stack = ExitStack()
        self._databases = 0
        self._engine: Any = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._engine is not None:
            self._engine.close()

    def on_close(self, callback: Callable[[], object]) -> None:
        self._stack.callback(callback)

    def enter(self, context: AbstractContextManager[T]) -> T:
        return self._stack.enter_context(context)

    def setenv(self, **values: str) -> None:
        """Settings for the runbook run (the drill restores the environment afterwards)."""
        os.environ.update(values)

    # PostgreSQL.

    def database(self) -> str:
        self._databases += 1
        name = f"remediate_drill_{self.id}_{self._databases}"
        try:
            with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0]
            raise DrillUnavailable(
                f"DRILL_POSTGRES_URL: cannot reach PostgreSQL: {first}"
            ) from None

        def drop() -> None:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            self.removed.append(f"database {name}")

        self.on_close(drop)
        return name

    @staticmethod
    def url(database: str) -> str:
        return ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"

    # Redis.

    def redis(self) -> Any:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, decode_responses=True)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise DrillUnavailable(f"DRILL_REDIS_URL: Redis does not answer ({exc})") from None

        def clean() -> None:
            keys = list(client.scan_iter(match=f"{self.key_prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            self.removed.append(f"{len(keys)} Redis key(s) {self.key_prefix}*")
            client.close()

        self.on_close(clean)
        return client

    # Containers (the Docker Engine API; podman's on this project's machines).

    def engine(self) -> Any:
        if self._engine is None:
            import docker

            try:
                engine = docker.DockerClient(base_url=DOCKER_HOST, timeout=30)
                engine.ping()
                engine.images.get(IMAGE)
            except Exception as exc:  # noqa: BLE001 - docker's errors vary by transport
                raise DrillUnavailable(
                    f"this drill needs a container engine at {DOCKER_HOST} (DRILL_DOCKER_HOST)"
                    f" with the image {IMAGE}; `scripts/setup.sh` makes both"
                    f" ({type(exc).__name__})"
                ) from None
            self._engine = engine
        return self._engine

    def container(self, command: list[str], *, service: str, **options: Any) -> Any:
        labels = {
            "com.docker.compose.project": self.project,
            "com.docker.compose.service": service,
            "remediate.drill": self.id,
        }
        made = self.engine().containers.run(
            IMAGE, command, detach=True, labels=labels, network_mode="host", **options
        )

        def remove() -> None:
            with suppress(Exception):
                made.remove(force=True)
            self.removed.append(f"container {made.name} ({service})")

        self.on_close(remove)
        return made

    def host_python(
        self,
        script: Path,
        args: list[str],
        *,
        service: str,
        environment: dict[str, str] | None = None,
        mounts: dict[str, str] | None = None,
    ) -> Any:
        """A container running `script` with this machine's Python, mounted read-only."""
        volumes = {
            sys.base_prefix: sys.base_prefix,
            str(script): f"/srv/{script.name}",
            "/usr/lib/x86_64-linux-gnu": "/usr/lib/x86_64-linux-gnu",
            "/lib64": "/lib64",
            **(mounts or {}),
        }
        return self.container(
            [str(Path(sys.base_prefix) / "bin" / "python3"), "-u", f"/srv/{script.name}", *args],
            service=service,
            environment=environment or {},
            volumes={src: {"bind": dst, "mode": "ro"} for src, dst in volumes.items()},
        )
