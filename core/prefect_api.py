"""Finding (or starting) the Prefect server the CLI talks to.

An approval is answered from another process (`remediate approve`, the UI), so runs must live on a
server both can reach: `PREFECT_API_URL` when the user has one, else a local server on
127.0.0.1:4200 that the first `remediate run` starts in the background (embedded SQLite default)
and later commands reuse. Import this module before Prefect: Prefect reads its settings at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.settings import ConfigError

__all__ = [
    "LOCAL_API_URL",
    "ensure_api",
    "private_dir",
    "require_api",
    "run_settings",
    "start_server",
]

LOCAL_API_URL = "http://127.0.0.1:4200/api"
STATE_DIR = Path(os.environ.get("REMEDIATE_HOME", Path.home() / ".remediate"))


def private_dir(path: Path) -> Path:
    """`path` made if missing, and readable by this user only (0700) even when it existed:
    the product's state and spool folders hold tokens, signing keys and incident records."""
    import stat

    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    # Never a shared folder someone pointed a setting at (a sticky /tmp, another user's).
    shared = info.st_mode & stat.S_ISVTX or info.st_uid != os.getuid()
    if info.st_mode & 0o777 != 0o700 and not shared:
        path.chmod(0o700)
    return path


def _healthy(api_url: str, *, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _configure(api_url: str) -> None:
    os.environ["PREFECT_API_URL"] = api_url
    # Each runbook run is short; a pause needs an answer within a second, not the default 10 s.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@contextmanager
def run_settings() -> Iterator[None]:
    """Prefect settings for running a runbook in this process.

    Flow heartbeats are off unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set: a sync flow joins its
    heartbeat thread at exit, which cost ~0.6 s of every ~1.1 s run in bench/. The incident store
    keeps every run's state, so a crashed run is still visible there as an open incident.
    """
    if os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY"):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def start_server(
    *, port: int, log_path: Path, database_url: str | None = None, ui: bool = True
) -> subprocess.Popen[bytes]:
    """Start `prefect server start` in the background (its own session: Ctrl-C here spares it).

    `database_url` (postgresql://…) puts the server on PostgreSQL instead of the embedded SQLite.
    """
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url.replace(
            "postgresql://", "postgresql+asyncpg://", 1
        )
    if not ui:
        env["PREFECT_UI_ENABLED"] = "false"
    prefect = Path(sys.executable).with_name("prefect")
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def wait_healthy(
    api_url: str, *, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> bool:
    """True once the server at `api_url` answers; False at the timeout or if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _healthy(api_url):
            return True
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.3)
    return False


def require_api() -> str:
    """The configured or local server's URL, which must already answer (exit 2 otherwise)."""
    api_url = os.environ.get("PREFECT_API_URL") or LOCAL_API_URL
    if not _healthy(api_url):
        raise ConfigError(
            f"PREFECT_API_URL ({api_url}): no Prefect server answers there"
            " (is the run you are answering still running?)"
        )
    _configure(api_url)
    return api_url


def ensure_api(*, start_timeout: float = 90.0) -> str:
    """The server's URL, starting the local one in the background if none is configured."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return require_api()
    if _healthy(LOCAL_API_URL):
        _configure(LOCAL_API_URL)
        return LOCAL_API_URL
    private_dir(STATE_DIR)
    log_path = STATE_DIR / "prefect-server.log"
    print(f"starting a local Prefect server on {LOCAL_API_URL} (log: {log_path})", file=sys.stderr)
    start_server(port=4200, log_path=log_path)
    if not wait_healthy(LOCAL_API_URL, timeout=start_timeout):
        raise ConfigError(
            f"the local Prefect server did not start within {start_timeout:.0f} s; see {log_path}"
        )
    _configure(LOCAL_API_URL)
    return LOCAL_API_URL
