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
from pathlib import Path

import httpx

from core.settings import ConfigError

__all__ = ["LOCAL_API_URL", "ensure_api", "require_api"]

LOCAL_API_URL = "http://127.0.0.1:4200/api"
STATE_DIR = Path(os.environ.get("REMEDIATE_HOME", Path.home() / ".remediate"))


def _healthy(api_url: str, *, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _configure(api_url: str) -> None:
    os.environ["PREFECT_API_URL"] = api_url
    # Each runbook run is short; a pause needs an answer within a second, not the default 10 s.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


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
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log_path = STATE_DIR / "prefect-server.log"
    prefect = Path(sys.executable).with_name("prefect")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    print(f"starting a local Prefect server on {LOCAL_API_URL} (log: {log_path})", file=sys.stderr)
    with log_path.open("ab") as log:
        subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", "4200"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        if _healthy(LOCAL_API_URL):
            _configure(LOCAL_API_URL)
            return LOCAL_API_URL
        time.sleep(0.5)
    raise ConfigError(
        f"the local Prefect server did not start within {start_timeout:.0f} s; see {log_path}"
    )
