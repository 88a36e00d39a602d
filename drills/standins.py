"""Local stand-ins for third-party services of the drills and the tests: a real SMTP inbox
(aiosmtpd) and SendGrid's API (mail settings, bounces, stats; a bounce can be deleted)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from aiosmtpd.smtp import AuthResult, LoginPassword

__all__ = ["KEY", "SMTP_PASSWORD", "Inbox", "SendGrid", "authenticator"]

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
    return AuthResult(success=ok, handled=False)  # a refusal is answered 535, as servers do


class SendGrid:
    """GET mail_settings, bounces, stats; DELETE a bounce. Checks the bearer key."""

    def __init__(self, bounces: list[str], requests: int, bounced: int) -> None:
        outer = self
        self.bounces, self.requests, self.bounced = bounces, requests, bounced
        self.deleted: list[str] = []

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
