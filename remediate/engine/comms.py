"""One incident's outward life: declare, page, status page, the clock and its escalations, the
resolve messages, the follow-up issue and the post-mortem draft.

`IncidentRun` drives it during a run; the watchdog (`flows/incident_watchdog.py`) drives it for an
incident whose run is gone. Every delivery goes through a `Notifier` (a thread per channel: a
failing endpoint delays nothing) and ends as a `notified` event in the timeline; none can fail the
remediation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from remediate.domain.models import Incident, Severity
from remediate.domain.settings import Settings
from remediate.engine import catalogue, lifecycle
from remediate.store.database import Store
from remediate.tasks.delivery import Delivery, Notifier
from remediate.tasks.github import github_issue
from remediate.tasks.pagerduty import pagerduty_event
from remediate.tasks.slack import IncidentCard, declare, escalated, slack_message
from remediate.tasks.statuspage import statuspage_status

__all__ = ["IncidentComms"]

log = logging.getLogger(__name__)

STATUS_PAGE = {
    "P1": "major_outage",
    "P2": "partial_outage",
    "P3": "degraded_performance",
    "P4": "degraded_performance",
}
PAGER_SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}
PAGED = frozenset({"P1", "P2"})  # P3/P4 page only when a person is needed


def prevention_of(runbook: catalogue.Runbook) -> str:
    return runbook.prevention


@dataclass(kw_only=True)
class IncidentComms:
    runbook: catalogue.Runbook
    resource: str
    incident_id: str
    settings: Settings
    store: Store
    severity: Severity
    # A dry run tells nobody: no chat message, page, status page change or issue.
    silent: bool = False
    notifier: Notifier = field(init=False)
    _clock: threading.Timer | None = field(default=None, init=False)
    _paged: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.notifier = Notifier(self._recorded)

    @classmethod
    def for_incident(
        cls, incident: Incident, *, settings: Settings, store: Store, silent: bool = False
    ) -> IncidentComms:
        return cls(
            silent=silent,
            runbook=catalogue.get(incident.runbook),
            resource=incident.resource,
            incident_id=incident.id,
            settings=settings,
            store=store,
            severity=incident.severity,
        )

    @property
    def card(self) -> IncidentCard:
        return IncidentCard(
            title=f"{self.runbook.id} on {self.resource}",
            severity=self.severity,
            component=self.runbook.component,
            incident_id=self.incident_id,
            owner=self.settings.incident_owner,
            eta=self.runbook.eta,
        )

    def _recorded(self, delivery: Delivery) -> None:
        self.store.record(
            self.incident_id,
            "notified",
            detail=delivery.detail,
            data={
                "channel": delivery.channel,
                "delivered": delivery.delivered,
                **({"url": delivery.url} if delivery.url else {}),
            },
        )

    # Channels.

    def slack(self, text: str, *, blocks: list[dict[str, object]] | None = None) -> None:
        url, attempts = self.settings.slack_webhook_url, self.settings.notify_attempts
        if url is not None and not self.silent:
            self.notifier.send(
                "slack",
                lambda: slack_message(url, text, attempts=attempts, blocks=blocks),
            )

    def page(self, action: str, *, summary: str = "", severity: str | None = None) -> None:
        key = self.settings.pagerduty_routing_key
        if key is None or self.silent:
            return
        if action == "trigger":
            self._paged = True
        details: dict[str, object] = {
            "incident": self.incident_id,
            "runbook": self.runbook.id,
            "resource": self.resource,
        }
        self.notifier.send(
            "pagerduty",
            lambda: pagerduty_event(
                key,
                url=self.settings.pagerduty_events_url,
                action=action,
                dedup_key=f"remediate-{self.incident_id}",
                summary=summary or f"{self.card.title} ({self.severity})",
                severity=severity or PAGER_SEVERITY[self.severity],
                component=self.runbook.component,
                details=details,
                attempts=self.settings.notify_attempts,
            ),
        )

    def status_page(self, status: str) -> None:
        s = self.settings
        component = s.statuspage_components.get(self.runbook.component)
        if not (s.statuspage_url and s.statuspage_api_key and component) or self.silent:
            return
        base, key = s.statuspage_url, s.statuspage_api_key
        self.notifier.send(
            "statuspage",
            lambda: statuspage_status(
                base, key, component_id=component, status=status, attempts=s.notify_attempts
            ),
        )

    def flush(self) -> None:
        if not self.notifier.flush(timeout=60):
            log.warning("notifications still pending after 60 s for incident %s", self.incident_id)

    # The lifecycle.

    def declared(self, *, impact: str, opened_at: datetime) -> None:
        self.slack(declare(self.card, impact=impact))
        if self.severity in PAGED:
            self.page("trigger", summary=f"{self.card.title}: {impact}")
        self.status_page(STATUS_PAGE[self.severity])
        if not self.silent:
            self.arm_clock(opened_at)

    def arm_clock(self, opened_at: datetime) -> None:
        """Escalate by itself when the resolution target passes, paused approval or not."""
        self.stop_clock()
        targets = lifecycle.targets_for(self.runbook.id, self.severity, self.settings)
        due = opened_at + targets.resolution
        delay = max(0.0, (due - self.store.now()).total_seconds())
        self._clock = threading.Timer(delay, self.target_missed)
        self._clock.daemon = True
        self._clock.start()

    def stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def raise_severity(self, causes: list[str]) -> None:
        raised, reasons = lifecycle.raised_severity(self.severity, causes)
        if raised != self.severity:
            before, self.severity = self.severity, raised
            self.store.set_incident_severity(self.incident_id, severity=raised)
            self.store.record(
                self.incident_id,
                "severity-raised",
                detail=f"{before} -> {raised}: " + "; ".join(reasons),
                data={"from": before, "to": raised, "reasons": reasons},
            )
            incident = self.store.incident(self.incident_id)
            if incident is not None:
                self.arm_clock(incident.opened_at)
            if not self._paged:
                self.page("trigger", summary=f"{self.card.title}: " + "; ".join(reasons))
        for escalation in lifecycle.escalation_for(
            self.runbook.id, causes=causes, settings=self.settings, overdue=False
        ):
            self.escalate_to(escalation)

    def target_missed(self) -> None:
        """The resolution target passed with the incident open: call the next level."""
        try:
            incident = self.store.incident(self.incident_id)
            if incident is None or incident.closed_at is not None:
                return
            targets = lifecycle.targets_for(self.runbook.id, self.severity, self.settings)
            minutes = targets.resolution.total_seconds() / 60
            if not self.store.record_once(
                self.incident_id,
                "target-missed",
                detail=f"not resolved within the {self.severity} target of {minutes:g} min",
            ):
                return  # the run's own clock or the watchdog got there first
            causes = self._causes()
            for escalation in lifecycle.escalation_for(
                self.runbook.id, causes=causes, settings=self.settings, overdue=True
            ):
                self.escalate_to(escalation)
        except Exception as exc:  # noqa: BLE001 - a timer thread must not die silently
            log.warning("escalating incident %s failed: %s", self.incident_id, exc)

    def _causes(self) -> list[str]:
        for event in reversed(self.store.timeline(self.incident_id)):
            if event.kind == "diagnosed":
                return list(event.data.get("causes", []))
        return []

    def escalate_to(
        self, escalation: lifecycle.Escalation, *, evidence: Sequence[str] = ()
    ) -> None:
        events = self.store.timeline(self.incident_id)
        checklist = lifecycle.checklist_lines(events)
        who = ", ".join(escalation.contacts)
        self.store.record(
            self.incident_id,
            "escalated",
            actor="remediate",
            detail=f"to {lifecycle.LEVEL_NAMES[escalation.level]} ({who}): {escalation.reason}",
            data={
                "level": escalation.level,
                "contacts": escalation.contacts,
                "notify": escalation.notify,
                "reason": escalation.reason,
                "checklist": checklist,
            },
        )
        self.slack(
            escalated(
                self.card,
                reason=f"{escalation.reason}; to {lifecycle.LEVEL_NAMES[escalation.level]}",
                evidence=list(evidence),
                contacts=escalation.contacts,
                notify=escalation.notify,
                checklist=checklist,
            )
        )
        self.page(
            "trigger",
            summary=f"{self.card.title}: {escalation.reason}, escalated to {who}",
            severity="critical",
        )

    def ended(
        self,
        status: str,
        *,
        causes: list[str],
        resolution: str = "",
        needs_person: str = "",
        evidence: Sequence[str] = (),
    ) -> None:
        """The run is over: resolve everywhere, or hand over to a person; then the post-mortem."""
        self.stop_clock()
        prevention = prevention_of(self.runbook)
        if status == "resolved":
            self.page("resolve")
            self.status_page("operational")
            self._follow_up(causes=causes, resolution=resolution, prevention=prevention)
        elif status == "planned":
            if self._paged:
                self.page("resolve")
            self.status_page("operational")
        else:
            events = self.store.timeline(self.incident_id)
            self.slack(
                escalated(
                    self.card,
                    reason=needs_person,
                    evidence=list(evidence),
                    contacts=[self.settings.escalation_contacts.get("L1", "@devops-oncall")],
                    checklist=lifecycle.checklist_lines(events),
                )
            )
            self.page("trigger", summary=f"{self.card.title}: {needs_person}", severity="critical")
        self.flush()
        if self.severity in PAGED and status != "planned":
            self.write_postmortem(causes=causes, prevention=prevention)

    def _follow_up(self, *, causes: list[str], resolution: str, prevention: str) -> None:
        s = self.settings
        if not (s.github_repo and s.github_token) or self.silent:
            return
        repo, token = s.github_repo, s.github_token
        title = f"Prevent {self.runbook.id} ({', '.join(causes) or 'incident'}) on {self.resource}"
        body = "\n".join(
            [
                f"Incident {self.incident_id} ({self.severity}, {self.runbook.component}) was"
                f" resolved by remediate: {resolution}.",
                "",
                f"Root cause: {', '.join(causes) or 'not determined'}",
                "",
                "## Preventive measures",
                *[f"- [ ] {item.strip()}" for item in prevention.split(";") if item.strip()],
                "",
                f"Timeline: `remediate incident {self.incident_id}`",
            ]
        )
        self.notifier.send(
            "github",
            lambda: github_issue(
                s.github_api_url,
                repo,
                token,
                title=title,
                body=body,
                labels=["incident", "prevention", self.severity],
                attempts=s.notify_attempts,
            ),
        )

    def write_postmortem(self, *, causes: list[str], prevention: str) -> str | None:
        incident = self.store.incident(self.incident_id)
        if incident is None:
            return None
        events = self.store.timeline(self.incident_id)
        follow_up = next(
            (
                e.data.get("url")
                for e in events
                if e.kind == "notified" and e.data.get("channel") == "github" and e.data.get("url")
            ),
            None,
        )
        markdown = lifecycle.postmortem_markdown(
            incident, events, causes=causes, prevention=prevention, follow_up=follow_up
        )
        self.store.save_postmortem(self.incident_id, markdown)
        self.store.record(
            self.incident_id,
            "post-mortem",
            detail=f"draft written ({len(events)} events): remediate incident"
            f" {self.incident_id} --postmortem",
        )
        try:
            from prefect.artifacts import create_markdown_artifact

            create_markdown_artifact(
                key=f"postmortem-{self.runbook.id}",
                markdown=markdown,
                description=f"Post-mortem draft of incident {self.incident_id}",
            )
        except Exception as exc:  # noqa: BLE001 - outside a run there is no artifact to make
            log.info("post-mortem artifact not published: %s", type(exc).__name__)
        return markdown
