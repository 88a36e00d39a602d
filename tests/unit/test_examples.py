"""The configuration examples (examples/, .env.example) held against the product itself: the
alert names of the exporters' own rule sets through the real router, the metric names of the
dashboard and the self-monitoring rules against the metrics the receiver exports, and every
setting of docs/operations.md in .env.example. No services: tests/integration/test_examples.py
runs the real tools (promtool, amtool) on the same files.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from remediate.domain.models import Alert
from remediate.domain.settings import Settings, load_settings
from remediate.engine import catalogue
from remediate.intake.dispatch import INCIDENT_STATUSES, Metrics, StoreGauges
from remediate.intake.routing import Router, load_router
from remediate.receiver import create_app
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
CONFIGURED = frozenset({"app"})  # the test's TARGET_DATABASE_URL database

# Where each alert name comes from (the newest stored snapshot of each repository, read 2026-12).
PG_MIXIN = "prometheus-community/postgres_exporter postgres_mixin/alerts/postgres.libsonnet"
APA_PG = "samber/awesome-prometheus-alerts dist/rules/postgresql/postgres-exporter.yml"
REDIS_MIXIN = "oliver006/redis_exporter contrib/redis-mixin/alerts/redis.libsonnet"
APA_REDIS = "samber/awesome-prometheus-alerts dist/rules/redis/oliver006-redis-exporter.yml"
BLACKBOX_MIXIN = "adinhodovic/blackbox-exporter-mixin alerts/alerts.libsonnet"
APA_BLACKBOX = "samber/awesome-prometheus-alerts dist/rules/blackbox/blackbox-exporter.yml"
APA_CADVISOR = "samber/awesome-prometheus-alerts dist/rules/docker-containers/google-cadvisor.yml"
APA_CADVISOR_DATA = "samber/awesome-prometheus-alerts _data/rules.yml (google/cAdvisor)"

# The labels each rule's expression leaves on its alert (the mixins aggregate by job/instance).
PG = {"job": "postgres", "instance": "postgres-exporter:9187"}
REDIS = {"job": "redis", "instance": "redis-exporter:9121"}
PROBE = {"job": "blackbox", "instance": "http://backend:8000/api/v1/utils/health-check/"}
CADVISOR = {"job": "cadvisor", "instance": "cadvisor:8080", "name": "app-backend-1"}

# (alert name, its source, the labels it carries, the runbook it starts)
EXPORTER_ALERTS = [
    ("PostgreSQLMaxConnectionsReached", PG_MIXIN, PG, "connection-pool-exhausted"),
    ("PostgreSQLHighConnections", PG_MIXIN, PG, "connection-pool-exhausted"),
    ("PostgreSQLDown", PG_MIXIN, PG, "database-connection-errors"),
    ("PostgresqlTooManyConnections", APA_PG, PG, "connection-pool-exhausted"),
    ("PostgresqlDown", APA_PG, PG, "database-connection-errors"),
    ("RedisDown", REDIS_MIXIN, REDIS, "rate-limiter"),
    ("RedisTooManyConnections", REDIS_MIXIN, REDIS, "rate-limiter"),
    ("RedisDown", APA_REDIS, REDIS, "rate-limiter"),
    ("RedisMissingMaster", APA_REDIS, {}, "rate-limiter"),
    ("RedisTooManyConnections", APA_REDIS, REDIS, "rate-limiter"),
    ("RedisRejectedConnections", APA_REDIS, REDIS, "rate-limiter"),
    ("BlackboxProbeFailed", BLACKBOX_MIXIN, PROBE, "auth-server-health"),
    ("BlackboxProbeFailed", APA_BLACKBOX, PROBE, "auth-server-health"),
    ("BlackboxProbeHttpFailure", APA_BLACKBOX, PROBE, "auth-server-health"),
    ("BlackboxSlowProbe", APA_BLACKBOX, PROBE, "auth-server-health"),
    ("BlackboxProbeSlowHttp", APA_BLACKBOX, PROBE, "auth-server-health"),
    ("ContainerKilled", APA_CADVISOR, CADVISOR, "app-not-starting"),
    ("ContainerAbsent", APA_CADVISOR, {}, "app-not-starting"),
    ("ContainerUnhealthy", APA_CADVISOR_DATA, CADVISOR, "app-not-starting"),
]

# Alerts of the same rule sets that no runbook fixes: starting one would restart or terminate
# something for the wrong reason, so they stay unroutable (recorded only).
NOT_OURS = [
    ("PostgreSQLSlowQueries", PG_MIXIN),
    ("PostgresHasTooManyRollbacks", PG_MIXIN),
    ("PostgresHasExporterErrors", PG_MIXIN),
    ("PostgresqlNotEnoughConnections", APA_PG),
    ("PostgresqlRestarted", APA_PG),
    ("PostgresqlExporterError", APA_PG),
    ("RedisOutOfMemory", REDIS_MIXIN),
    ("RedisClusterSlotFail", REDIS_MIXIN),
    ("RedisNotEnoughConnections", APA_REDIS),
    ("RedisTooManyMasters", APA_REDIS),
    ("RedisMissingBackup", APA_REDIS),
    ("BlackboxLowUptime30d", BLACKBOX_MIXIN),
    ("BlackboxSslCertificateWillExpireSoon", APA_BLACKBOX),
    ("BlackboxConfigurationReloadFailure", APA_BLACKBOX),
    ("BlackboxProbeSlowPing", APA_BLACKBOX),
    ("ContainerHighMemoryUsage", APA_CADVISOR),
    ("ContainerHighCpuUtilization", APA_CADVISOR),
    ("ContainerVolumeUsage", APA_CADVISOR),
]

# Names the embedded routes knew before the exporters' names were added: they keep their runbook.
EARLIER_NAMES = [
    ("PostgresTooManyConnections", "connection-pool-exhausted"),
    ("PostgresConnectionsHigh", "connection-pool-exhausted"),
    ("PostgresqlMaxConnectionsUsed", "connection-pool-exhausted"),
    ("PostgresUnreachable", "database-connection-errors"),
    ("RedisUnreachable", "rate-limiter"),
    ("RedisRateLimitStuck", "rate-limiter"),
    ("ContainerDown", "app-not-starting"),
    ("ContainerRestarting", "app-not-starting"),
    ("ComposeServiceDown", "app-not-starting"),
    ("HighHttp5xxRate", "api-500-errors"),
    ("High5xx", "api-500-errors"),
    ("ApiHighErrorRate", "api-500-errors"),
    ("Http5xxErrors", "api-500-errors"),
    ("HealthCheckFailed", "auth-server-health"),
    ("HealthCheckFailing", "auth-server-health"),
    ("AuthServerDown", "auth-server-health"),
    ("AuthServerSlow", "auth-server-health"),
    ("EmailDeliveryDelayed", "email-delivery"),
    ("SmtpDown", "email-delivery"),
    ("HighBounceRate", "email-delivery"),
    ("Frontend404", "frontend-404"),
    ("SpaDeepLink404", "frontend-404"),
]


@pytest.fixture(scope="module")
def router() -> Router:
    return load_router(None, databases=CONFIGURED)


def _alert(name: str, labels: dict[str, str], *, source: str = "alertmanager") -> Alert:
    return Alert.model_validate(
        {
            "source": source,
            "status": "firing",
            "name": name,
            "fingerprint": f"{name}:{sorted(labels.items())}",
            "labels": {"alertname": name, **labels},
        }
    )


@pytest.mark.parametrize(
    ("name", "source", "labels", "runbook"),
    EXPORTER_ALERTS,
    ids=[f"{name}-{source.split()[0]}" for name, source, _, _ in EXPORTER_ALERTS],
)
def test_the_exporters_alert_names_start_their_runbook(
    router: Router, name: str, source: str, labels: dict[str, str], runbook: str
) -> None:
    routed = router.route(_alert(name, labels))
    assert routed is not None, f"{name} ({source}) is unroutable"
    assert routed.runbook == runbook, source
    # The mixins aggregate by instance: no database named, the run takes the configured one.
    assert routed.parameters == {}
    assert routed.refused is None


def test_a_database_alert_names_its_database_through_datname(router: Router) -> None:
    for name in ("PostgreSQLHighConnections", "PostgresqlDown"):
        routed = router.route(_alert(name, {**PG, "datname": "app"}))
        assert routed is not None and routed.parameters == {"database": "app"}
        other = router.route(_alert(name, {**PG, "datname": "billing"}))
        assert other is not None and other.refused is not None  # not a configured target


@pytest.mark.parametrize(("name", "source"), NOT_OURS, ids=[n for n, _ in NOT_OURS])
def test_the_exporters_other_alerts_start_nothing(router: Router, name: str, source: str) -> None:
    assert router.route(_alert(name, PG)) is None, f"{name} ({source}) would start a runbook"


@pytest.mark.parametrize(("name", "runbook"), EARLIER_NAMES, ids=[n for n, _ in EARLIER_NAMES])
def test_the_names_routed_before_keep_their_runbook(
    router: Router, name: str, runbook: str
) -> None:
    routed = router.route(_alert(name, {}))
    assert routed is not None and routed.runbook == runbook


def test_sentry_routes_are_unchanged(router: Router) -> None:
    auth = router.route(_alert("Auth errors over 10 per minute", {}, source="sentry"))
    other = router.route(_alert("API 500s in production", {}, source="sentry"))
    assert auth is not None and auth.runbook == "rls-auth-failure"
    assert other is not None and other.runbook == "api-500-errors"


# examples/prometheus: the rules' alerts route where their comments say.


def _rules(name: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load((EXAMPLES / "prometheus" / name).read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


EXAMPLE_RULES = {
    "PostgresqlTooManyConnections": "connection-pool-exhausted",
    "PostgresqlDown": "database-connection-errors",
    "RedisDown": "rate-limiter",
    "RedisRejectedConnections": "rate-limiter",
    "AuthServerDown": "auth-server-health",
    "AuthServerSlow": "auth-server-health",
    "Frontend404": "frontend-404",
    "SmtpDown": "email-delivery",
    "ContainerKilled": "app-not-starting",
    "HighHttp5xxRate": "api-500-errors",
}


def test_every_example_rule_starts_its_runbook(router: Router) -> None:
    rules = _rules("rules.yml")
    assert {rule["alert"] for rule in rules} == set(EXAMPLE_RULES)
    for rule in rules:
        labels = {**rule.get("labels", {}), "datname": "app"}
        routed = router.route(_alert(rule["alert"], labels))
        assert routed is not None and routed.runbook == EXAMPLE_RULES[rule["alert"]]
        if "database" in routed.parameters:
            assert routed.parameters == {"database": "app"}


def test_the_self_monitoring_alerts_go_to_people_only(router: Router) -> None:
    rules = _rules("remediate-self.yml")
    assert rules
    for rule in rules:
        assert rule["labels"]["service"] == "remediate", rule["alert"]
        assert router.route(_alert(rule["alert"], rule["labels"])) is None, rule["alert"]
    am = yaml.safe_load((EXAMPLES / "alertmanager" / "alertmanager.yml").read_text())
    first = am["route"]["routes"][0]
    assert first["matchers"] == ['service="remediate"'] and first["receiver"] != "remediate"


# PromQL: the metric names an expression reads.

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "inf", "nan"}
STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, aggregations,
    keywords, label names (in matchers and in `by (…)` lists), durations or Grafana variables."""
    text = STRINGS.sub('""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


class _Store:
    """Answers StoreGauges' two reads as the incident store would (the real store's answers:
    tests/integration/test_examples.py)."""

    def incident_counts(self) -> dict[tuple[str, str], int]:
        return {("rate-limiter", "escalated"): 2}

    def latest_snapshot(self, kind: str, resource: str) -> dict[str, Any] | None:
        return {"finished_at": 1_700_000_000.5}


class _DownStore:
    def incident_counts(self) -> dict[tuple[str, str], int]:
        raise ConnectionError("the store is down")

    def latest_snapshot(self, kind: str, resource: str) -> dict[str, Any] | None:
        raise ConnectionError("the store is down")


def _gauges(store: object) -> StoreGauges:
    return StoreGauges(cast(Any, store), sweep_interval_seconds=300)


def product_metrics() -> set[str]:
    """Every metric name the receiver's /metrics can show (a counter as `_total`)."""
    registry = Metrics().registry
    registry.register(_gauges(_Store()))
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        else:
            names.add(family.name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    exprs = [rule["expr"] for rule in _rules("rules.yml")]
    assert set().union(*map(metric_names, exprs)) == {
        "pg_stat_activity_count",
        "pg_settings_max_connections",
        "pg_up",
        "redis_up",
        "redis_rejected_connections_total",
        "probe_success",
        "probe_duration_seconds",
        "probe_http_status_code",
        "container_last_seen",
        "http_requests_total",
    }
    tricky = (
        "max by (a) (x{b='1'} offset $__range) - 3 * y[5m] > bool 1e3"
        " or label_replace(z, 'k', 'v', 'l', '(.*)')"
    )
    assert metric_names(tricky) == {"x", "y", "z"}


def test_the_store_gauges_read_the_store_and_survive_it_down() -> None:
    families = {family.name: family for family in _gauges(_Store()).collect()}
    incidents = {
        (s.labels["runbook"], s.labels["status"]): s.value
        for s in families["remediate_incidents"].samples
    }
    assert incidents[("rate-limiter", "escalated")] == 2
    # Every runbook and status is there from the first scrape, so `offset` sees a first one.
    assert len(incidents) == len(catalogue.CATALOGUE) * len(INCIDENT_STATUSES)
    assert families["remediate_sweep_last_run_timestamp_seconds"].samples[0].value == 1.7e9 + 0.5
    assert families["remediate_store_up"].samples[0].value == 1
    down = {family.name: family for family in _gauges(_DownStore()).collect()}
    assert set(down) == {"remediate_store_up", "remediate_sweep_interval_seconds"}
    assert down["remediate_store_up"].samples[0].value == 0


def test_the_dashboard_reads_only_the_product_metrics_and_all_of_them() -> None:
    dashboard = json.loads((EXAMPLES / "grafana" / "remediate-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {"${datasource}"}
    used = set().union(*map(metric_names, exprs))
    exported = product_metrics()
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    families = {name.removesuffix("_total") for name in exported if not name.endswith("_created")}
    shown = {name.removesuffix("_total") for name in used}
    assert families <= shown, f"no panel for {sorted(families - shown)}"


def test_the_self_monitoring_rules_read_only_the_product_metrics() -> None:
    used = set().union(*(metric_names(rule["expr"]) for rule in _rules("remediate-self.yml")))
    assert used - product_metrics() == {"up"}  # Prometheus's own: the scrape answered


# Where each sender is pointed: the receiver's real routes and authentication.


def _app_routes() -> set[tuple[str, str]]:
    settings = load_settings(alert_webhook_token="t" * 24, alert_routes_file=None)
    app = create_app(settings, store=cast(Any, _Store()))
    return {
        (method, route.path)
        for route in app.routes
        for method in getattr(route, "methods", None) or ()
    }


def test_each_sender_points_at_a_route_the_receiver_serves() -> None:
    served = _app_routes()
    am = yaml.safe_load((EXAMPLES / "alertmanager" / "alertmanager.yml").read_text())
    [hook] = next(r for r in am["receivers"] if r["name"] == "remediate")["webhook_configs"]
    assert ("POST", urlsplit(hook["url"]).path) in served
    assert urlsplit(hook["url"]).path == "/alerts/alertmanager"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["type"] == "Bearer"
    assert hook["http_config"]["authorization"]["credentials_file"]
    # remediate is reached by every alert but its own, and people still get every alert.
    routes = am["route"]["routes"]
    assert routes[1]["receiver"] == "remediate" and routes[1]["continue"] is True
    assert "matchers" not in routes[1] and routes[-1]["receiver"] == am["route"]["receiver"]
    assert {"alertname", "datname"} <= set(am["route"]["group_by"])

    grafana = yaml.safe_load((EXAMPLES / "grafana" / "contact-point.yaml").read_text())
    [point] = grafana["contactPoints"]
    [webhook] = point["receivers"]
    assert webhook["type"] == "webhook" and webhook["disableResolveMessage"] is False
    assert ("POST", urlsplit(webhook["settings"]["url"]).path) in served
    assert urlsplit(webhook["settings"]["url"]).path == "/alerts/grafana"
    assert webhook["settings"]["authorization_scheme"] == "Bearer"
    assert webhook["settings"]["authorization_credentials"].startswith("$")  # from Grafana's env

    slack = yaml.safe_load((EXAMPLES / "slack" / "manifest.yaml").read_text())
    interactivity = slack["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert ("POST", urlsplit(interactivity["request_url"]).path) == ("POST", "/slack/interactions")
    assert ("POST", "/slack/interactions") in served
    assert slack["oauth_config"]["scopes"]["bot"] == ["incoming-webhook"]

    sentry = (EXAMPLES / "sentry" / "README.md").read_text()
    assert ("POST", "/alerts/sentry") in served and "/alerts/sentry" in sentry
    assert "SENTRY_CLIENT_SECRET" in sentry and "Sentry-Hook-Signature" in sentry


# .env.example: every setting of docs/operations.md, and only real ones.


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate((ROOT / ".env.example").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"line {number}: {line!r}"
        assert name not in values, f"{name} twice"
        values[name] = value
    return values


FIELDS = {name.upper(): name for name in Settings.model_fields}


def test_env_example_names_every_setting_of_operations_md_and_only_real_ones() -> None:
    example = _env_example()
    assert set(example) - set(FIELDS) == set(), "not settings"
    assert set(FIELDS) - set(example) == set(), "settings missing from .env.example"
    text = (ROOT / "docs" / "operations.md").read_text()
    named: set[str] = set()
    for token in re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]*\*?)`", text):
        if token.endswith("*"):
            named |= {f for f in FIELDS if f.startswith(token.removesuffix("*"))}
        else:
            named.add(token)
    prefect = {name for name in named if name.startswith("PREFECT_")}
    assert named - prefect - set(FIELDS) == set(), "operations.md names settings that do not exist"
    assert named - prefect <= set(example)
    whole = (ROOT / ".env.example").read_text()
    assert all(name in whole for name in prefect), "Prefect's settings are mentioned"


def test_env_example_values_are_the_defaults_and_secrets_are_empty() -> None:
    for name, value in _env_example().items():
        field = Settings.model_fields[FIELDS[name]]
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            assert value == "", f"{name} is a secret"
        if value == "":
            continue
        parsed = getattr(load_settings(**{FIELDS[name]: value}), FIELDS[name])
        default = field.get_default(call_default_factory=True)
        assert default is not PydanticUndefined
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        assert parsed == default, f"{name}={value} is not the default {default!r}"
