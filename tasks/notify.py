"""Incident messages in the shape of seed 002's Slack templates, and their delivery to Slack,
PagerDuty (Events API v2), a status page (Atlassian Statuspage's API) and GitHub (follow-up issues).

The message builders are pure. Each delivery tries a few times and never raises: it returns a
`Delivery` saying what happened. `Notifier` sends them from a thread per channel, so a failing
endpoint delays neither the remediation nor the other channels; `flush()` waits for what is queued
and every attempt ends as a `notified` event in the incident's timeline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from remediate.domain.models import Plan

__all__ = [
    "Delivery",
    "IncidentCard",
    "Notifier",
    "approval_blocks",
    "approval_requested",
    "declare",
    "escalated",
    "github_issue",
    "mrkdwn",
    "pagerduty_event",
    "resolved",
    "slack_message",
    "statuspage_read",
    "statuspage_status",
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


# Delivery to each system: a few tries, never an exception.


@dataclass(frozen=True, kw_only=True)
class Delivery:
    channel: str
    delivered: bool
    detail: str = ""
    url: str | None = None


def _send(
    method: str,
    url: str,
    *,
    attempts: int,
    json: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response | None, str]:
    """The response once it is not worth retrying (success or a 4xx), or None and why."""
    problem = "not attempted"
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.request(method, url, json=json, headers=headers, timeout=5.0)
            if response.status_code < 500 and response.status_code != 429:
                return response, f"HTTP {response.status_code}"
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt < attempts:
            time.sleep(0.5 * attempt)
    return None, problem


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
        return str(response.json().get("status"))
    except ValueError:
        return None


def github_issue(
    api_url: str,
    repo: str,
    token: SecretStr,
    *,
    title: str,
    body: str,
    labels: list[str],
    attempts: int = 3,
) -> Delivery:
    """Open an issue in `owner/name` (REST API); the delivery carries its html_url."""
    response, why = _send(
        "POST",
        f"{api_url.rstrip('/')}/repos/{repo}/issues",
        attempts=attempts,
        json={"title": title, "body": body, "labels": labels},
        headers={
            "Authorization": f"Bearer {token.get_secret_value()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    ok = response is not None and response.status_code == 201
    url = None
    if ok and response is not None:
        try:
            url = str(response.json().get("html_url") or "") or None
        except ValueError:
            url = None
    return Delivery(channel="github", delivered=ok, detail=f"issue in {repo}: {why}", url=url)


Record = Callable[[Delivery], None]


class Notifier:
    """Deliveries in the background, one thread per channel, each result recorded in order."""

    def __init__(self, record: Record) -> None:
        self._record = record
        self._queues: dict[str, queue.Queue[Callable[[], Delivery] | None]] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def send(self, channel: str, deliver: Callable[[], Delivery]) -> None:
        with self._lock:
            if channel not in self._queues:
                self._queues[channel] = queue.Queue()
                thread = threading.Thread(
                    target=self._work, args=(self._queues[channel],), daemon=True
                )
                thread.start()
                self._threads.append(thread)
            self._queues[channel].put(deliver)

    def _work(self, jobs: queue.Queue[Callable[[], Delivery] | None]) -> None:
        while True:
            job = jobs.get()
            try:
                if job is None:
                    return
                try:
                    result = job()
                except Exception as exc:  # noqa: BLE001 - a delivery never raises out
                    result = Delivery(channel="?", delivered=False, detail=type(exc).__name__)
                if not result.delivered:
                    log.warning("%s notification not delivered: %s", result.channel, result.detail)
                try:
                    self._record(result)
                except Exception as exc:  # noqa: BLE001 - the store may be down; keep going
                    log.warning("could not record a %s notification: %s", result.channel, exc)
            finally:
                jobs.task_done()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued delivery is done (True), or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        for jobs in list(self._queues.values()):
            while jobs.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.02)
        return all(not jobs.unfinished_tasks for jobs in self._queues.values())
