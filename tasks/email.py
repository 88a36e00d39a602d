"""Email delivery: the SMTP server the app sends through, and SendGrid's API.

SMTP: handshake, STARTTLS when configured, login when a user is set, and a real test message.
SendGrid (`SENDGRID_API_KEY`, base URL `SENDGRID_API_URL`): mail settings, the bounce list and the
bounce rate, and removing one named address from the bounce list.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from urllib.parse import quote

import httpx
from prefect.cache_policies import NONE
from pydantic import BaseModel, SecretStr

from remediate.tasks.steps import task

__all__ = ["SendGridState", "SmtpResult", "remove_bounce", "send_test_message", "sendgrid_state"]


class SmtpResult(BaseModel):
    ok: bool
    detail: str
    message_id: str | None = None


@task(name="smtp-test-message", cache_policy=NONE, tags=["smtp", "read-only"])
def send_test_message(
    *,
    host: str,
    port: int,
    user: str | None,
    password: SecretStr | None,
    use_tls: bool,
    use_ssl: bool,
    sender: str,
    recipient: str,
    timeout: float = 10.0,
) -> SmtpResult:
    """Connect, (STARTTLS), (login), and send a small test message; what the server said."""
    message = EmailMessage()
    message_id = f"<remediate-{int(time.time() * 1000)}@{sender.split('@')[-1]}>"
    message["From"], message["To"] = sender, recipient
    message["Subject"] = "remediate: email delivery check"
    message["Message-ID"] = message_id
    message.set_content("A test message from the email-delivery runbook. No action needed.")
    step = "connect"
    try:
        # As the template sends: SMTP_TLS (STARTTLS) wins over SMTP_SSL (implicit TLS).
        implicit = use_ssl and not use_tls
        # Implicit TLS checks the server's certificate as STARTTLS does (smtplib's SMTP_SSL
        # accepts any certificate without a context).
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
            if implicit
            else smtplib.SMTP(host, port, timeout=timeout)
        )
        with smtp:
            step = "EHLO"
            smtp.ehlo()
            if use_tls:
                step = "STARTTLS"
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if user:
                step = "login"
                smtp.login(user, password.get_secret_value() if password else "")
            step = "send"
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        reason = getattr(exc, "smtp_error", b"") or str(exc).encode()
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        return SmtpResult(
            ok=False,
            detail=f"SMTP {host}:{port} failed at {step}: {type(exc).__name__} {text[:200]}",
        )
    return SmtpResult(
        ok=True,
        message_id=message_id,
        detail=f"SMTP {host}:{port} accepted a test message to {recipient}",
    )


class SendGridState(BaseModel):
    ok: bool
    detail: str
    mail_settings_off: list[str] = []
    bounces: list[str] = []
    requests: int = 0
    bounced: int = 0

    @property
    def bounce_rate(self) -> float:
        return self.bounced / self.requests if self.requests else 0.0


def _client(base_url: str, key: SecretStr) -> httpx.Client:
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        timeout=10,
        headers={"Authorization": f"Bearer {key.get_secret_value()}"},
    )


@task(
    name="sendgrid-state",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["sendgrid", "read-only"],
)
def sendgrid_state(base_url: str, *, key: SecretStr, days: int = 1) -> SendGridState:
    """Mail settings that are off, the bounce list, and sends/bounces over the last `days`."""
    start = (datetime.now(UTC) - timedelta(days=days)).date().isoformat()
    try:
        with _client(base_url, key) as client:
            settings = client.get("/v3/mail_settings")
            settings.raise_for_status()
            bounces = client.get("/v3/suppression/bounces")
            bounces.raise_for_status()
            stats = client.get("/v3/stats", params={"start_date": start})
            stats.raise_for_status()
    except httpx.HTTPError as exc:
        return SendGridState(ok=False, detail=f"SendGrid ({base_url}): {type(exc).__name__}")
    off = [s["name"] for s in settings.json().get("result", []) if not s.get("enabled", True)]
    requests = bounced = 0
    for day in stats.json():
        for entry in day.get("stats", []):
            metrics = entry.get("metrics", {})
            requests += int(metrics.get("requests", 0))
            bounced += int(metrics.get("bounces", 0))
    emails = sorted(b["email"] for b in bounces.json())
    return SendGridState(
        ok=True,
        mail_settings_off=off,
        bounces=emails,
        requests=requests,
        bounced=bounced,
        detail=f"{bounced} bounce(s) of {requests} request(s) since {start};"
        f" {len(emails)} address(es) on the bounce list",
    )


@task(name="sendgrid-remove-bounce", cache_policy=NONE, tags=["sendgrid", "destructive"])
def remove_bounce(base_url: str, *, key: SecretStr, email: str) -> bool:
    """Delete exactly one address from the bounce suppression list."""
    with _client(base_url, key) as client:
        response = client.delete(f"/v3/suppression/bounces/{quote(email, safe='@')}")
    return response.status_code in {200, 204}
