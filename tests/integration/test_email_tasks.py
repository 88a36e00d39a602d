"""tasks/email.py against the real thing: a real SMTP server (aiosmtpd: plain, STARTTLS, implicit
TLS, AUTH LOGIN/PLAIN) that keeps what it received, and a local HTTP server answering SendGrid's v3
API in its documented shapes. No API key or password ever appears in a result or a log record."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from remediate.tasks import email
from remediate.tasks.email import SendGridState, SmtpResult
from tests.support.httpcapture import CaptureServer, Received
from tests.support.ports import free_port

SMTP_USER = "mailer"
SMTP_PASSWORD = "smtp-pw-canary-3b7e91"
WRONG_PASSWORD = "wrong-pw-canary-a04d55"
SENDGRID_KEY = "SG.sendgrid-key-canary-5c2f08"
SECRETS = (SMTP_PASSWORD, WRONG_PASSWORD, SENDGRID_KEY)
SENDER = "noreply@school.test"
RECIPIENT = "ops@school.test"
BODY = "A test message from the email-delivery runbook. No action needed.\r\n"  # as on the wire


# The SMTP server: aiosmtpd, keeping each message with the session it came in.


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)
    authenticated: bool
    login: bytes | None
    esmtp: bool  # the client greeted with EHLO


@dataclass
class Mailbox:
    refuse: set[str] = field(default_factory=set)  # recipients answered 550
    messages: list[Delivered] = field(default_factory=list)
    logins: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # every AUTH attempt

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((mechanism, data.login, data.password))
        ok = data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
        # Refused: 535 5.7.8, as servers answer; accepted: the session keeps the credentials.
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(
            Delivered(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.original_content,
                # STARTTLS sets session.ssl; implicit TLS is the connection's own.
                tls=session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
                login=getattr(session.auth_data, "login", None),
                esmtp=bool(session.extended_smtp),
            )
        )
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # a CA that signed nothing here
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a certificate it signed for 127.0.0.1 and localhost, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("remediate test CA")
    _, other_cert = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = Pki(
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        cert=folder / "server.pem",
        key=folder / "server.key",
    )
    paths.ca.write_bytes(ca_cert.public_bytes(pem))
    paths.other_ca.write_bytes(other_cert.public_bytes(pem))
    paths.cert.write_bytes(cert.public_bytes(pem))
    paths.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def trust(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    """The client trusts the test CA (ssl.create_default_context reads SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def distrust(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    """The client trusts only a CA that did not sign the server's certificate."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.other_ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    """Start an SMTP server with the given options; each is stopped after the test."""
    started: list[Controller] = []

    def start(mailbox: Mailbox, **options: Any) -> int:
        port = free_port()
        options.setdefault("auth_require_tls", False)
        controller = Controller(
            mailbox,
            hostname="127.0.0.1",
            port=port,
            authenticator=mailbox.authenticator,
            **options,
        )
        controller.start()
        started.append(controller)
        return port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger (httpx and httpcore included), down to DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_secret(
    logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], *seen: object
) -> None:
    out, err = capsys.readouterr()
    texts = [out, err, *(r.getMessage() for r in logs.records), *map(str, seen)]
    texts += [m.model_dump_json() for m in seen if isinstance(m, SmtpResult | SendGridState)]
    for secret in SECRETS:
        assert not [t for t in texts if secret in t], f"{secret} leaked"


def send(port: int, **overrides: Any) -> SmtpResult:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": SMTP_USER,
        "password": SecretStr(SMTP_PASSWORD),
        "use_tls": False,
        "use_ssl": False,
        "sender": SENDER,
        "recipient": RECIPIENT,
        "timeout": 5.0,
    } | overrides
    return email.send_test_message.fn(**options)


def accepted(port: int) -> str:
    return f"SMTP 127.0.0.1:{port} accepted a test message to {RECIPIENT}"


def assert_the_test_message(delivered: Delivered, result: SmtpResult) -> None:
    """What the server got is the module's test message, exactly."""
    assert delivered.mail_from == SENDER
    assert delivered.rcpt_tos == [RECIPIENT]
    message = message_from_bytes(delivered.content, policy=policy.default)
    assert message["From"] == SENDER
    assert message["To"] == RECIPIENT
    assert message["Subject"] == "remediate: email delivery check"
    assert message["Message-ID"] == result.message_id
    assert re.fullmatch(r"<remediate-\d{13}@school\.test>", result.message_id or "")
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == BODY


# SMTP: handshake, login, the message itself.


def test_plain_smtp_with_login_delivers_the_test_message(
    smtp_server: Any, logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    before = int(time.time() * 1000)

    result = send(port)

    assert result.ok is True and result.detail == accepted(port)
    (delivered,) = mailbox.messages
    assert_the_test_message(delivered, result)
    assert before <= int(re.findall(r"\d+", result.message_id or "")[0]) <= time.time() * 1000
    assert delivered.esmtp is True  # EHLO, not HELO
    assert delivered.tls is False
    assert delivered.authenticated is True and delivered.login == SMTP_USER.encode()
    assert mailbox.logins == [("PLAIN", SMTP_USER.encode(), SMTP_PASSWORD.encode())]
    assert_no_secret(logs, capsys, result)


def test_no_user_sends_without_logging_in(smtp_server: Any) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)

    result = send(port, user=None, password=None)

    assert result == SmtpResult(ok=True, detail=accepted(port), message_id=result.message_id)
    (delivered,) = mailbox.messages
    assert_the_test_message(delivered, result)
    assert delivered.authenticated is False and mailbox.logins == []


def test_a_wrong_password_fails_at_login_and_sends_nothing(
    smtp_server: Any, logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)

    result = send(port, password=SecretStr(WRONG_PASSWORD))

    assert result == SmtpResult(
        ok=False,
        detail=f"SMTP 127.0.0.1:{port} failed at login:"
        " SMTPAuthenticationError 5.7.8 Authentication credentials invalid",
    )
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN) before giving up.
    assert mailbox.logins == [
        ("PLAIN", SMTP_USER.encode(), WRONG_PASSWORD.encode()),
        ("LOGIN", SMTP_USER.encode(), WRONG_PASSWORD.encode()),
    ]
    assert mailbox.messages == []
    assert_no_secret(logs, capsys, result)


def test_a_user_without_a_password_logs_in_with_an_empty_one(smtp_server: Any) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)

    result = send(port, password=None)

    assert result.ok is False
    assert result.detail == (
        f"SMTP 127.0.0.1:{port} failed at login:"
        " SMTPAuthenticationError 5.7.8 Authentication credentials invalid"
    )
    assert mailbox.logins == [
        ("PLAIN", SMTP_USER.encode(), b""),
        ("LOGIN", SMTP_USER.encode(), b""),
    ]


def test_login_on_a_server_offering_no_auth_before_tls(smtp_server: Any) -> None:
    """aiosmtpd's default (and most servers'): AUTH only after STARTTLS."""
    mailbox = Mailbox()
    port = smtp_server(mailbox, auth_require_tls=True)

    result = send(port)

    assert result == SmtpResult(
        ok=False,
        detail=f"SMTP 127.0.0.1:{port} failed at login:"
        " SMTPNotSupportedError SMTP AUTH extension not supported by server.",
    )
    assert mailbox.logins == [] and mailbox.messages == []


def test_a_refused_recipient_fails_at_send(smtp_server: Any) -> None:
    mailbox = Mailbox(refuse={RECIPIENT})
    port = smtp_server(mailbox)

    result = send(port)

    assert result == SmtpResult(
        ok=False,
        detail=f"SMTP 127.0.0.1:{port} failed at send: SMTPRecipientsRefused"
        f" {{'{RECIPIENT}': (550, b'5.1.1 no such user')}}",
    )
    assert mailbox.messages == []


# TLS: STARTTLS (verified against the trust store) and implicit TLS.


def test_starttls_with_a_trusted_certificate_encrypts_then_logs_in(
    smtp_server: Any,
    pki: Pki,
    trust: None,
    logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mailbox = Mailbox()
    port = smtp_server(
        mailbox, tls_context=pki.server_context(), require_starttls=True, auth_require_tls=True
    )

    result = send(port, use_tls=True)

    assert result.ok is True and result.detail == accepted(port)
    (delivered,) = mailbox.messages
    assert_the_test_message(delivered, result)
    assert delivered.tls is True and delivered.authenticated is True
    assert_no_secret(logs, capsys, result)


def test_starttls_to_an_untrusted_certificate_never_sends_the_password(
    smtp_server: Any, pki: Pki, distrust: None
) -> None:
    mailbox = Mailbox()
    port = smtp_server(
        mailbox, tls_context=pki.server_context(), require_starttls=True, auth_require_tls=True
    )

    result = send(port, use_tls=True)

    assert result.ok is False and result.message_id is None
    assert result.detail.startswith(
        f"SMTP 127.0.0.1:{port} failed at STARTTLS: SSLCertVerificationError "
    )
    assert "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert mailbox.logins == [] and mailbox.messages == []


def test_starttls_on_a_server_without_it(smtp_server: Any) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)

    result = send(port, use_tls=True)

    assert result == SmtpResult(
        ok=False,
        detail=f"SMTP 127.0.0.1:{port} failed at STARTTLS:"
        " SMTPNotSupportedError STARTTLS extension not supported by server.",
    )
    assert mailbox.logins == [] and mailbox.messages == []


def test_starttls_wins_over_implicit_tls(smtp_server: Any, pki: Pki, trust: None) -> None:
    """SMTP_TLS and SMTP_SSL both set: STARTTLS on a plain connection, as the template sends."""
    mailbox = Mailbox()
    port = smtp_server(mailbox, tls_context=pki.server_context(), require_starttls=True)

    result = send(port, use_tls=True, use_ssl=True)

    assert result.ok is True and result.detail == accepted(port)
    (delivered,) = mailbox.messages
    assert delivered.tls is True and delivered.authenticated is True


def test_implicit_tls_with_a_trusted_certificate(smtp_server: Any, pki: Pki, trust: None) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox, ssl_context=pki.server_context())

    result = send(port, use_ssl=True)

    assert result.ok is True and result.detail == accepted(port)
    (delivered,) = mailbox.messages
    assert_the_test_message(delivered, result)
    assert delivered.tls is True and delivered.authenticated is True


def test_implicit_tls_to_an_untrusted_certificate_never_sends_the_password(
    smtp_server: Any, pki: Pki, distrust: None
) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox, ssl_context=pki.server_context())

    result = send(port, use_ssl=True)

    assert result.ok is False
    assert result.detail.startswith(
        f"SMTP 127.0.0.1:{port} failed at connect: SSLCertVerificationError "
    )
    assert mailbox.logins == [] and mailbox.messages == []


# SMTP: nothing there. A result, never an exception.


def test_a_closed_port_is_a_failed_connect() -> None:
    port = free_port()  # nothing listens there

    result = send(port)

    assert result == SmtpResult(
        ok=False,
        detail=f"SMTP 127.0.0.1:{port} failed at connect:"
        " ConnectionRefusedError [Errno 111] Connection refused",
    )


def test_an_unknown_host_is_a_failed_connect() -> None:
    result = send(25, host="smtp.invalid")

    assert result.ok is False and result.message_id is None
    assert result.detail.startswith("SMTP smtp.invalid:25 failed at connect: gaierror [Errno ")


def test_a_server_that_never_greets_times_out_at_connect() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()

        result = send(port, timeout=0.5)

        elapsed = time.monotonic() - started
    assert result == SmtpResult(
        ok=False,
        detail=f"SMTP 127.0.0.1:{port} failed at connect:"
        " SMTPServerDisconnected Connection unexpectedly closed: timed out",
    )
    assert 0.4 < elapsed < 3


# SendGrid: the v3 API, as documented (mail settings, bounces, stats; delete one bounce).


class SendGridApi:
    """SendGrid's v3 API on 127.0.0.1: checks `Authorization: Bearer <key>`, answers each
    endpoint in its documented shape, and keeps every request (tests.support.httpcapture's
    `Received`)."""

    def __init__(
        self, *, settings: list[dict[str, Any]], bounces: list[str], stats: list[dict[str, Any]]
    ) -> None:
        self.settings, self.bounces, self.stats = settings, bounces, stats
        self.received: list[Received] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                api.received.append(
                    Received(self.path, dict(self.headers), self.rfile.read(length), self.command)
                )
                if self.headers.get("Authorization") != f"Bearer {SENDGRID_KEY}":
                    return self._answer(
                        401, {"errors": [{"field": None, "message": "authorization required"}]}
                    )
                path = urlsplit(self.path).path
                if self.command == "GET" and path == "/v3/mail_settings":
                    return self._answer(200, {"result": api.settings})
                if self.command == "GET" and path == "/v3/suppression/bounces":
                    return self._answer(
                        200,
                        [
                            {
                                "created": 1443651125,
                                "email": address,
                                "reason": "550 5.1.1 The email account does not exist.",
                                "status": "5.1.1",
                            }
                            for address in api.bounces
                        ],
                    )
                if self.command == "GET" and path == "/v3/stats":
                    return self._answer(200, api.stats)
                prefix = "/v3/suppression/bounces/"
                if self.command == "DELETE" and path.startswith(prefix):
                    address = unquote(path[len(prefix) :])
                    if address not in api.bounces:
                        return self._answer(
                            404, {"errors": [{"field": None, "message": "Email not found"}]}
                        )
                    api.bounces.remove(address)
                    return self._answer(204)
                return self._answer(404, {"errors": [{"message": "not found"}]})

            do_GET = do_DELETE = _route  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def setting(name: str, enabled: bool) -> dict[str, Any]:
    return {"title": name.replace("_", " ").title(), "enabled": enabled, "name": name,
            "description": f"the {name} setting"}  # fmt: skip


def day(date: str, requests: int, bounces: int) -> dict[str, Any]:
    metrics = {"blocks": 0, "bounce_drops": 0, "bounces": bounces, "clicks": 0, "deferred": 0,
               "delivered": requests - bounces, "invalid_emails": 0, "opens": 0,
               "processed": requests, "requests": requests, "spam_reports": 0}  # fmt: skip
    return {"date": date, "stats": [{"metrics": metrics}]}


@pytest.fixture
def sendgrid() -> Iterator[SendGridApi]:
    api = SendGridApi(
        settings=[
            setting("bcc", True),
            setting("bounce_purge", False),
            setting("footer", True),
            setting("forward_bounce", False),
        ],
        bounces=["zed@school.test", "otp+user@school.test", "amy@school.test"],
        stats=[day("2026-11-21", 600, 9), day("2026-11-22", 400, 11)],
    )
    yield api
    api.close()


def key() -> SecretStr:
    return SecretStr(SENDGRID_KEY)


def since(days: int) -> set[str]:
    """The start date the module sends (either side of a UTC midnight during the test)."""
    return {(dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).date().isoformat()}


def test_sendgrid_state_reads_settings_bounces_and_stats(
    sendgrid: SendGridApi, logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    dates = since(1)

    state = email.sendgrid_state.fn(sendgrid.url + "/", key=key())

    dates |= since(1)
    assert [(r.method, urlsplit(r.path).path) for r in sendgrid.received] == [
        ("GET", "/v3/mail_settings"),
        ("GET", "/v3/suppression/bounces"),
        ("GET", "/v3/stats"),
    ]
    assert {r.headers["Authorization"] for r in sendgrid.received} == {f"Bearer {SENDGRID_KEY}"}
    (start,) = parse_qs(urlsplit(sendgrid.received[2].path).query)["start_date"]
    assert start in dates
    assert [urlsplit(r.path).query for r in sendgrid.received[:2]] == ["", ""]
    assert state == SendGridState(
        ok=True,
        mail_settings_off=["bounce_purge", "forward_bounce"],
        bounces=["amy@school.test", "otp+user@school.test", "zed@school.test"],
        requests=1000,
        bounced=20,
        detail=f"20 bounce(s) of 1000 request(s) since {start}; 3 address(es) on the bounce list",
    )
    assert state.bounce_rate == 0.02
    assert_no_secret(logs, capsys, state)


def test_sendgrid_state_over_a_week_and_with_nothing_sent(sendgrid: SendGridApi) -> None:
    sendgrid.settings, sendgrid.bounces, sendgrid.stats = [setting("bcc", True)], [], []
    dates = since(7)

    state = email.sendgrid_state.fn(sendgrid.url, key=key(), days=7)

    dates |= since(7)
    (start,) = parse_qs(urlsplit(sendgrid.received[2].path).query)["start_date"]
    assert start in dates
    assert state == SendGridState(
        ok=True,
        detail=f"0 bounce(s) of 0 request(s) since {start}; 0 address(es) on the bounce list",
    )
    assert state.bounce_rate == 0.0


def test_sendgrid_state_with_a_refused_key_is_not_ok(
    sendgrid: SendGridApi, logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "SG.wrong-key-canary"

    state = email.sendgrid_state.fn(sendgrid.url, key=SecretStr(wrong))

    assert state == SendGridState(ok=False, detail=f"SendGrid ({sendgrid.url}): HTTPStatusError")
    assert [(r.method, r.path) for r in sendgrid.received] == [("GET", "/v3/mail_settings")]
    assert sendgrid.received[0].headers["Authorization"] == f"Bearer {wrong}"
    assert wrong not in state.model_dump_json()
    assert_no_secret(logs, capsys, state)


def test_sendgrid_state_stops_at_the_first_failing_endpoint() -> None:
    """A server error on every endpoint (httpcapture answers the same to every request)."""
    capture = CaptureServer(status=503, body=b'{"errors":[{"message":"unavailable"}]}')
    try:
        state = email.sendgrid_state.fn(capture.url, key=key())
    finally:
        capture.close()

    assert state == SendGridState(ok=False, detail=f"SendGrid ({capture.url}): HTTPStatusError")
    assert [(r.method, r.path) for r in capture.received] == [("GET", "/v3/mail_settings")]
    assert capture.received[0].headers["Authorization"] == f"Bearer {SENDGRID_KEY}"


def test_sendgrid_state_unreachable_is_not_ok() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    state = email.sendgrid_state.fn(url, key=key())

    assert state == SendGridState(ok=False, detail=f"SendGrid ({url}): ConnectError")


def test_remove_bounce_deletes_exactly_that_address(
    sendgrid: SendGridApi, logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    removed = email.remove_bounce.fn(sendgrid.url, key=key(), email="otp+user@school.test")

    assert removed is True
    (request,) = sendgrid.received
    assert request.method == "DELETE"
    assert request.path == "/v3/suppression/bounces/otp%2Buser@school.test"
    assert request.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"
    assert request.body == b""
    assert sendgrid.bounces == ["zed@school.test", "amy@school.test"]
    assert_no_secret(logs, capsys)


def test_remove_bounce_keeps_an_odd_address_in_one_path_segment(sendgrid: SendGridApi) -> None:
    odd = "we?ird/name#1@school.test"
    sendgrid.bounces.append(odd)

    assert email.remove_bounce.fn(sendgrid.url, key=key(), email=odd) is True

    assert [r.path for r in sendgrid.received] == [
        "/v3/suppression/bounces/we%3Fird%2Fname%231@school.test"
    ]
    assert sendgrid.bounces == ["zed@school.test", "otp+user@school.test", "amy@school.test"]


def test_remove_bounce_of_an_address_not_on_the_list_is_false(sendgrid: SendGridApi) -> None:
    assert email.remove_bounce.fn(sendgrid.url, key=key(), email="nobody@school.test") is False
    assert [(r.method, r.path) for r in sendgrid.received] == [
        ("DELETE", "/v3/suppression/bounces/nobody@school.test")
    ]
    assert len(sendgrid.bounces) == 3


def test_remove_bounce_with_a_refused_key_is_false(sendgrid: SendGridApi) -> None:
    removed = email.remove_bounce.fn(
        sendgrid.url, key=SecretStr("SG.wrong-key-canary"), email="amy@school.test"
    )

    assert removed is False
    assert sendgrid.bounces == ["zed@school.test", "otp+user@school.test", "amy@school.test"]


def test_remove_bounce_unreachable_raises_the_connect_error(
    logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unlike sendgrid_state, remove_bounce promises no result for a dead API: it raises (the
    runbook's action step fails), and the error names no key."""
    url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(httpx.ConnectError) as raised:
        email.remove_bounce.fn(url, key=key(), email="amy@school.test")

    assert_no_secret(logs, capsys, raised.value, repr(raised.value))


def test_doctor_over_implicit_tls_checks_the_certificate_too(
    smtp_server: Any, pki: Pki, distrust: None
) -> None:
    """`remediate doctor`'s SMTP line (SMTP_SSL on, SMTP_TLS off) refuses an untrusted
    certificate before any login, as the runbook's own probe does."""
    from remediate.app import doctor
    from remediate.domain.settings import Settings

    mailbox = Mailbox()
    port = smtp_server(mailbox, ssl_context=pki.server_context())
    settings = Settings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_ssl=True,
        smtp_tls=False,
        smtp_user=SMTP_USER,
        smtp_password=SecretStr(SMTP_PASSWORD),
    )

    with pytest.raises(doctor.Broken) as broken:
        doctor._smtp(settings)

    assert "SSLCertVerificationError" in str(broken.value)
    assert mailbox.logins == [] and mailbox.messages == []
