"""The alert receiver over real HTTP, with the real Redis, the store and a Prefect server.

The runbook deployments are applied to the test server with no runner serving them, so each run
the receiver starts stays SCHEDULED and can be counted; each test's alerts name a database of its
own, which tells its runs apart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from remediate.domain.settings import load_settings
from remediate.receiver import create_app
from tests.conftest import ROOT
from tests.e2e.conftest import SENTRY_SECRET, TOKEN, LiveReceiver, runs_for
from tests.support.ports import free_port
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")
FIXTURES = ROOT / "tests" / "fixtures" / "alerts"


def am_payload(database: str, *, status: str = "firing", **label: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / "alertmanager.json").read_text())
    payload["status"] = status
    payload["alerts"][0]["status"] = status
    payload["alerts"][0]["labels"].update({"datname": database, **label})
    return payload


_TARGETS: list[str] = []


@pytest.fixture(autouse=True)
def configured_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The databases this test's alerts may name: an alert chooses only among configured
    targets, so each test configures its own (SWEEP_DATABASES) before its receiver starts."""
    _TARGETS[:] = [f"rt_alert_{uuid.uuid4().hex[:8]}" for _ in range(24)]
    monkeypatch.setenv("SWEEP_DATABASES", ",".join(_TARGETS))


def unique_db() -> str:
    return _TARGETS.pop()


def store_alerts(store_url: str, database: str) -> list[dict[str, Any]]:
    with psycopg.connect(store_url) as conn:
        rows = conn.execute(
            "SELECT outcome, status, runbook, flow_run_id::text FROM alerts"
            " WHERE data -> 'labels' ->> 'datname' = %s OR data -> 'labels' ->> 'database' = %s"
            " ORDER BY id",
            (database, database),
        ).fetchall()
    return [
        dict(zip(("outcome", "status", "runbook", "flow_run_id"), r, strict=True)) for r in rows
    ]


def test_alertmanager_alert_starts_one_run_of_the_routed_runbook(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID], receiver_env: Any
) -> None:
    r = live()
    database = unique_db()
    response = r.post("/alerts/alertmanager", am_payload(database))
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["deduplicated"]) == (1, 0)
    [run] = runs_for(deployment_ids, database)
    assert str(run.id) == body["flow_run_ids"][0]
    assert run.deployment_id == deployment_ids["connection-pool-exhausted"]
    assert run.parameters == {"database": database, "requested_by": "alert:alertmanager"}
    assert store_alerts(receiver_env["REMEDIATION_DATABASE_URL"], database) == [
        {
            "outcome": "started",
            "status": "firing",
            "runbook": "connection-pool-exhausted",
            "flow_run_id": str(run.id),
        }
    ]
    assert r.metric("remediate_runs_started_total") == 1


def test_a_storm_of_1000_identical_alerts_starts_one_run(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID]
) -> None:
    r = live()
    database = unique_db()
    body = json.dumps(am_payload(database)).encode()
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda _: r.post("/alerts/alertmanager", body), range(1000)))
    assert {resp.status_code for resp in responses} == {202}
    answers = [resp.json() for resp in responses]
    assert sum(a["accepted"] for a in answers) == 1
    assert sum(a["deduplicated"] for a in answers) == 999
    assert len(runs_for(deployment_ids, database)) == 1
    assert r.metric("remediate_alerts_deduplicated_total") == 999
    assert r.metric("remediate_alerts_received_total") == 1000


def test_a_claim_of_a_run_that_ended_with_its_incident_open_swallows_no_alert(
    live: Callable[..., LiveReceiver],
    deployment_ids: dict[str, uuid.UUID],
    receiver_env: dict[str, str],
) -> None:
    """Crashed, failed, cancelled, gone, or completed with its incident still open: the next
    alert of the incident starts a new run (one, however many arrive at once), instead of being
    counted a duplicate of a run nobody is executing for the whole dedup window."""
    from prefect.states import Cancelled, Completed, Crashed

    from remediate.store.database import Store

    r = live()
    database = unique_db()
    body = json.dumps(am_payload(database)).encode()
    [first] = r.post("/alerts/alertmanager", body).json()["flow_run_ids"]
    assert r.post("/alerts/alertmanager", body).json()["deduplicated"] == 1  # still scheduled

    def end(run_id: str, state: Any) -> None:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(uuid.UUID(run_id), state, force=True)
        time.sleep(2.1)  # past the receiver's short cache of run states

    end(first, Crashed(message="its process was killed"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = [
            a.json() for a in pool.map(lambda _: r.post("/alerts/alertmanager", body), range(8))
        ]
    assert sum(a["accepted"] for a in answers) == 1, answers
    [second] = {i for a in answers for i in a["flow_run_ids"]}
    assert second != first

    end(second, Cancelled())
    [third] = r.post("/alerts/alertmanager", body).json()["flow_run_ids"]
    assert third not in {first, second}

    store = Store.open(SecretStr(receiver_env["REMEDIATION_DATABASE_URL"]))
    store.open_incident(
        runbook="connection-pool-exhausted",
        severity="P1",
        resource=database,
        title="t",
        flow_run_id=third,
    )
    end(third, Completed())
    [fourth] = r.post("/alerts/alertmanager", body).json()["flow_run_ids"]
    assert fourth not in {first, second, third}

    with get_client(sync_client=True) as client:
        client.delete_flow_run(uuid.UUID(fourth))
    time.sleep(2.1)
    [fifth] = r.post("/alerts/alertmanager", body).json()["flow_run_ids"]
    assert fifth != fourth
    assert len(runs_for(deployment_ids, database)) == 4  # the fourth was deleted
    assert r.post("/alerts/alertmanager", body).json()["deduplicated"] == 1


def test_one_request_starts_a_bounded_number_of_runs_and_the_retry_the_rest(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID]
) -> None:
    r = live(alert_max_runs_per_request=3)
    databases = [unique_db() for _ in range(5)]
    payload = am_payload(databases[0])
    payload["alerts"] = [
        {**payload["alerts"][0], "labels": {**payload["alerts"][0]["labels"], "datname": d}}
        for d in databases
    ]
    first = r.post("/alerts/alertmanager", payload)
    assert first.status_code == 503 and first.headers["retry-after"]
    assert len(first.json()["flow_run_ids"]) == 3 and "ALERT_MAX_RUNS_PER_REQUEST" in first.text
    again = r.post("/alerts/alertmanager", payload)  # Alertmanager retries a 5xx
    assert again.status_code == 202, again.text
    assert (again.json()["accepted"], again.json()["deduplicated"]) == (2, 3)
    assert all(len(runs_for(deployment_ids, d)) == 1 for d in databases)


def test_with_redis_down_alerts_are_still_taken_and_redeliveries_start_one_run(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID]
) -> None:
    r = live(remediation_redis_url="redis://127.0.0.1:1/0")
    database = unique_db()
    first = r.post("/alerts/alertmanager", am_payload(database))
    again = r.post("/alerts/alertmanager", am_payload(database))
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["flow_run_ids"] == again.json()["flow_run_ids"]
    assert len(runs_for(deployment_ids, database)) == 1  # Prefect's idempotency key held
    assert r.metric('remediate_receiver_degraded_total{dependency="redis"}') == 2


def test_a_claim_left_by_a_receiver_killed_before_its_run_is_taken_over(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID], receiver_env: Any
) -> None:
    """A receiver killed between claiming an alert in Redis and creating its run leaves a claim
    with no run: a redelivery soon after waits for that run, then gets a 503 to retry (never a
    202 for an alert with no run); once the claim is stale, the next one starts the run."""
    import redis

    from remediate.intake.dedup import STALE_CLAIM_SECONDS

    r = live()
    database = unique_db()
    first = r.post("/alerts/alertmanager", am_payload(database)).json()
    [run_id] = first["flow_run_ids"]
    [key] = [
        k
        for k in redis.Redis.from_url(receiver_env["REMEDIATION_REDIS_URL"]).scan_iter(
            match=f"{receiver_env['REMEDIATION_REDIS_PREFIX']}alert:*"
        )
    ]
    client = redis.Redis.from_url(receiver_env["REMEDIATION_REDIS_URL"])
    with get_client(sync_client=True) as prefect:
        prefect.delete_flow_run(uuid.UUID(run_id))  # as if it had never been created
    now_ms = int(client.time()[0]) * 1000
    client.set(key, f"pending:{now_ms - 1000}", keepttl=True)  # claimed 1 s ago, no run yet
    fresh = r.post("/alerts/alertmanager", am_payload(database))  # waits for the run, in vain
    assert (fresh.status_code, fresh.headers["Retry-After"]) == (503, "10"), fresh.text
    assert "still being created" in fresh.json()["error"]
    stale_ms = now_ms - int(STALE_CLAIM_SECONDS * 1000) - 1000
    client.set(key, f"pending:{stale_ms}", keepttl=True)  # the claimer is long dead
    taken = r.post("/alerts/alertmanager", am_payload(database)).json()
    assert (taken["accepted"], taken["deduplicated"]) == (1, 0)
    [run] = runs_for(deployment_ids, database)
    assert taken["flow_run_ids"] == [str(run.id)]
    assert client.get(key) == str(run.id).encode()
    again = r.post("/alerts/alertmanager", am_payload(database)).json()
    assert (again["accepted"], again["flow_run_ids"]) == (0, [str(run.id)])
    client.close()


def test_resolved_alert_is_recorded_and_ends_the_deduplication(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID], receiver_env: Any
) -> None:
    r = live()
    database = unique_db()
    fired = r.post("/alerts/alertmanager", am_payload(database)).json()
    resolved = r.post("/alerts/alertmanager", am_payload(database, status="resolved")).json()
    assert resolved == {
        "accepted": 0,
        "deduplicated": 0,
        "resolved": 1,
        "unroutable": 0,
        "flow_run_ids": [],
    }
    rows = store_alerts(receiver_env["REMEDIATION_DATABASE_URL"], database)
    assert [(x["outcome"], x["flow_run_id"]) for x in rows] == [
        ("started", fired["flow_run_ids"][0]),
        ("resolved", fired["flow_run_ids"][0]),
    ]
    # It comes back later (a new startsAt): a new incident, a new run.
    again = am_payload(database)
    again["alerts"][0]["startsAt"] = "2026-11-22T05:00:00Z"
    refired = r.post("/alerts/alertmanager", again).json()
    assert refired["accepted"] == 1
    assert len(runs_for(deployment_ids, database)) == 2


def test_unroutable_alert_is_recorded_and_answered_202(
    live: Callable[..., LiveReceiver], receiver_env: Any
) -> None:
    r = live()
    database = unique_db()
    payload = am_payload(database)
    payload["alerts"][0]["labels"]["alertname"] = "DiskAlmostFull"
    response = r.post("/alerts/alertmanager", payload)
    assert response.status_code == 202
    assert response.json()["accepted"] == 0 and response.json()["unroutable"] == 1
    assert [
        x["outcome"] for x in store_alerts(receiver_env["REMEDIATION_DATABASE_URL"], database)
    ] == ["unroutable"]
    assert r.metric("remediate_alerts_unroutable_total") == 1


def test_hostile_label_values_start_nothing(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID]
) -> None:
    r = live()
    for hostile in ["x'; DROP TABLE users; --", "app?host=evil", "$(touch /tmp/pwned)"]:
        response = r.post("/alerts/alertmanager", am_payload(hostile))
        assert response.status_code == 202
        assert response.json()["accepted"] == 0
        assert runs_for(deployment_ids, hostile) == []


def test_an_alert_chooses_only_among_configured_targets(
    live: Callable[..., LiveReceiver],
    deployment_ids: dict[str, uuid.UUID],
    receiver_env: dict[str, str],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever holds the webhook token cannot point a run at a database nobody configured: not
    through a route's `$labels`, nor by naming the runbook. A route's own `targets` widen it."""
    r = live()
    stranger = "rt_not_configured_db"
    for body, path in [
        (am_payload(stranger), "/alerts/alertmanager"),
        (
            {
                "runbook": "connection-pool-exhausted",
                "fingerprint": "f",
                "labels": {"database": stranger},
            },
            "/alerts",
        ),
    ]:
        answer = r.post(path, body)
        assert answer.status_code == 202 and answer.json()["unroutable"] == 1, answer.text
    assert runs_for(deployment_ids, stranger) == []
    [row, _] = [a for a in store_alerts(receiver_env["REMEDIATION_DATABASE_URL"], stranger)]
    assert row["outcome"] == "unroutable"

    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n  - runbook: connection-pool-exhausted\n"
        "    match: {name: PostgresqlTooManyConnections}\n"
        "    parameters: {database: $labels.datname}\n"
        "    targets: ['~rt_tenant_[a-z]+']\n"
    )
    monkeypatch.setenv("ALERT_ROUTES_FILE", str(routes))
    tenant = live()
    assert tenant.post("/alerts/alertmanager", am_payload("rt_tenant_acme")).json()["accepted"] == 1
    assert tenant.post("/alerts/alertmanager", am_payload(stranger)).json()["accepted"] == 0


def sentry_post(
    r: LiveReceiver,
    name: str,
    resource: str,
    *,
    secret: str = SENTRY_SECRET,
    at: float | None = None,
) -> httpx.Response:
    """As Sentry's integration platform sends a webhook: Sentry-Hook-Signature (HMAC-SHA256 of the
    body under the client secret) and Sentry-Hook-Timestamp (Unix seconds)."""
    body = (FIXTURES / name).read_bytes()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return r.post(
        "/alerts/sentry",
        body,
        token=None,
        **{
            "Sentry-Hook-Resource": resource,
            "Sentry-Hook-Signature": signature,
            "Sentry-Hook-Timestamp": str(int(at if at is not None else time.time())),
        },
    )


def test_sentry_needs_a_valid_signature(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID]
) -> None:
    r = live()
    started = sentry_post(r, "sentry_metric_alert.json", "metric_alert")
    assert started.status_code == 202, started.text
    assert started.json()["accepted"] == 1
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(started.json()["flow_run_ids"][0]))
    assert run.deployment_id == deployment_ids["rls-auth-failure"]
    assert sentry_post(r, "sentry_metric_alert.json", "metric_alert").json()["deduplicated"] == 1
    forged = sentry_post(r, "sentry_metric_alert.json", "metric_alert", secret="guess")
    assert forged.status_code == 401
    # A request captured once and replayed later: signed, but outside the replay window.
    replayed = sentry_post(r, "sentry_event_alert.json", "event_alert", at=time.time() - 600)
    assert replayed.status_code == 401 and "too old" in replayed.json()["error"]
    unsigned = r.post(
        "/alerts/sentry",
        (FIXTURES / "sentry_event_alert.json").read_bytes(),
        token=None,
        **{"Sentry-Hook-Resource": "event_alert"},
    )
    assert unsigned.status_code == 401
    unknown = sentry_post(r, "sentry_event_alert.json", "something_else")
    assert unknown.status_code == 422 and "Sentry-Hook-Resource" in unknown.json()["error"]
    installation = sentry_post(r, "sentry_event_alert.json", "installation")
    assert installation.status_code == 202 and installation.json()["accepted"] == 0
    # An issue resolved in Sentry is a resolution, not a new incident.
    resolved = sentry_post(r, "sentry_issue.json", "issue")
    assert resolved.status_code == 202 and resolved.json()["resolved"] == 1


def test_grafana_and_generic_alerts_start_runs(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID]
) -> None:
    r = live()
    database = unique_db()
    grafana = json.loads((FIXTURES / "grafana.json").read_text())
    grafana["alerts"][0]["labels"]["datname"] = database
    response = r.post("/alerts/grafana", grafana)
    assert response.status_code == 202 and response.json()["accepted"] == 1
    generic = json.loads((FIXTURES / "generic.json").read_text())
    generic["labels"]["database"] = database
    again = r.post("/alerts", generic)  # the same target: the same incident
    assert again.status_code == 202 and again.json()["deduplicated"] == 1
    assert len(runs_for(deployment_ids, database)) == 1
    other = unique_db()
    generic["labels"]["database"] = other
    assert r.post("/alerts", generic).json()["accepted"] == 1
    assert [x.parameters["requested_by"] for x in runs_for(deployment_ids, other)] == [
        "alert:generic"
    ]


def test_bad_requests_get_a_clear_4xx_and_start_nothing(
    live: Callable[..., LiveReceiver], deployment_ids: dict[str, uuid.UUID]
) -> None:
    r = live()
    database = unique_db()
    good = am_payload(database)

    assert r.post("/alerts/alertmanager", good, token=None).status_code == 401
    assert r.post("/alerts/alertmanager", good, token="wrong-token").status_code == 401
    assert r.post("/alerts", {"runbook": "x"}, token=None).status_code == 401  # 401 before 422

    missing = json.loads(json.dumps(good))
    del missing["alerts"][0]["labels"]
    answer = r.post("/alerts/alertmanager", missing)
    assert answer.status_code == 422 and answer.json()["error"].startswith("alerts.0.labels")

    wrong_type = json.loads(json.dumps(good))
    wrong_type["alerts"][0]["labels"]["datname"] = 5
    assert r.post("/alerts/alertmanager", wrong_type).status_code == 422

    assert r.post("/alerts/alertmanager", b"{not json").status_code == 422
    assert r.post("/alerts/alertmanager", b"\xff\xfe\x00garbage").status_code == 422
    assert r.post("/alerts/alertmanager", b"").status_code == 422
    assert r.post("/alerts/alertmanager", b"[]").status_code == 422

    unknown = r.post("/alerts", {"runbook": "no-such-runbook", "fingerprint": "f"})
    assert unknown.status_code == 422 and unknown.json()["error"].startswith("runbook:")
    no_fingerprint = r.post("/alerts", {"runbook": "rate-limiter"})
    assert no_fingerprint.status_code == 422 and "fingerprint" in no_fingerprint.json()["error"]

    huge = json.dumps({**good, "padding": "x" * 70_000}).encode()
    assert r.post("/alerts/alertmanager", huge).status_code == 413
    # The token is checked before a byte of the body is buffered: 401, not 413.
    assert r.post("/alerts/alertmanager", huge, token=None).status_code == 401

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1000

    streamed = r.client.post(
        "/alerts/alertmanager", content=chunks(), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert streamed.status_code == 413

    assert r.client.post("/alerts/nagios", content=b"{}").status_code == 404
    assert r.client.get("/alerts/alertmanager").status_code == 405
    assert runs_for(deployment_ids, database) == []
    assert r.metric('remediate_alerts_rejected_total{reason="unauthenticated"}') == 4
    assert r.metric('remediate_alerts_rejected_total{reason="too-large"}') == 2


def test_prefect_unreachable_is_a_503_to_retry_and_nothing_is_claimed(
    receiver_env: dict[str, str], deployment_ids: dict[str, uuid.UUID]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from remediate.intake.starter import DeploymentStarter

    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        starter = DeploymentStarter()
    r = LiveReceiver(create_app(load_settings(), starter=starter))
    try:
        database = unique_db()
        down = r.post("/alerts/alertmanager", am_payload(database))
        assert down.status_code == 503
        assert down.headers["retry-after"]
        assert "Prefect server" in down.json()["error"]
    finally:
        r.close()
    # The sender's retry, once Prefect answers, starts the run: the failed try claimed nothing.
    r = LiveReceiver(create_app(load_settings()))
    try:
        retried = r.post("/alerts/alertmanager", am_payload(database))
        assert retried.json()["accepted"] == 1
    finally:
        r.close()


def test_receiver_refuses_to_start_without_any_credential(
    receiver_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from remediate.domain.settings import ConfigError

    monkeypatch.delenv("ALERT_WEBHOOK_TOKEN")
    monkeypatch.delenv("SENTRY_CLIENT_SECRET")
    with pytest.raises(ConfigError, match="ALERT_WEBHOOK_TOKEN"):
        create_app(load_settings())


def test_openapi_documents_every_alert_route(live: Callable[..., LiveReceiver]) -> None:
    r = live()
    paths = r.client.get("/openapi.json").json()["paths"]
    assert {"/alerts/alertmanager", "/alerts/grafana", "/alerts/sentry", "/alerts"} <= set(paths)
    schema = paths["/alerts/alertmanager"]["post"]["requestBody"]["content"]["application/json"]
    assert "alerts" in json.dumps(schema)
    assert r.client.get("/healthz").json() == {"status": "ok"}


def test_a_signed_link_in_the_approval_message_approves_once(
    live: Callable[..., LiveReceiver],
    incident_world: IncidentWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from remediate.engine import approval
    from remediate.engine.approval_links import sign
    from tests.e2e.conftest import paused_run, start
    from tests.support.httpcapture import CaptureServer
    from tests.support.sessions import pids_alive

    w = incident_world
    slack = CaptureServer()
    secret = "rt-link-secret-3e9b"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/T0/B0/X")
    monkeypatch.setenv("APPROVAL_LINK_SECRET", secret)
    monkeypatch.setenv("APPROVERS", "alice,bob")
    r = live()
    monkeypatch.setenv("RECEIVER_PUBLIC_URL", f"http://127.0.0.1:{r.port}")
    try:
        future = start(**w.params)
        run_id = paused_run(w.database)
        deadline = time.monotonic() + 15  # messages are delivered in the background
        while not (
            asked := [
                m.json()["text"] for m in slack.received if "APPROVAL NEEDED" in m.json()["text"]
            ]
        ):
            assert time.monotonic() < deadline, "no approval message reached Slack"
            time.sleep(0.1)
        # One link per approver: the page answers as that approver, whatever name is typed.
        links = {
            line.split(" ")[2]: line.rsplit(" ", 1)[1]
            for line in asked[0].splitlines()
            if line.startswith("Answer as ")
        }
        assert set(links) == {"alice", "bob"}, asked[0]
        path = links["alice"].removeprefix(f"http://127.0.0.1:{r.port}")
        assert secret not in asked[0]

        # Opening the link (a chat unfurler does) changes nothing; the page shows the plan.
        page = r.client.get(path)
        assert page.status_code == 200 and "terminate" in page.text and "<form" in page.text
        assert (
            "blast radius: 20 object(s)" in page.text and "You answer as <b>alice</b>" in page.text
        )
        assert "name='approver'" not in page.text  # no name to type
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(uuid.UUID(run_id)).state_type.value == "PAUSED"

        def post(form: str, at: str = path) -> httpx.Response:
            return r.client.post(
                at, content=form, headers={"content-type": "application/x-www-form-urlencoded"}
            )

        link_secret = load_settings().approval_link_secret
        assert link_secret is not None
        digest = approval.pending_approval_digest(run_id)
        mallory = sign(
            link_secret,
            flow_run_id=run_id,
            incident_id="x",
            summary="s",
            ttl_seconds=60,
            plan_digest=digest,
            approver="mallory",
        )
        assert post("decision=approve", f"/approvals/{mallory}").status_code == 403
        unbound = sign(
            link_secret, flow_run_id=run_id, incident_id="x", summary="s", ttl_seconds=60
        )
        refused = post("approver=alice&decision=approve", f"/approvals/{unbound}")
        assert refused.status_code == 403, "with APPROVERS set, a typed name proves nothing"
        token = path.rsplit("/", 1)[1]
        payload, mac = token.split(".")
        forged = f"/approvals/{payload}.{mac[:-3]}abc"
        assert post("decision=approve", forged).status_code == 403
        expired = sign(
            link_secret, flow_run_id=run_id, incident_id="x", summary="s", ttl_seconds=-1
        )
        gone = post("decision=approve", f"/approvals/{expired}")
        assert gone.status_code == 403 and "expired" in gone.text
        assert post("decision=maybe").status_code == 422
        assert pids_alive(w.idle) == w.idle, "nothing acted before a valid answer"

        taken = post("approver=mallory&decision=approve&note=from+slack")
        assert taken.status_code == 200, taken.text
        assert "Thank you, alice" in taken.text
        outcome = future.result(timeout=60)
        assert outcome.status == "resolved"
        assert outcome.actions[0].approved_by == "alice"
        assert pids_alive(w.idle) == set()
        assert pids_alive(w.survivors) == w.survivors
        [answered] = [
            e for e in w.store.timeline(outcome.incident_id) if e.kind == "approval-answered"
        ]
        assert answered.data["channel"] == "link" and answered.data["verified"] is False

        reused = post("decision=deny")
        assert reused.status_code == 409 and "already used" in reused.text
        assert r.metric('remediate_approval_links_total{result="approve"}') == 1
    finally:
        slack.close()


def test_alert_runs_a_killed_serve_left_pending_go_back_to_the_runner(
    receiver_env: dict[str, str], deployment_ids: dict[str, uuid.UUID]
) -> None:
    """Under `serve` an alert's run is created Pending and executed in-process; if the process
    is killed between its 202 and the run, the next `serve` hands the run to the runner."""
    from prefect.states import Pending

    from remediate.app.warm import WarmExecutor

    database = unique_db()
    with get_client(sync_client=True) as client:
        orphan = client.create_flow_run_from_deployment(
            deployment_ids["connection-pool-exhausted"],
            parameters={"database": database},
            tags=["alert"],
            state=Pending(),
        )
        manual = client.create_flow_run_from_deployment(
            deployment_ids["connection-pool-exhausted"],
            parameters={"database": database},
            tags=["manual"],
            state=Pending(),
        )
    assert WarmExecutor.recover(list(deployment_ids.values())) == 0  # too young: may be owned
    assert WarmExecutor.recover(list(deployment_ids.values()), older_than_seconds=0) == 1
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(orphan.id).state_type.value == "SCHEDULED"
        assert client.read_flow_run(manual.id).state_type.value == "PENDING"  # not an alert's
        client.delete_flow_run(manual.id)


def test_under_serve_an_alert_run_executes_in_the_receivers_process(
    receiver_env: dict[str, str], deployment_ids: dict[str, uuid.UUID], sandbox: str
) -> None:
    """With a warm executor the run is created Pending and executed here at once (no runner)."""
    from remediate.app.warm import WarmExecutor
    from remediate.intake.starter import DeploymentStarter

    warm = WarmExecutor(workers=1)
    r = LiveReceiver(create_app(load_settings(), starter=DeploymentStarter(executor=warm)))
    try:
        payload = am_payload(sandbox)
        payload["alerts"][0]["labels"]["alertname"] = "connection-pool-exhausted"
        [run_id] = r.post("/alerts/alertmanager", payload).json()["flow_run_ids"]
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as client:
            while (
                state := client.read_flow_run(uuid.UUID(run_id)).state_type.value
            ) != "COMPLETED":
                assert state in {"PENDING", "RUNNING"} and time.monotonic() < deadline, state
                time.sleep(0.1)
    finally:
        r.close()
