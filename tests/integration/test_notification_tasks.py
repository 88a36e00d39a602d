"""The notification integrations (tasks/slack.py, pagerduty.py, statuspage.py, github.py) against a
local HTTP server that checks each request's shape, and the delivery queue (tasks/delivery.py):
it delivers, retries, records every attempt in order, logs a warning for a failure (never a
secret) and never raises into the run."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest
from pydantic import SecretStr

from remediate.domain.models import Plan, PlannedAction
from remediate.tasks.delivery import Delivery, Notifier
from remediate.tasks.github import github_issue
from remediate.tasks.pagerduty import pagerduty_event
from remediate.tasks.slack import approval_blocks, mrkdwn, slack_message
from remediate.tasks.statuspage import statuspage_read, statuspage_status
from tests.support.httpcapture import CaptureServer, Received
from tests.support.ports import free_port

SLACK_TOKEN = "slack-canary-4e9a1f"
ROUTING_KEY = "pd-routing-canary-77b2"
STATUSPAGE_KEY = "statuspage-canary-0d3c"
GITHUB_TOKEN = "ghp_githubcanary5a8e"
SECRETS = (SLACK_TOKEN, ROUTING_KEY, STATUSPAGE_KEY, GITHUB_TOKEN)
PD_ACCEPTED = b'{"status":"success","message":"Event processed","dedup_key":"remediate-inc-1"}'


@pytest.fixture(scope="module")
def shared_server() -> Iterator[CaptureServer]:
    capture = CaptureServer()  # one per module: its shutdown waits half a second
    yield capture
    capture.close()


@pytest.fixture
def server(shared_server: CaptureServer) -> CaptureServer:
    """The capture server, answering 200 `ok` and holding only this test's requests."""
    shared_server.status, shared_server.body = 200, b"ok"
    shared_server.received.clear()
    return shared_server


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What the product logs as configured (root at WARNING), and all of its own loggers."""
    caplog.set_level(logging.DEBUG, logger="remediate")
    return caplog


def headers(received: Received) -> dict[str, str]:
    return {name.lower(): value for name, value in received.headers.items()}


def webhook(server: CaptureServer) -> SecretStr:
    return SecretStr(f"{server.url}/services/T0/B0/{SLACK_TOKEN}")


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


# Slack: the incoming webhook.


def test_slack_posts_the_webhook_json_with_the_text_escaped(server: CaptureServer) -> None:
    text = "🚨 INCIDENT: rate-limiter on <!channel> & <https://evil.example|click> (P1)\nStatus: x"

    delivery = slack_message(webhook(server), text)

    assert delivery == Delivery(
        channel="slack",
        delivered=True,
        detail="🚨 INCIDENT: rate-limiter on <!channel> & <https://evil.example|click> (P1)",
    )
    [request] = server.received
    assert (request.method, request.path) == ("POST", f"/services/T0/B0/{SLACK_TOKEN}")
    assert headers(request)["content-type"] == "application/json"
    assert request.json() == {
        "text": "🚨 INCIDENT: rate-limiter on &lt;!channel&gt; &amp; "
        "&lt;https://evil.example|click&gt; (P1)\nStatus: x"
    }
    assert SLACK_TOKEN not in repr(delivery)


def test_slack_posts_the_approval_blocks_with_the_text(server: CaptureServer) -> None:
    plan = Plan(
        runbook="rate-limiter",
        resource="redis://cache:6379/0",
        summary="repair 2 stuck buckets",
        actions=[
            PlannedAction(
                name="delete-stuck-buckets <!here>",
                destructive=True,
                resource="redis://cache:6379/0",
                description="delete",
                targets=["ratelimit:a", "ratelimit:b"],
            )
        ],
    )
    text = "⏸️ APPROVAL NEEDED: rate-limiter (P2)"
    blocks = approval_blocks(text, plan=plan, value="signed-opaque-value")

    delivery = slack_message(webhook(server), text, blocks=blocks)

    assert delivery.delivered is True
    [request] = server.received
    assert request.json() == {"text": mrkdwn(text), "blocks": blocks}
    sent = request.json()["blocks"]
    assert sent[1]["text"]["text"] == (
        "• *delete-stuck-buckets &lt;!here&gt;*: 2 object(s) on `redis://cache:6379/0`"
    )
    assert [(b["action_id"], b["value"]) for b in sent[-1]["elements"]] == [
        ("approve", "signed-opaque-value"),
        ("decline", "signed-opaque-value"),
    ]


def test_slack_does_not_retry_a_refusal_and_reports_it(server: CaptureServer) -> None:
    server.status, server.body = 404, b"no_service"

    delivery = slack_message(webhook(server), "🚨 INCIDENT: x", attempts=3)

    assert delivery == Delivery(channel="slack", delivered=False, detail="HTTP 404")
    assert len(server.received) == 1


@pytest.mark.parametrize(("status", "attempts"), [(500, 3), (429, 2)])
def test_slack_retries_a_server_error_or_rate_limit_then_reports_it(
    server: CaptureServer, status: int, attempts: int
) -> None:
    server.status = status

    delivery = slack_message(webhook(server), "🚨 INCIDENT: x", attempts=attempts)

    assert delivery == Delivery(channel="slack", delivered=False, detail=f"HTTP {status}")
    assert [r.json() for r in server.received] == [{"text": "🚨 INCIDENT: x"}] * attempts


# PagerDuty: Events API v2.


def test_pagerduty_trigger_sends_the_event_with_its_payload(server: CaptureServer) -> None:
    server.status, server.body = 202, PD_ACCEPTED

    delivery = pagerduty_event(
        SecretStr(ROUTING_KEY),
        url=f"{server.url}/v2/enqueue",
        action="trigger",
        dedup_key="remediate-inc-1",
        summary="rate-limiter on redis://cache:6379/0 (P1)",
        severity="critical",
        component="rate-limiter",
        details={"incident": "inc-1", "runbook": "rate-limiter"},
    )

    assert delivery == Delivery(
        channel="pagerduty", delivered=True, detail="trigger remediate-inc-1: HTTP 202"
    )
    [request] = server.received
    assert (request.method, request.path) == ("POST", "/v2/enqueue")
    assert headers(request)["content-type"] == "application/json"
    assert request.json() == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "remediate-inc-1",
        "payload": {
            "summary": "rate-limiter on redis://cache:6379/0 (P1)",
            "source": "remediate",
            "severity": "critical",
            "component": "rate-limiter",
            "custom_details": {"incident": "inc-1", "runbook": "rate-limiter"},
        },
    }


def test_pagerduty_summary_is_cut_to_the_api_s_1024_characters(server: CaptureServer) -> None:
    server.status, server.body = 202, PD_ACCEPTED

    pagerduty_event(
        SecretStr(ROUTING_KEY),
        url=f"{server.url}/v2/enqueue",
        action="trigger",
        dedup_key="remediate-inc-1",
        summary="x" * 1500,
    )

    payload = server.received[0].json()["payload"]
    assert payload["summary"] == "x" * 1024
    assert payload["custom_details"] == {}


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_pagerduty_acknowledge_and_resolve_name_the_alert_by_dedup_key_only(
    server: CaptureServer, action: str
) -> None:
    server.status, server.body = 202, PD_ACCEPTED

    delivery = pagerduty_event(
        SecretStr(ROUTING_KEY),
        url=f"{server.url}/v2/enqueue",
        action=action,
        dedup_key="remediate-inc-1",
        summary="ignored",
    )

    assert delivery.delivered is True
    assert server.received[0].json() == {
        "routing_key": ROUTING_KEY,
        "event_action": action,
        "dedup_key": "remediate-inc-1",
    }


def test_pagerduty_rejected_event_is_not_retried_and_keeps_the_key_out(
    server: CaptureServer,
) -> None:
    server.status, server.body = (
        400,
        b'{"status":"invalid event","message":"Event object is invalid"}',
    )

    delivery = pagerduty_event(
        SecretStr(ROUTING_KEY),
        url=f"{server.url}/v2/enqueue",
        action="trigger",
        dedup_key="remediate-inc-1",
        attempts=3,
    )

    assert delivery == Delivery(
        channel="pagerduty", delivered=False, detail="trigger remediate-inc-1: HTTP 400"
    )
    assert len(server.received) == 1
    assert ROUTING_KEY not in repr(delivery)


# Statuspage: a component's status.


def test_statuspage_patches_the_component_with_the_oauth_key(server: CaptureServer) -> None:
    server.body = b'{"id":"cmp1","name":"API","status":"major_outage"}'

    delivery = statuspage_status(
        f"{server.url}/v1/pages/pg1/",
        SecretStr(STATUSPAGE_KEY),
        component_id="cmp1",
        status="major_outage",
    )

    assert delivery == Delivery(
        channel="statuspage", delivered=True, detail="cmp1 major_outage: HTTP 200"
    )
    [request] = server.received
    assert (request.method, request.path) == ("PATCH", "/v1/pages/pg1/components/cmp1")
    assert headers(request)["authorization"] == f"OAuth {STATUSPAGE_KEY}"
    assert headers(request)["content-type"] == "application/json"
    assert request.json() == {"component": {"status": "major_outage"}}


def test_statuspage_refusal_is_not_retried_and_keeps_the_key_out(server: CaptureServer) -> None:
    server.status, server.body = 401, b'{"error":"Could not authenticate"}'

    delivery = statuspage_status(
        server.url, SecretStr(STATUSPAGE_KEY), component_id="cmp1", status="operational"
    )

    assert delivery == Delivery(
        channel="statuspage", delivered=False, detail="cmp1 operational: HTTP 401"
    )
    assert len(server.received) == 1
    assert STATUSPAGE_KEY not in repr(delivery)


def test_statuspage_read_gets_the_component_s_status(server: CaptureServer) -> None:
    server.body = b'{"id":"cmp1","name":"API","status":"degraded_performance"}'

    status = statuspage_read(
        f"{server.url}/v1/pages/pg1", SecretStr(STATUSPAGE_KEY), component_id="cmp1"
    )

    assert status == "degraded_performance"
    [request] = server.received
    assert (request.method, request.path) == ("GET", "/v1/pages/pg1/components/cmp1")
    assert headers(request)["authorization"] == f"OAuth {STATUSPAGE_KEY}"


@pytest.mark.parametrize(("status", "body"), [(404, b'{"error":"not found"}'), (500, b"{}")])
def test_statuspage_read_tries_once_and_says_none_when_the_page_fails(
    server: CaptureServer, status: int, body: bytes
) -> None:
    server.status, server.body = status, body

    assert statuspage_read(server.url, SecretStr(STATUSPAGE_KEY), component_id="cmp1") is None
    assert len(server.received) == 1


def test_statuspage_read_says_none_when_the_page_is_unreachable_or_not_json(
    server: CaptureServer,
) -> None:
    assert statuspage_read(dead_url(), SecretStr(STATUSPAGE_KEY), component_id="cmp1") is None
    server.body = b"<html>maintenance</html>"
    assert statuspage_read(server.url, SecretStr(STATUSPAGE_KEY), component_id="cmp1") is None


@pytest.mark.parametrize("body", [b'{"id":"cmp1"}', b'{"status":null}', b'["operational"]'])
def test_statuspage_read_says_none_when_the_answer_has_no_status(
    server: CaptureServer, body: bytes
) -> None:
    server.body = body
    assert statuspage_read(server.url, SecretStr(STATUSPAGE_KEY), component_id="cmp1") is None


# GitHub: the follow-up issue.


def test_github_opens_the_issue_with_a_bearer_token_and_keeps_its_address(
    server: CaptureServer,
) -> None:
    server.status = 201
    server.body = b'{"number":7,"html_url":"https://github.com/acme/app/issues/7"}'

    delivery = github_issue(
        f"{server.url}/",
        "acme/app",
        SecretStr(GITHUB_TOKEN),
        title="Prevent rate-limiter (stuck-buckets) on redis://cache:6379/0",
        body="## Preventive measures\n- [ ] expire every bucket",
        labels=["incident", "prevention", "P2"],
    )

    assert delivery == Delivery(
        channel="github",
        delivered=True,
        detail="issue in acme/app: HTTP 201",
        url="https://github.com/acme/app/issues/7",
    )
    [request] = server.received
    assert (request.method, request.path) == ("POST", "/repos/acme/app/issues")
    sent = headers(request)
    assert sent["authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert sent["accept"] == "application/vnd.github+json"
    assert sent["x-github-api-version"] == "2022-11-28"
    assert request.json() == {
        "title": "Prevent rate-limiter (stuck-buckets) on redis://cache:6379/0",
        "body": "## Preventive measures\n- [ ] expire every bucket",
        "labels": ["incident", "prevention", "P2"],
    }


def test_github_refusal_is_not_retried_and_has_no_address(server: CaptureServer) -> None:
    server.status, server.body = 422, b'{"message":"Validation Failed"}'

    delivery = github_issue(
        server.url, "acme/app", SecretStr(GITHUB_TOKEN), title="t", body="b", labels=[]
    )

    assert delivery == Delivery(
        channel="github", delivered=False, detail="issue in acme/app: HTTP 422", url=None
    )
    assert len(server.received) == 1
    assert GITHUB_TOKEN not in repr(delivery)


def test_github_issue_opened_without_a_readable_answer_is_delivered_without_address(
    server: CaptureServer,
) -> None:
    server.status, server.body = 201, b"created"

    delivery = github_issue(
        server.url, "acme/app", SecretStr(GITHUB_TOKEN), title="t", body="b", labels=[]
    )

    assert (delivery.delivered, delivery.url) == (True, None)


def test_github_issue_never_raises_on_an_odd_answer(server: CaptureServer) -> None:
    server.status, server.body = 201, b"[]"

    delivery = github_issue(
        server.url, "acme/app", SecretStr(GITHUB_TOKEN), title="t", body="b", labels=[]
    )

    assert (delivery.delivered, delivery.url) == (True, None)


# The delivery queue.


class Recorded:
    """The `record` callback of a Notifier: every Delivery, in the order recorded."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def of(self, channel: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.channel == channel]


def send_all(notifier: Notifier, base: str, *, attempts: int, text: str = "🚨 INCIDENT: x") -> None:
    """One delivery per integration, as remediate/engine/comms.py queues them."""
    notifier.send(
        "slack",
        lambda: slack_message(
            SecretStr(f"{base}/services/T0/B0/{SLACK_TOKEN}"), text, attempts=attempts
        ),
    )
    notifier.send(
        "pagerduty",
        lambda: pagerduty_event(
            SecretStr(ROUTING_KEY),
            url=f"{base}/v2/enqueue",
            action="trigger",
            dedup_key="remediate-inc-1",
            summary="x",
            attempts=attempts,
        ),
    )
    notifier.send(
        "statuspage",
        lambda: statuspage_status(
            base,
            SecretStr(STATUSPAGE_KEY),
            component_id="cmp1",
            status="major_outage",
            attempts=attempts,
        ),
    )
    notifier.send(
        "github",
        lambda: github_issue(
            base,
            "acme/app",
            SecretStr(GITHUB_TOKEN),
            title="t",
            body="b",
            labels=[],
            attempts=attempts,
        ),
    )


def everything_logged(logs: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in logs.records
    )


def test_notifier_delivers_each_channel_in_order_and_records_every_delivery(
    server: CaptureServer, logs: pytest.LogCaptureFixture
) -> None:
    recorded = Recorded()
    notifier = Notifier(recorded)
    texts = [f"message {n}" for n in range(4)]

    for text in texts:
        notifier.send("slack", partial(slack_message, webhook(server), text))

    assert notifier.flush(timeout=20) is True
    assert [r.json()["text"] for r in server.received] == texts
    assert recorded.deliveries == [
        Delivery(channel="slack", delivered=True, detail=text) for text in texts
    ]
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == []


def test_notifier_records_a_server_error_after_the_retries_and_logs_no_secret(
    server: CaptureServer, logs: pytest.LogCaptureFixture
) -> None:
    server.status, server.body = 500, b'{"error":"internal"}'
    recorded = Recorded()
    notifier = Notifier(recorded)

    send_all(notifier, server.url, attempts=2)  # returns at once; the threads retry

    assert notifier.flush(timeout=20) is True
    paths = sorted(r.path for r in server.received)
    assert paths == sorted(
        [
            f"/services/T0/B0/{SLACK_TOKEN}",
            "/v2/enqueue",
            "/components/cmp1",
            "/repos/acme/app/issues",
        ]
        * 2
    )
    assert sorted((d.channel, d.delivered, d.detail) for d in recorded.deliveries) == [
        ("github", False, "issue in acme/app: HTTP 500"),
        ("pagerduty", False, "trigger remediate-inc-1: HTTP 500"),
        ("slack", False, "HTTP 500"),
        ("statuspage", False, "cmp1 major_outage: HTTP 500"),
    ]
    warnings = sorted(r.getMessage() for r in logs.records if r.levelno == logging.WARNING)
    assert warnings == [
        "github notification not delivered: issue in acme/app: HTTP 500",
        "pagerduty notification not delivered: trigger remediate-inc-1: HTTP 500",
        "slack notification not delivered: HTTP 500",
        "statuspage notification not delivered: cmp1 major_outage: HTTP 500",
    ]
    seen = everything_logged(logs) + repr(recorded.deliveries)
    assert [s for s in SECRETS if s in seen] == []


def test_notifier_records_an_unreachable_endpoint_and_logs_no_secret(
    logs: pytest.LogCaptureFixture,
) -> None:
    recorded = Recorded()
    notifier = Notifier(recorded)

    send_all(notifier, dead_url(), attempts=2)

    assert notifier.flush(timeout=20) is True
    assert sorted((d.channel, d.delivered, d.detail) for d in recorded.deliveries) == [
        ("github", False, "issue in acme/app: ConnectError"),
        ("pagerduty", False, "trigger remediate-inc-1: ConnectError"),
        ("slack", False, "ConnectError"),
        ("statuspage", False, "cmp1 major_outage: ConnectError"),
    ]
    warnings = [r for r in logs.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 4
    assert {r.name for r in warnings} == {"remediate.tasks.delivery"}
    seen = everything_logged(logs) + repr(recorded.deliveries)
    assert [s for s in SECRETS if s in seen] == []


def test_notifier_survives_a_delivery_that_raises_and_a_record_that_fails(
    server: CaptureServer, logs: pytest.LogCaptureFixture
) -> None:
    recorded: list[Delivery] = []

    def record(delivery: Delivery) -> None:
        if delivery.detail == "second":
            raise ConnectionError("store down")
        recorded.append(delivery)

    def broken() -> Delivery:
        raise RuntimeError(f"bug holding {SLACK_TOKEN}")

    notifier = Notifier(record)
    notifier.send("slack", broken)
    notifier.send("slack", lambda: slack_message(webhook(server), "second"))
    notifier.send("slack", lambda: slack_message(webhook(server), "third"))

    assert notifier.flush(timeout=20) is True
    assert recorded == [
        Delivery(channel="?", delivered=False, detail="RuntimeError"),
        Delivery(channel="slack", delivered=True, detail="third"),
    ]
    assert [r.json()["text"] for r in server.received] == ["second", "third"]
    assert [r.getMessage() for r in logs.records if r.levelno >= logging.WARNING] == [
        "? notification not delivered: RuntimeError",
        "could not record a slack notification: store down",
    ]
    assert SLACK_TOKEN not in everything_logged(logs)


def test_a_hanging_channel_delays_neither_the_caller_nor_the_other_channels(
    server: CaptureServer,
) -> None:
    server.status, server.body = 202, PD_ACCEPTED
    recorded = Recorded()
    notifier = Notifier(recorded)
    release = threading.Event()

    def hang() -> Delivery:
        release.wait(30)
        return Delivery(channel="slack", delivered=True, detail="late")

    try:
        started = time.monotonic()
        notifier.send("slack", hang)
        notifier.send(
            "pagerduty",
            lambda: pagerduty_event(
                SecretStr(ROUTING_KEY),
                url=f"{server.url}/v2/enqueue",
                action="resolve",
                dedup_key="remediate-inc-1",
            ),
        )
        assert time.monotonic() - started < 1  # send() queues; it does not deliver

        deadline = time.monotonic() + 10
        while not recorded.of("pagerduty") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert recorded.deliveries == [
            Delivery(
                channel="pagerduty", delivered=True, detail="resolve remediate-inc-1: HTTP 202"
            )
        ]
        assert notifier.flush(timeout=0.2) is False  # the hanging one is still pending
    finally:
        release.set()
    assert notifier.flush(timeout=10) is True
    assert recorded.of("slack") == [Delivery(channel="slack", delivered=True, detail="late")]
