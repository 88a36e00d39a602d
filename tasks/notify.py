"""Incident messages in the shape of seed 002's Slack templates, and their delivery.

The message builders are pure; `post_slack` sends one to a Slack incoming webhook with a few
retries and never raises: a failing chat must not fail or delay the remediation beyond its retries.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx
from prefect import task
from pydantic import SecretStr

from core.models import Plan

__all__ = [
    "IncidentCard",
    "approval_requested",
    "declare",
    "escalated",
    "post_slack",
    "resolved",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class IncidentCard:
    """What every message of one incident repeats."""

    title: str
    severity: str
    component: str
    incident_id: str
    owner: str
    eta: str


def declare(card: IncidentCard, *, impact: str) -> str:
    return "\n".join(
        [
            f"🚨 INCIDENT: {card.title} ({card.severity})",
            f"Component: {card.component}",
            "Status: Investigating",
            f"Impact: {impact}",
            f"ETA: {card.eta}",
            f"Owner: {card.owner}",
            f"Incident: {card.incident_id}",
        ]
    )


def approval_requested(
    card: IncidentCard,
    *,
    plan: Plan,
    flow_run_id: str,
    ui_url: str | None,
    timeout_seconds: int,
    link: str | None = None,
) -> str:
    lines = [
        f"⏸️ APPROVAL NEEDED: {card.title} ({card.severity})",
        f"Component: {card.component}",
        f"Plan: {plan.summary}",
    ]
    lines += [f"• {a.name}: {a.blast_radius} object(s) on {a.resource}" for a in plan.actions]
    if link:
        lines.append(f"Answer here (once, before it expires): {link}")
    lines += [
        f"Approve: remediate approve {flow_run_id}",
        f"Decline: remediate approve {flow_run_id} --deny",
        f"Waiting {timeout_seconds // 60} min {timeout_seconds % 60} s, then escalating"
        " with no action.",
    ]
    if ui_url:
        lines.append(f"Prefect UI: {ui_url}")
    lines.append(f"Incident: {card.incident_id}")
    return "\n".join(lines)


def resolved(
    card: IncidentCard, *, resolution: str, impact: str, root_cause: str, prevention: str
) -> str:
    return "\n".join(
        [
            f"✅ INCIDENT RESOLVED: {card.title}",
            f"Component: {card.component}",
            f"Resolution: {resolution}",
            f"Impact: {impact}",
            f"Root Cause: {root_cause}",
            f"Preventive Measures: {prevention}",
            f"Incident: {card.incident_id}",
        ]
    )


def escalated(card: IncidentCard, *, reason: str, evidence: list[str]) -> str:
    lines = [
        f"🔺 INCIDENT ESCALATED: {card.title} ({card.severity})",
        f"Component: {card.component}",
        "Status: Needs a person",
        f"Reason: {reason}",
    ]
    lines += [f"• {item}" for item in evidence[:10]]
    lines += [f"Owner: {card.owner}", f"Incident: {card.incident_id}"]
    return "\n".join(lines)


@task(name="post-slack", tags=["notify"])
def post_slack(webhook_url: SecretStr, text: str, *, attempts: int = 3) -> bool:
    """Post `text` to a Slack incoming webhook; True when Slack took it. Never raises."""
    problem = "not attempted"
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(webhook_url.get_secret_value(), json={"text": text}, timeout=5.0)
            if response.status_code < 300:
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # a 4xx other than 429 will not get better by retrying
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt < attempts:
            time.sleep(0.5 * attempt)
    log.warning("Slack notification not delivered: %s", problem)
    return False
