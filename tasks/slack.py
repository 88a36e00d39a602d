"""Slack: the incident messages, in the shape of seed 002's Slack templates, and posting them.

The texts (`declare`, `approval_requested`, `resolved`, `escalated`, each over an `IncidentCard`),
the mrkdwn escaping and the Block Kit of an approval are pure. `slack_message` posts to an incoming
webhook a few times and never raises: it returns a `Delivery` (`remediate.tasks.delivery`). The
answer to an Approve/Decline click is the receiver's (`remediate/receiver/slack.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from remediate.domain.models import Plan
from remediate.tasks.delivery import Delivery, _send

__all__ = [
    "IncidentCard",
    "approval_blocks",
    "approval_requested",
    "declare",
    "escalated",
    "mrkdwn",
    "resolved",
    "slack_message",
]


# What the messages say: seed 002's templates.


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
    links: list[tuple[str, str]] | None = None,
) -> str:
    lines = [
        f"⏸️ APPROVAL NEEDED: {card.title} ({card.severity})",
        f"Component: {card.component}",
        f"Plan: {plan.summary}",
    ]
    lines += [f"• {a.name}: {a.blast_radius} object(s) on {a.resource}" for a in plan.actions]
    if link:
        lines.append(f"Answer here (once, before it expires): {link}")
    for who, url in links or []:
        lines.append(
            f"Answer as {who} (once, before it expires): {url}"
            if who
            else f"Answer here (once, before it expires): {url}"
        )
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


def escalated(
    card: IncidentCard,
    *,
    reason: str,
    evidence: list[str],
    contacts: list[str] | None = None,
    notify: list[str] | None = None,
    checklist: list[str] | None = None,
) -> str:
    lines = [
        f"🔺 INCIDENT ESCALATED: {card.title} ({card.severity})",
        f"Component: {card.component}",
        "Status: Needs a person",
        f"Reason: {reason}",
    ]
    if contacts:
        lines.append(f"Escalated to: {', '.join(contacts)}")
    if notify:
        lines.append(f"For information: {', '.join(notify)}")
    lines += [f"• {item}" for item in evidence[:10]]
    if checklist:
        lines += ["Before you escalate (filled in by the run):", *checklist]
    lines += [f"Owner: {card.owner}", f"Incident: {card.incident_id}"]
    return "\n".join(lines)


# Slack's shapes, and the incoming webhook.


def mrkdwn(text: str) -> str:
    """Text for Slack's mrkdwn, escaped as Slack asks (`&`, `<`, `>`): a Redis key, a commit
    subject or a log line holding `<!channel>` or `<https://evil|click>` pings and links nobody."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def approval_blocks(text: str, *, plan: Plan, value: str) -> list[dict[str, object]]:
    """Block Kit for an approval message: the text, the plan's actions with their blast radius,
    and Approve/Decline buttons (`action_id` approve / decline, `value` opaque and signed)."""
    actions = "\n".join(
        f"• *{mrkdwn(a.name)}*: {a.blast_radius} object(s) on `{mrkdwn(a.resource)}`"
        for a in plan.actions
    )
    blocks: list[dict[str, object]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(text)[:2900]}},
    ]
    if actions:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": actions[:2900]}})
    blocks.append(
        {
            "type": "actions",
            "block_id": "remediate-approval",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": "decline",
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Decline"},
                    "value": value,
                },
            ],
        }
    )
    return blocks


def slack_message(
    webhook_url: SecretStr,
    text: str,
    *,
    attempts: int = 3,
    blocks: list[dict[str, object]] | None = None,
) -> Delivery:
    body: dict[str, object] = {"text": mrkdwn(text)}
    if blocks:
        body["blocks"] = blocks
    response, why = _send("POST", webhook_url.get_secret_value(), attempts=attempts, json=body)
    ok = response is not None and response.status_code < 300
    return Delivery(channel="slack", delivered=ok, detail=text.splitlines()[0] if ok else why)
