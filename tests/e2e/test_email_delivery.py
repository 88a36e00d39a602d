"""email-delivery against a real SMTP server (aiosmtpd) and a local stand-in for SendGrid's API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiosmtpd.controller import Controller

from remediate.drills.standins import KEY, SMTP_PASSWORD, Inbox, SendGrid, authenticator
from remediate.flows.email_delivery import email_delivery
from tests.e2e.conftest import assert_no_secret
from tests.support.httpcapture import CaptureServer
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")


@dataclass(frozen=True)
class Mail:
    inbox: Inbox  # what the SMTP server received
    sendgrid: SendGrid


@pytest.fixture
def mail(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Mail]:
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
    yield Mail(inbox=inbox, sendgrid=sendgrid)
    smtp.stop()
    sendgrid.server.shutdown()


def test_healthy_delivery_sends_a_real_test_message(mail: Mail) -> None:
    outcome = email_delivery()
    assert outcome.status == "healthy", outcome.findings
    (message,) = mail.inbox.messages
    assert message.rcpt_tos == ["noreply@school.test"]
    assert b"email-delivery runbook" in message.content


def test_a_bounced_address_is_removed_and_nothing_else(
    mail: Mail, monkeypatch: pytest.MonkeyPatch
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
    assert mail.sendgrid.deleted == ["otp-user@school.test"]
    assert mail.sendgrid.bounces == ["old@school.test"]
    seen = outcome.model_dump_json()
    assert KEY not in seen and SMTP_PASSWORD not in seen


def test_wrong_smtp_password_is_escalated(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password-canary")
    outcome = email_delivery(auto_approve=True)
    assert outcome.status == "escalated"
    assert outcome.causes == ["smtp-failing"]
    assert "failed at login" in outcome.summary
    assert "wrong-password-canary" not in outcome.model_dump_json()
    assert mail.inbox.messages == []


def test_high_bounce_rate_and_missing_settings(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    mail.sendgrid.bounced = 80  # 8 %
    monkeypatch.delenv("EMAILS_FROM_EMAIL")
    outcome = email_delivery()
    assert outcome.status == "escalated"
    assert set(outcome.causes) == {"smtp-settings-incomplete", "high-bounce-rate"}
    assert mail.sendgrid.deleted == []


def test_dry_run_removes_nothing(mail: Mail) -> None:
    outcome = email_delivery(address="otp-user@school.test", dry_run=True)
    assert outcome.status == "planned" and outcome.actions[0].targets == ["otp-user@school.test"]
    assert mail.sendgrid.deleted == []


def test_declined_and_timed_out_remove_nothing(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.e2e.conftest import answer, paused_run_where, start

    future = start(flow=email_delivery, address="otp-user@school.test")
    answer(paused_run_where("address", "otp-user@school.test"), approve=False, approver="uma")
    assert future.result(timeout=60).status == "declined"
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert email_delivery(address="otp-user@school.test").status == "timed-out"
    assert mail.sendgrid.deleted == []
    assert "otp-user@school.test" in mail.sendgrid.bounces
