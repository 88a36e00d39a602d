"""Sentry's API (`SENTRY_API_URL`, `SENTRY_AUTH_TOKEN`, `SENTRY_ORG`, `SENTRY_PROJECT`): rates."""

from __future__ import annotations

import httpx
from prefect.cache_policies import NONE
from pydantic import BaseModel, SecretStr

from remediate.tasks.steps import task

__all__ = ["ErrorRate", "error_rate"]


class ErrorRate(BaseModel):
    ok: bool
    per_minute: float | None
    detail: str


@task(
    name="sentry-error-rate",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["sentry", "read-only"],
)
def error_rate(
    api_url: str, *, token: SecretStr, org: str, project: str, query: str, minutes: int = 5
) -> ErrorRate:
    """Events matching `query` per minute over the last `minutes`, from Sentry's events API."""
    url = f"{api_url.rstrip('/')}/api/0/organizations/{org}/events/"
    try:
        response = httpx.get(
            url,
            params={
                "field": "count()",
                "query": query,
                "statsPeriod": f"{minutes}m",
                "project": project,
            },
            headers={"Authorization": f"Bearer {token.get_secret_value()}"},
            timeout=10,
        )
        response.raise_for_status()
        count = float(response.json()["data"][0]["count()"])
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        return ErrorRate(
            ok=False,
            per_minute=None,
            detail=f"Sentry ({api_url}) could not be read: {type(exc).__name__}",
        )
    rate = count / minutes
    return ErrorRate(
        ok=True,
        per_minute=rate,
        detail=f"{query}: {rate:.1f}/min over the last {minutes} min (Sentry)",
    )
