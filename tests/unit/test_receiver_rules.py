"""Payload normalisation, routing rules and approval-link signatures: pure logic, no services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from remediate.domain.models import Alert
from remediate.domain.settings import ConfigError
from remediate.engine import approval_links
from remediate.intake import sources
from remediate.intake.routing import Route, Router, load_router
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "alerts"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_alertmanager_payload_becomes_one_alert_per_entry() -> None:
    payload = sources.AlertmanagerWebhook.model_validate_json(fixture("alertmanager.json"))
    [alert] = sources.from_alertmanager(payload)
    assert alert.name == "PostgresqlTooManyConnections"
    assert alert.fingerprint == "6c1a7b2f9d0e4a31"
    assert alert.labels["datname"] == "app"
    assert alert.starts_at == "2026-11-22T03:02:11.123Z"


def test_grafana_and_sentry_payloads_normalise() -> None:
    [g] = sources.from_grafana(sources.GrafanaWebhook.model_validate_json(fixture("grafana.json")))
    assert (g.source, g.name, g.fingerprint) == (
        "grafana",
        "PostgresTooManyConnections",
        "c6eadffa33fcdf37",
    )
    event = sources.SENTRY_RESOURCES["event_alert"].model_validate_json(
        fixture("sentry_event_alert.json")
    )
    [e] = sources.from_sentry(event)
    assert (e.fingerprint, e.name, e.status) == (
        "sentry-issue:1170820242",
        "API 500s in production",
        "firing",
    )
    metric = sources.SENTRY_RESOURCES["metric_alert"].model_validate_json(
        fixture("sentry_metric_alert.json")
    )
    [m] = sources.from_sentry(metric)
    assert (m.labels["project"], m.fingerprint) == ("backend", "sentry-metric-alert:7")
    issue = sources.SENTRY_RESOURCES["issue"].model_validate_json(fixture("sentry_issue.json"))
    [i] = sources.from_sentry(issue)
    assert (i.status, i.fingerprint) == ("resolved", "sentry-issue:1170820242")


def _alert(**values: object) -> Alert:
    base: dict[str, object] = {
        "source": "alertmanager",
        "status": "firing",
        "name": "x",
        "fingerprint": "f",
    }
    return Alert.model_validate(base | values)


def test_default_routes_map_common_alert_names_and_take_the_database_label() -> None:
    router = load_router(None)
    routed = router.route(_alert(name="PostgresqlTooManyConnections", labels={"datname": "app_db"}))
    assert routed is not None
    assert (routed.runbook, routed.parameters) == (
        "connection-pool-exhausted",
        {"database": "app_db"},
    )
    sentry = router.route(_alert(source="sentry", name="Auth errors over 10 per minute"))
    assert sentry is not None and sentry.runbook == "rls-auth-failure"
    assert router.route(_alert(name="DiskAlmostFull")) is None


def test_an_alert_naming_a_runbook_needs_no_rule() -> None:
    router = Router([])
    routed = router.route(_alert(name="rate-limiter"))
    assert routed is not None and routed.runbook == "rate-limiter"
    generic = router.route(
        _alert(source="generic", runbook="connection-pool-exhausted", labels={"database": "db1"})
    )
    assert generic is not None and generic.parameters == {"database": "db1"}


@pytest.mark.parametrize(
    "hostile",
    ["app'; DROP TABLE users; --", "app?host=evil.example", "$(reboot)", "a" * 64, "db/../x", ""],
)
def test_values_from_alerts_must_look_like_identifiers(hostile: str) -> None:
    router = load_router(None)
    routed = router.route(_alert(name="PostgresqlTooManyConnections", labels={"datname": hostile}))
    if hostile == "":
        assert routed is not None and routed.parameters == {}  # the flow's default target
    else:
        assert routed is None
    named = Router([]).route(
        _alert(runbook="connection-pool-exhausted", labels={"database": hostile})
    )
    assert named is None if hostile else named is not None


def test_same_target_from_any_source_is_one_incident() -> None:
    router = load_router(None)
    a = router.route(_alert(name="PostgresqlTooManyConnections", labels={"datname": "app"}))
    b = router.route(
        _alert(source="generic", runbook="connection-pool-exhausted", labels={"database": "app"})
    )
    c = router.route(_alert(name="PostgresqlTooManyConnections", labels={"datname": "other"}))
    assert a and b and c
    assert a.dedup_key == b.dedup_key != c.dedup_key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: [{runbook: nope, match: {name: x}}]", "unknown runbook 'nope'"),
        (
            "routes: [{runbook: rate-limiter, match: {name: x}, parameters: {database: a}}]",
            "database is not a parameter of rate-limiter",
        ),
        (
            "routes: [{runbook: rate-limiter, match: {name: x}, parameters: {auto_approve: true}}]",
            "AUTO_APPROVE",
        ),
        ("routes: [{runbook: rate-limiter, match: {name: '~('}}]", "bad regex"),
        ("routes: [{runbook: rate-limiter}]", "routes.0.match"),
        ("routes: [{", "not valid YAML"),
        (
            "routes: [{runbook: connection-pool-exhausted, match: {name: x},"
            " parameters: {usage_threshold: lots}}]",
            "usage_threshold",
        ),
    ],
)
def test_a_wrong_routes_file_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        load_router(str(path))
    assert str(caught.value).startswith("ALERT_ROUTES_FILE")


def test_missing_routes_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_router(str(tmp_path / "absent.yaml"))


def test_routes_file_rules_apply_in_order_with_label_templates(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        json.dumps(
            {
                "routes": [
                    {
                        "runbook": "connection-pool-exhausted",
                        "match": {"team": "data", "name": "~Pool.*"},
                        "parameters": {"database": "$labels.db", "idle_minutes": 0},
                    },
                    {"runbook": "rate-limiter", "match": {"team": "data"}},
                ]
            }
        )
    )
    router = load_router(str(path))
    first = router.route(_alert(name="PoolFull", labels={"team": "data", "db": "sales"}))
    assert first is not None
    assert first.parameters == {"database": "sales", "idle_minutes": 0}
    second = router.route(_alert(name="Other", labels={"team": "data"}))
    assert second is not None and second.runbook == "rate-limiter"
    assert Route(runbook="rate-limiter", match={"a": "b"}).parameters == {}


SECRET = SecretStr("link-secret-for-tests")


def test_a_signed_link_verifies_and_carries_its_claims() -> None:
    token = approval_links.sign(
        SECRET, flow_run_id="run-1", incident_id="inc-1", summary="terminate 3", ttl_seconds=60
    )
    claims = approval_links.verify(SECRET, token)
    assert (claims.flow_run_id, claims.incident_id, claims.summary) == (
        "run-1",
        "inc-1",
        "terminate 3",
    )


def test_forged_tampered_and_expired_links_are_refused() -> None:
    token = approval_links.sign(
        SECRET, flow_run_id="run-1", incident_id="inc-1", summary="s", ttl_seconds=60, now=1000
    )
    with pytest.raises(approval_links.LinkError, match="bad signature"):
        approval_links.verify(SecretStr("another-secret"), token, now=1001)
    payload, mac = token.split(".")
    with pytest.raises(approval_links.LinkError, match="bad signature"):
        approval_links.verify(SECRET, payload[:-2] + "AA." + mac, now=1001)
    with pytest.raises(approval_links.LinkError, match="expired"):
        approval_links.verify(SECRET, token, now=1060)
    with pytest.raises(approval_links.LinkError, match="malformed"):
        approval_links.verify(SECRET, "no-dot-here")
    # Found by the fuzzer: a non-ASCII token once raised TypeError (a 500).
    with pytest.raises(approval_links.LinkError, match="bad signature"):
        approval_links.verify(SECRET, "0.\u0080")


def test_a_database_nobody_configured_is_refused() -> None:
    router = load_router(None, databases=frozenset({"app"}))
    ok = router.route(_alert(name="PostgresqlTooManyConnections", labels={"datname": "app"}))
    assert ok is not None and ok.refused is None
    other = router.route(_alert(name="PostgresqlTooManyConnections", labels={"datname": "other"}))
    assert other is not None and "not a configured target" in str(other.refused)
    named = router.route(_alert(runbook="connection-pool-exhausted", labels={"database": "other"}))
    assert named is not None and named.refused is not None
    default = router.route(_alert(name="PostgresqlTooManyConnections"))
    assert default is not None and default.refused is None  # the flow's own configured target


def test_a_label_never_overrides_a_routes_own_parameter() -> None:
    route = Route(
        runbook="connection-pool-exhausted",
        match={"name": "PoolFull"},
        parameters={"database": "$labels.datname", "idle_minutes": 5},
    )
    router = Router([route], databases=frozenset({"app"}))
    routed = router.route(
        _alert(
            name="PoolFull", labels={"datname": "app", "idle_minutes": "0", "usage_threshold": "0"}
        )
    )
    assert routed is not None and routed.parameters == {"database": "app", "idle_minutes": 5}
