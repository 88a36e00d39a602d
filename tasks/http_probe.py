"""HTTP probes of the guarded app (`APP_URL`): a login as a known-good probe user."""

from __future__ import annotations

import time

import httpx
from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, SecretStr

__all__ = ["HttpProbe", "probe_http", "probe_login"]


class HttpProbe(BaseModel):
    ok: bool
    status: int | None
    latency_ms: float
    detail: str


@task(name="probe-http", cache_policy=NONE, tags=["http", "read-only"])
def probe_http(base_url: str, *, path: str, timeout_seconds: float = 10.0) -> HttpProbe:
    """GET a route of the app; a 2xx within the timeout is healthy."""
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    started = time.perf_counter()
    try:
        response = httpx.get(url, timeout=timeout_seconds)
    except httpx.HTTPError as exc:
        return HttpProbe(
            ok=False,
            status=None,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail=f"GET {url}: {type(exc).__name__}",
        )
    latency = (time.perf_counter() - started) * 1000
    return HttpProbe(
        ok=200 <= response.status_code < 300,
        status=response.status_code,
        latency_ms=latency,
        detail=f"GET {url}: HTTP {response.status_code} in {latency:.0f} ms",
    )


@task(name="probe-login", cache_policy=NONE, tags=["http", "read-only"])
def probe_login(
    app_url: str, *, path: str, email: str, password: SecretStr, timeout_seconds: float = 10.0
) -> HttpProbe:
    """POST the probe user's credentials to the login route; a 2xx is a working login."""
    url = app_url.rstrip("/") + "/" + path.lstrip("/")
    started = time.perf_counter()
    try:
        response = httpx.post(
            url,
            json={"email": email, "password": password.get_secret_value()},
            timeout=timeout_seconds,
        )
    except httpx.HTTPError as exc:
        return HttpProbe(
            ok=False,
            status=None,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail=f"POST {url}: {type(exc).__name__}",
        )
    latency = (time.perf_counter() - started) * 1000
    ok = 200 <= response.status_code < 300
    return HttpProbe(
        ok=ok,
        status=response.status_code,
        latency_ms=latency,
        detail=f"POST {url} as {email}: HTTP {response.status_code} in {latency:.0f} ms",
    )
