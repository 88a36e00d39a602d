"""A local HTTP server standing in for a SaaS webhook: records what it receives, answers as told."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class CaptureServer:
    """Answers `status` with `body` to every request, and keeps each one (method in `method`)."""

    status: int = 200
    body: bytes = b"ok"
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def _take(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received = Received(self.path, dict(self.headers), self.rfile.read(length))
                received.method = self.command
                capture.received.append(received)
                self.send_response(capture.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(capture.body)))
                self.end_headers()
                self.wfile.write(capture.body)

            do_POST = do_PATCH = do_GET = do_PUT = _take  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
