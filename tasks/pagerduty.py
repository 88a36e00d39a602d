"""PagerDuty's Events API v2: trigger, acknowledge or resolve an incident's alert by its dedup key.

A few tries, never an exception: the result is a `Delivery` (`remediate.tasks.delivery`).
"""

from __future__ import annotations

from pydantic import SecretStr

from remediate.tasks.delivery import Delivery, _send

__all__ = ["pagerduty_event"]


def pagerduty_event(
    routing_key: SecretStr,
    *,
    url: str,
    action: str,
    dedup_key: str,
    summary: str = "",
    severity: str = "critical",
    source: str = "remediate",
    component: str = "",
    details: dict[str, object] | None = None,
    attempts: int = 3,
) -> Delivery:
    """Events API v2: trigger, acknowledge or resolve the alert with this dedup key."""
    body: dict[str, object] = {
        "routing_key": routing_key.get_secret_value(),
        "event_action": action,
        "dedup_key": dedup_key,
    }
    if action == "trigger":
        body["payload"] = {
            "summary": summary[:1024],
            "source": source,
            "severity": severity,
            "component": component,
            "custom_details": details or {},
        }
    response, why = _send("POST", url, attempts=attempts, json=body)
    ok = response is not None and response.status_code == 202
    return Delivery(channel="pagerduty", delivered=ok, detail=f"{action} {dedup_key}: {why}")
