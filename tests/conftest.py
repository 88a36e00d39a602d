"""Shared fixtures: real PostgreSQL databases, a real Prefect server, and the product's settings.

Nothing here skips: a service that does not answer stops the session with an error naming it.
Every database a test creates has the `rt_` prefix and is dropped by the fixture that made it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from remediate.engine.prefect_api import start_server, wait_healthy
from tests.support.ports import free_port
from tests.support.sessions import Herd

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent


def db_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


# Prefect reads its settings when first imported, which a test module's conftest may do before any
# hook runs: point it at this session's server (started by the `prefect_server` fixture) right now.
_HOME = tempfile.mkdtemp(prefix="rt-prefect-home-")
_PORT = free_port()
os.environ.update(
    {
        "PREFECT_HOME": _HOME,
        "PREFECT_API_URL": f"http://127.0.0.1:{_PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The server's scheduler looks for schedules to fill every 10 s (60 s by default).
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "REMEDIATE_HOME": _HOME,
    }
)


def pytest_sessionstart(session: pytest.Session) -> None:
    problems = []
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        problems.append(f"PostgreSQL at {PG_ADMIN_URL}: {str(exc).strip().splitlines()[0]}")
    try:
        with socket.create_connection(
            ("127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])), 3
        ) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(16).startswith(b"+PONG"):
                problems.append("Redis did not answer PING")
    except OSError as exc:
        problems.append(f"Redis at {REDIS_URL}: {exc}")
    if problems:
        pytest.exit("required services are not running: " + "; ".join(problems), returncode=3)


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


def create_database(prefix: str = "rt") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    assert name.startswith("rt"), "tests drop only the databases they created"
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def make_database() -> Iterator[Callable[[], str]]:
    """Create sandbox databases on demand; every one is dropped after the test."""
    created: list[str] = []

    def make() -> str:
        created.append(create_database())
        return created[-1]

    yield make
    for name in created:
        drop_database(name)


@pytest.fixture
def sandbox(make_database: Callable[[], str]) -> str:
    """One sandbox database's name."""
    return make_database()


@pytest.fixture(scope="session")
def store_url() -> Iterator[str]:
    name = create_database("rt_store")
    yield db_url(name)
    drop_database(name)


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, store_url: str, sandbox: str, tmp_path: Path
) -> dict[str, str]:
    """The product's settings for one test: the sandbox as target, fast approvals, no cooldown,
    a spool of its own (what one test's run kept on disk never reaches another's store)."""
    values = {
        "REMEDIATION_SPOOL_DIR": str(tmp_path / "spool"),
        "TARGET_DATABASE_URL": db_url(sandbox),
        "REMEDIATION_DATABASE_URL": store_url,
        "REMEDIATION_COOLDOWN_SECONDS": "0",
        "REMEDIATION_BUDGET_MAX": "1000",
        "APPROVAL_TIMEOUT_SECONDS": "60",
        "APPROVAL_POLL_SECONDS": "0.5",
        "REMEDIATION_LOCK_TIMEOUT_SECONDS": "30",
    }
    from remediate.drills.runner import REAL_SYSTEMS  # every setting that points at a real system

    for name in (
        *REAL_SYSTEMS,
        "APPROVERS",
        "APPROVAL_REQUIRE_DISTINCT_APPROVER",
        "REMEDIATION_MAX_BLAST_RADIUS",
        "REMEDIATION_ENVIRONMENT",
        "INCIDENT_TARGETS",
        "ESCALATION_CONTACTS",
        "SENTRY_DSN",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tempfile.gettempdir())  # no stray .env is read
    return values


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect server (PostgreSQL-backed) for the session; its API URL."""
    port = _PORT
    api_url = os.environ["PREFECT_API_URL"]
    name = create_database("rt_prefect")
    log_path = Path(os.environ["PREFECT_HOME"]) / "server.log"
    proc = start_server(port=port, log_path=log_path, database_url=db_url(name), ui=False)
    if not wait_healthy(api_url, timeout=120, process=proc):
        proc.kill()
        drop_database(name)
        pytest.exit(f"the Prefect server did not start:\n{log_path.read_text()[-2000:]}", 3)
    yield api_url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    drop_database(name)


@pytest.fixture
def herd() -> Iterator[Herd]:
    """Sessions a test opens; all closed afterwards."""
    opened = Herd()
    yield opened
    opened.close()
