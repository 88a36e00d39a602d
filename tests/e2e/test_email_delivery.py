"""email-delivery against a real SMTP server (aiosmtpd) and a local stand-in for SendGrid's API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from flows.email_delivery import email_delivery
from tests.e2e.conftest import assert_no_secret
from tests.e2e.test_auth_server_health import free_port
from tests.httpcapture import CaptureServer

pytestmark = pytest.mark.usefixtures("prefect_server")
KEY = "SG.sendgrid-key-canary"
SMTP_PASSWORD = "smtp-password-canary"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == b"mailer"
        and (data.password == SMTP_PASSWORD.encode())
    )
    return AuthResult(success=ok)


class SendGrid:
    """GET mail_settings, bounces, stats; DELETE a bounce. Checks the bearer key."""

    def __init__(self, bounces: list[str], requests: int, bounced: int) -> None:
        outer = self
        self.bounces, self.requests, self.bounced, self.deleted = bounces, requests, bounced, []

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._json(401, {"errors": [{"message": "authorization required"}]})
                if self.path.startswith("/v3/mail_settings"):
                    return self._json(200, {"result": [{"name": "bounce_purge", "enabled": True}]})
                if self.path.startswith("/v3/suppression/bounces"):
                    return self._json(200, [{"email": e, "reason": "550"} for e in outer.bounces])
                if self.path.startswith("/v3/stats"):
                    return self._json(
                        200,
                        [
                            {
                                "date": "2026-11-22",
                                "stats": [
                                    {
                                        "metrics": {
                                            "requests": outer.requests,
                                            "bounces": outer.bounced,
                                        }
                                    }
                                ],
                            }
                        ],
                    )
                return self._json(404, {})

            def do_DELETE(self) -> None:
                email = unquote(self.path.rsplit("/", 1)[1])
                outer.deleted.append(email)
                outer.bounces = [e for e in outer.bounces if e != email]
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def mail(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    inbox, port = Inbox(), free_port()
    smtp = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    smtp.start()
    sendgrid = SendGrid(
        bounces=["otp-user@school.test", "old@school.test"], requests=1000, bounced=20
    )
    for name, value in {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_TLS": "false",
        "SMTP_USER": "mailer",
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "EMAILS_FROM_EMAIL": "noreply@school.test",
        "SENDGRID_API_KEY": KEY,
        "SENDGRID_API_URL": sendgrid.url,
    }.items():
        monkeypatch.setenv(name, value)
    yield {"inbox": inbox, "sendgrid": sendgrid}
    smtp.stop()
    sendgrid.server.shutdown()


def test_healthy_delivery_sends_a_real_test_message(mail: dict[str, Any]) -> None:
    outcome = email_delivery()
    assert outcome.status == "healthy", outcome.findings
    (message,) = mail["inbox"].messages
    assert message.rcpt_tos == ["noreply@school.test"]
    assert b"email-delivery runbook" in message.content


def test_a_bounced_address_is_removed_and_nothing_else(
    mail: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    slack = CaptureServer()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/slack-canary")
    outcome = email_delivery(address="otp-user@school.test", auto_approve=True)
    slack.close()
    assert_no_secret(
        outcome,
        [KEY, SMTP_PASSWORD, "slack-canary"],
        messages=[r.body.decode() for r in slack.received],
    )
    assert len(slack.received) == 2  # declared, resolved
    assert outcome.status == "resolved", outcome.summary
    assert mail["sendgrid"].deleted == ["otp-user@school.test"]
    assert mail["sendgrid"].bounces == ["old@school.test"]
    seen = outcome.model_dump_json()
    assert KEY not in seen and SMTP_PASSWORD not in seen


def test_wrong_smtp_password_is_escalated(
    mail: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password-canary")
    outcome = email_delivery(auto_approve=True)
    assert outcome.status == "escalated"
    assert outcome.causes == ["smtp-failing"]
    assert "failed at login" in outcome.summary
    assert "wrong-password-canary" not in outcome.model_dump_json()
    assert mail["inbox"].messages == []


def test_high_bounce_rate_and_missing_settings(
    mail: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mail["sendgrid"].bounced = 80  # 8 %
    monkeypatch.delenv("EMAILS_FROM_EMAIL")
    outcome = email_delivery()
    assert outcome.status == "escalated"
    assert set(outcome.causes) == {"smtp-settings-incomplete", "high-bounce-rate"}
    assert mail["sendgrid"].deleted == []


def test_dry_run_removes_nothing(mail: dict[str, Any]) -> None:
    outcome = email_delivery(address="otp-user@school.test", dry_run=True)
    assert outcome.status == "planned" and outcome.actions[0].targets == ["otp-user@school.test"]
    assert mail["sendgrid"].deleted == []


def test_declined_and_timed_out_remove_nothing(
    mail: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.conftest import answer, paused_run_where, start

    future = start(flow=email_delivery, address="otp-user@school.test")
    answer(paused_run_where("address", "otp-user@school.test"), approve=False, approver="uma")
    assert future.result(timeout=60).status == "declined"
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert email_delivery(address="otp-user@school.test").status == "timed-out"
    assert mail["sendgrid"].deleted == []
    assert "otp-user@school.test" in mail["sendgrid"].bounces
