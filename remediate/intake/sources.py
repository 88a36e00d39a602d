"""The payloads each alert source sends, as their documentation shows them, turned into `Alert`s.

Models validate only what routing needs and ignore the rest, so a source adding fields breaks
nothing; a missing or mistyped field that routing needs is a 422 naming it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from remediate.domain.models import Alert

__all__ = [
    "SENTRY_RESOURCES",
    "AlertmanagerWebhook",
    "GenericAlert",
    "GrafanaWebhook",
    "from_alertmanager",
    "from_generic",
    "from_grafana",
    "from_sentry",
    "sentry_model",
]

Text = Annotated[str, StringConstraints(max_length=4096)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Labels = Annotated[dict[Name, Text], Field(max_length=128)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _labels_fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


# Prometheus Alertmanager, webhook payload version 4.


class AmAlert(_Lenient):
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: Text  # noqa: N815 - the wire name
    endsAt: Text | None = None  # noqa: N815
    generatorURL: Text | None = None  # noqa: N815
    fingerprint: Text | None = None


class AlertmanagerWebhook(_Lenient):
    version: Literal["4"]
    groupKey: Text  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    status: Literal["firing", "resolved"]
    receiver: Text
    groupLabels: Labels = Field(default_factory=dict)  # noqa: N815
    commonLabels: Labels = Field(default_factory=dict)  # noqa: N815
    commonAnnotations: Labels = Field(default_factory=dict)  # noqa: N815
    externalURL: Text = ""  # noqa: N815
    alerts: Annotated[list[AmAlert], Field(min_length=1, max_length=1000)]


def _from_am_alert(alert: AmAlert, *, source: Literal["alertmanager", "grafana"]) -> Alert:
    labels = dict(alert.labels)
    name = labels.get("alertname") or "unnamed"
    return Alert(
        source=source,
        status=alert.status,
        name=name,
        fingerprint=alert.fingerprint or _labels_fingerprint(labels),
        labels=labels,
        summary=alert.annotations.get("summary") or alert.annotations.get("description", ""),
        severity=labels.get("severity"),
        starts_at=alert.startsAt,
        runbook=labels.get("runbook"),
    )


def from_alertmanager(payload: AlertmanagerWebhook) -> list[Alert]:
    return [_from_am_alert(a, source="alertmanager") for a in payload.alerts]


# Grafana unified alerting's webhook contact point (Alertmanager's shape plus Grafana's fields).


class GrafanaAlert(AmAlert):
    values: dict[str, Any] | None = None
    valueString: Text | None = None  # noqa: N815
    dashboardURL: Text | None = None  # noqa: N815
    panelURL: Text | None = None  # noqa: N815
    silenceURL: Text | None = None  # noqa: N815


class GrafanaWebhook(_Lenient):
    receiver: Text = ""
    status: Literal["firing", "resolved"]
    orgId: int | None = None  # noqa: N815
    alerts: Annotated[list[GrafanaAlert], Field(min_length=1, max_length=1000)]
    groupLabels: Labels = Field(default_factory=dict)  # noqa: N815
    commonLabels: Labels = Field(default_factory=dict)  # noqa: N815
    externalURL: Text = ""  # noqa: N815
    version: Text | None = None
    groupKey: Text | None = None  # noqa: N815
    title: Text = ""
    state: Text = ""
    message: Text = ""


def from_grafana(payload: GrafanaWebhook) -> list[Alert]:
    return [_from_am_alert(a, source="grafana") for a in payload.alerts]


# Sentry's integration-platform webhooks; the resource is the Sentry-Hook-Resource header.


class SentryEvent(_Lenient):
    issue_id: int | Name
    project: int | Name
    title: Text = ""
    level: Text = "error"
    web_url: Text = ""


class SentryEventAlertData(_Lenient):
    event: SentryEvent
    triggered_rule: Text = ""


class SentryEventAlert(_Lenient):
    action: Literal["triggered"]
    data: SentryEventAlertData


class SentryAlertRule(_Lenient):
    id: int | Name
    name: Text
    projects: list[Name] = Field(default_factory=list)


class SentryMetricAlertBody(_Lenient):
    id: int | Name
    title: Text = ""
    alert_rule: SentryAlertRule


class SentryMetricAlertData(_Lenient):
    metric_alert: SentryMetricAlertBody
    description_title: Text = ""
    description_text: Text = ""


class SentryMetricAlert(_Lenient):
    action: Literal["critical", "warning", "resolved"]
    data: SentryMetricAlertData


class SentryProject(_Lenient):
    id: int | Name | None = None
    slug: Name


class SentryIssue(_Lenient):
    id: int | Name
    title: Text = ""
    level: Text = "error"
    project: SentryProject


class SentryIssueData(_Lenient):
    issue: SentryIssue


class SentryIssueWebhook(_Lenient):
    action: Literal["created", "resolved", "assigned", "archived", "unresolved", "ignored"]
    data: SentryIssueData


SENTRY_RESOURCES: dict[str, type[BaseModel]] = {
    "event_alert": SentryEventAlert,
    "metric_alert": SentryMetricAlert,
    "issue": SentryIssueWebhook,
}


def sentry_model(resource: str) -> type[BaseModel] | None:
    return SENTRY_RESOURCES.get(resource)


def from_sentry(payload: BaseModel) -> list[Alert]:
    if isinstance(payload, SentryEventAlert):
        event = payload.data.event
        project = str(event.project)
        return [
            Alert(
                source="sentry",
                status="firing",
                name=payload.data.triggered_rule or event.title or "sentry issue alert",
                fingerprint=f"sentry-issue:{event.issue_id}",
                labels={"project": project, "level": event.level, "resource": "event_alert"},
                summary=event.title,
                severity=event.level,
            )
        ]
    if isinstance(payload, SentryMetricAlert):
        body = payload.data.metric_alert
        rule = body.alert_rule
        return [
            Alert(
                source="sentry",
                status="resolved" if payload.action == "resolved" else "firing",
                name=rule.name,
                fingerprint=f"sentry-metric-alert:{body.id}",
                labels={
                    "project": rule.projects[0] if rule.projects else "",
                    "level": payload.action,
                    "resource": "metric_alert",
                },
                summary=payload.data.description_title or body.title,
                severity=payload.action,
            )
        ]
    assert isinstance(payload, SentryIssueWebhook)
    issue = payload.data.issue
    firing = payload.action in {"created", "unresolved"}
    return (
        [
            Alert(
                source="sentry",
                status="firing" if firing else "resolved",
                name=issue.title or "sentry issue",
                fingerprint=f"sentry-issue:{issue.id}",
                labels={"project": issue.project.slug, "level": issue.level, "resource": "issue"},
                summary=issue.title,
                severity=issue.level,
            )
        ]
        if payload.action != "assigned"
        else []
    )


# The generic form (CONTRACT.md): anything that can POST JSON.


class GenericAlert(_Lenient):
    runbook: Name | None = None
    fingerprint: Name
    severity: Text | None = None
    labels: Labels = Field(default_factory=dict)
    summary: Text = ""
    status: Literal["firing", "resolved"] = "firing"
    name: Text | None = None


def from_generic(payload: GenericAlert) -> list[Alert]:
    return [
        Alert(
            source="generic",
            status=payload.status,
            name=payload.name or payload.labels.get("alertname") or payload.runbook or "alert",
            fingerprint=payload.fingerprint,
            labels=dict(payload.labels),
            summary=payload.summary,
            severity=payload.severity,
            runbook=payload.runbook,
        )
    ]
