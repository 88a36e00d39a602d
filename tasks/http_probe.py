"""HTTP probes of the guarded app (`APP_URL`): a route, and a login as a known-good probe user.

A 404, 405 or 422 from a probe means the probe does not fit the app (a wrong path, a form sent
as JSON): `misconfigured` says so, and the runbooks report a configuration problem naming the
setting instead of treating the app as broken (a restart would fix nothing).
"""

from __future__ import annotations

import time

import httpx
from prefect.cache_policies import NONE
from pydantic import BaseModel, Field, SecretStr

from remediate.tasks.steps import task

__all__ = ["MISCONFIGURED", "HttpProbe", "misconfiguration", "probe_http", "probe_login"]


MISCONFIGURED = frozenset({404, 405, 422})


class HttpProbe(BaseModel):
    ok: bool
    status: int | None
    latency_ms: float
    detail: str
    # The access token a successful login returned (never logged or shown).
    token: str | None = Field(default=None, repr=False, exclude=True)

    @property
    def misconfigured(self) -> bool:
        return self.status in MISCONFIGURED


@task(name="probe-http", cache_policy=NONE, tags=["http", "read-only"])
def probe_http(
    base_url: str, *, path: str, timeout_seconds: float = 10.0, token: str | None = None
) -> HttpProbe:
    """GET a route of the app (as the probe user, with `token`); a 2xx within the timeout is
    healthy. Redirects are followed (FastAPI redirects a route to its trailing slash)."""
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(url, timeout=timeout_seconds, follow_redirects=True, headers=headers)
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
    app_url: str,
    *,
    path: str,
    email: str,
    password: SecretStr,
    timeout_seconds: float = 10.0,
    form: str = "oauth2",
) -> HttpProbe:
    """POST the probe user's credentials to the login route; a 2xx is a working login.

    `form="oauth2"`: `username` and `password` form-encoded (OAuth2's password grant, FastAPI's
    `OAuth2PasswordRequestForm`: the FastAPI template's `/api/v1/login/access-token`, which
    answers 400 to wrong credentials and 422 to a JSON body); `form="json"`: `{"email",
    "password"}` as JSON."""
    url = app_url.rstrip("/") + "/" + path.lstrip("/")
    started = time.perf_counter()
    secret = password.get_secret_value()
    body: dict[str, object] = (
        {"data": {"username": email, "password": secret}}
        if form == "oauth2"
        else {"json": {"email": email, "password": secret}}
    )
    try:
        response = httpx.post(url, timeout=timeout_seconds, **body)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return HttpProbe(
            ok=False,
            status=None,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail=f"POST {url}: {type(exc).__name__}",
        )
    latency = (time.perf_counter() - started) * 1000
    ok = 200 <= response.status_code < 300
    token = None
    if ok:
        try:
            token = str(response.json().get("access_token") or "") or None
        except (ValueError, AttributeError):
            token = None
    return HttpProbe(
        ok=ok,
        status=response.status_code,
        latency_ms=latency,
        detail=f"POST {url} as {email}: HTTP {response.status_code} in {latency:.0f} ms",
        token=token,
    )


def misconfiguration(probe: HttpProbe, *, setting: str) -> str:
    """What to tell a person when a probe does not fit the app."""
    return (
        f"configuration problem, not an outage: {probe.detail} ({setting}"
        + (
            "; the FastAPI template's are APP_HEALTH_PATH=/api/v1/utils/health-check/,"
            " APP_LOGIN_PATH=/api/v1/login/access-token, APP_LOGIN_FORM=oauth2)"
        )
        + "; nothing was restarted"
    )
