"""Finding (or starting) the Prefect server the CLI talks to.

An approval is answered from another process (`remediate approve`, the UI), so runs must live on a
server both can reach: `PREFECT_API_URL` as Prefect itself reads it (the environment, the active
profile of `prefect config set`, `prefect.toml`, `.env`) when the user has one. Otherwise a local
server on 127.0.0.1:`REMEDIATE_PREFECT_PORT` (4200; embedded SQLite) **owned** by the command that
starts it (`remediate serve`, or one `remediate run`): identified by a file in the state folder,
and stopped when that command ends, SIGKILL included (the kernel sends it SIGTERM when its parent
dies). A later command reuses it only while it is that owner's; whatever else answers on the port
is refused, never adopted.
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

from remediate.domain.settings import ConfigError

__all__ = [
    "LOCAL_API_URL",
    "ensure_api",
    "private_dir",
    "require_api",
    "run_settings",
    "start_server",
]

LOCAL_PORT = int(os.environ.get("REMEDIATE_PREFECT_PORT") or 4200)
LOCAL_API_URL = f"http://127.0.0.1:{LOCAL_PORT}/api"
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


def configured_api_url() -> str | None:
    """PREFECT_API_URL as Prefect reads it: the environment, the active profile (`prefect config
    set`), `prefect.toml` or `.env`; None when none of them sets it."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import Settings

    url = Settings().api.url  # read now, not the copy Prefect froze when it was imported
    return str(url) if url else None


def _configure(api_url: str) -> None:
    os.environ["PREFECT_API_URL"] = api_url
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "prefect.context" in sys.modules:  # Prefect froze its settings when it was imported
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


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


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux)."""
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def start_server(
    *,
    port: int,
    log_path: Path,
    database_url: str | None = None,
    ui: bool = True,
    owned: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `prefect server start` in the background (its own session: Ctrl-C here spares it).

    `database_url` (postgresql://…) puts the server on PostgreSQL instead of the embedded SQLite.
    `owned`: it stops when this process ends, however it ends.
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
            preexec_fn=_die_with_parent if owned else None,
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
    """The configured server's URL, or the local one while its owner runs; it must already
    answer (ConfigError otherwise)."""
    api_url = configured_api_url() or LOCAL_API_URL
    if not _healthy(api_url):
        raise ConfigError(
            f"PREFECT_API_URL ({api_url}): no Prefect server answers there"
            " (is the run you are answering still running?)"
        )
    _configure(api_url)
    return api_url


SERVER_FILE = "prefect-server.json"


def owned_server_answers() -> bool:
    """Whether what answers on the local port is a server a command of this installation
    started (its file names a live `prefect server` process on that port)."""
    import json

    try:
        record = json.loads((STATE_DIR / SERVER_FILE).read_text())
        cmdline = Path(f"/proc/{int(record['pid'])}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (
        record.get("port") == LOCAL_PORT
        and b"server" in cmdline
        and any(part.endswith(b"prefect") for part in cmdline)
    )


def local_server(*, owner: str, start_timeout: float = 90.0) -> subprocess.Popen[bytes] | None:
    """Use the local server of this installation when one answers (None), else start one owned
    by this process (returned). Anything else answering on the port is refused."""
    import json

    if _healthy(LOCAL_API_URL):
        if not owned_server_answers():
            raise ConfigError(
                f"a server this installation did not start answers on {LOCAL_API_URL}: set"
                " PREFECT_API_URL to it (or `prefect config set PREFECT_API_URL=…`) to use it,"
                " stop it, or set REMEDIATE_PREFECT_PORT to another port"
            )
        _configure(LOCAL_API_URL)
        return None
    private_dir(STATE_DIR)
    log_path = STATE_DIR / "prefect-server.log"
    print(
        f"starting a Prefect server for {owner} on {LOCAL_API_URL} (SQLite; it stops with"
        f" {owner}; log: {log_path})",
        file=sys.stderr,
    )
    process = start_server(port=LOCAL_PORT, log_path=log_path, owned=True)
    (STATE_DIR / SERVER_FILE).write_text(
        json.dumps({"pid": process.pid, "port": LOCAL_PORT, "owner": owner, "by": os.getpid()})
    )
    if not wait_healthy(LOCAL_API_URL, timeout=start_timeout, process=process):
        process.terminate()
        raise ConfigError(
            f"the local Prefect server did not start within {start_timeout:.0f} s; see {log_path}"
        )
    _configure(LOCAL_API_URL)
    return process


def ensure_api(*, owner: str = "this command", start_timeout: float = 90.0) -> str:
    """The configured server's URL; else the local one, started for this command if none of
    this installation's answers (and stopped when the command ends)."""
    if configured_api_url():
        return require_api()
    local_server(owner=owner, start_timeout=start_timeout)
    return LOCAL_API_URL
