"""A status page (Atlassian Statuspage's API, or one that speaks it): a component's status.

Setting it tries a few times and never raises: the result is a `Delivery`
(`remediate.tasks.delivery`). Reading it tries once and says None when the page does not answer.
"""

from __future__ import annotations

from pydantic import SecretStr

from remediate.tasks.delivery import Delivery, _send

__all__ = ["statuspage_read", "statuspage_status"]


def statuspage_status(
    base_url: str, api_key: SecretStr, *, component_id: str, status: str, attempts: int = 3
) -> Delivery:
    """Set a component's status (operational, degraded_performance, partial_outage,
    major_outage) on a Statuspage-compatible API."""
    response, why = _send(
        "PATCH",
        f"{base_url.rstrip('/')}/components/{component_id}",
        attempts=attempts,
        json={"component": {"status": status}},
        headers={"Authorization": f"OAuth {api_key.get_secret_value()}"},
    )
    ok = response is not None and response.status_code < 300
    return Delivery(channel="statuspage", delivered=ok, detail=f"{component_id} {status}: {why}")


def statuspage_read(base_url: str, api_key: SecretStr, *, component_id: str) -> str | None:
    """A component's current status, or None if the page does not say."""
    response, _ = _send(
        "GET",
        f"{base_url.rstrip('/')}/components/{component_id}",
        attempts=1,
        headers={"Authorization": f"OAuth {api_key.get_secret_value()}"},
    )
    if response is None or response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    status = body.get("status") if isinstance(body, dict) else None
    return str(status) if status is not None else None
