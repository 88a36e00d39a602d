"""The receiver fuzzed from its own OpenAPI schema (schemathesis) and with hostile bodies: no 5xx,
and no run started by an unauthenticated request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from remediate.domain.settings import load_settings
from remediate.receiver import create_app
from tests.e2e.conftest import TOKEN

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def receiver_app(
    receiver_env: dict[str, str],
    deployment_ids: dict[str, uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    monkeypatch.setenv("APPROVAL_LINK_SECRET", "fuzz-link-secret")  # links are checked too
    app = create_app(load_settings())
    yield app
    app.state.receiver.close()


FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def fuzz(app: Any, check: Any) -> int:
    """Run `check(case)` on cases generated for every operation of the app's OpenAPI schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @FUZZ
        def run(case: Any) -> None:
            check(case)

        run()
    return operations


def test_unauthenticated_fuzz_gets_4xx_and_starts_nothing(receiver_app: Any) -> None:
    def check(case: Any) -> None:
        response = case.call()
        assert response.status_code < 500, (case.path, case.body, response.text[:300])
        if case.path.startswith("/alerts"):
            assert response.status_code == 401, (case.path, response.status_code)

    assert fuzz(receiver_app, check) >= 8
    assert receiver_app.state.receiver.metrics.runs_started._metrics == {}


def test_authenticated_fuzz_never_gets_a_5xx(receiver_app: Any) -> None:
    def check(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code < 500, (case.path, case.body, response.text[:300])

    assert fuzz(receiver_app, check) >= 8


HOSTILE = [
    b"",
    b"null",
    b"[]",
    b"{",
    b"\xff\xfe\xfa\x00\x00",
    b'{"version": "4", "alerts": "' + b"A" * 50_000 + b'"}',
    b'{"version":"4","groupKey":"k","status":"firing","receiver":"r","alerts":[{"status":"firing",'
    b'"labels":{"alertname":"PostgresqlTooManyConnections","datname":"x\'; DROP TABLE users;--"},'
    b'"startsAt":"now"}]}',
    b'{"version":"4","groupKey":"k","status":"firing","receiver":"r","alerts":[{"status":"firing",'
    b'"labels":{"alertname":"a","\\u0000":"\\ud800"},"startsAt":"now"}]}',
    b'{"version":"4","groupKey":"k","status":"firing","receiver":"r","alerts":'
    + b"["
    + b",".join([b'{"status":"firing","labels":{},"startsAt":"x"}'] * 1001)
    + b"]}",
    b'{"runbook":"rate-limiter; rm -rf /","fingerprint":"$(reboot)"}',
    b'{"runbook":"connection-pool-exhausted","fingerprint":"f","labels":{"database":"../../etc"}}',
]


@pytest.mark.parametrize("body", HOSTILE)
@pytest.mark.parametrize(
    "path", ["/alerts/alertmanager", "/alerts/grafana", "/alerts", "/alerts/sentry"]
)
def test_hostile_bodies_are_refused_or_routed_nowhere(
    receiver_app: Any, path: str, body: bytes
) -> None:
    from fastapi.testclient import TestClient

    with TestClient(receiver_app) as client:
        response = client.post(
            path,
            content=body,
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Sentry-Hook-Resource": "metric_alert",
            },
        )
    assert response.status_code in {202, 413, 422}, response.text[:300]
    if response.status_code == 202:
        assert response.json()["accepted"] == 0
    assert receiver_app.state.receiver.metrics.runs_started._metrics == {}
