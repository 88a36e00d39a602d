"""The product's own error reports (sentry-sdk) reach a local envelope endpoint, tagged with the
runbook and the incident, and carry no secret."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import zlib

from tests.conftest import ROOT
from tests.support.httpcapture import CaptureServer

CANARY_PASSWORD = "db-password-canary-6e1"
CANARY_SLACK = "slack-token-canary-2b8"

# The secrets reach the process as settings only (never in argv), as in production.
SCRIPT = """
import os
from remediate.engine import monitoring
from remediate.domain.settings import load_settings

settings = load_settings()
monitoring.tag_incident(runbook="rate-limiter", incident_id="inc-42", settings=settings)
target = os.environ["TARGET_DATABASE_URL"]
token = os.environ["SLACK_WEBHOOK_URL"].rsplit("/", 1)[1]
try:
    raise RuntimeError(f"could not reach {target} (host db, password in {target}) via {token}")
except RuntimeError as exc:
    monitoring.capture_exception(exc)
"""


def envelope_items(body: bytes, encoding: str) -> list[dict]:
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding == "br":
        import brotli  # type: ignore[import-not-found]

        body = brotli.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    items = []
    for line in body.decode().splitlines():
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return items


def test_an_error_report_is_tagged_and_scrubbed() -> None:
    sentry = CaptureServer()
    try:
        port = sentry.url.rsplit(":", 1)[1]
        env = {
            **os.environ,
            "SENTRY_DSN": f"http://publickey@127.0.0.1:{port}/1",
            "TARGET_DATABASE_URL": f"postgresql://app:{CANARY_PASSWORD}@db:5432/app",
            "SLACK_WEBHOOK_URL": f"https://hooks.slack.test/services/{CANARY_SLACK}",
        }
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while not sentry.received and time.monotonic() < deadline:
            time.sleep(0.1)
        [request] = [r for r in sentry.received if "envelope" in r.path]
        raw = request.body
        items = envelope_items(raw, request.headers.get("Content-Encoding", ""))
        [event] = [i for i in items if "exception" in i]
        assert event["tags"]["runbook"] == "rate-limiter"
        assert event["tags"]["incident"] == "inc-42"
        text = json.dumps(items)
        assert "RuntimeError" in text and "[Filtered]" in text
        assert CANARY_PASSWORD not in text and CANARY_SLACK not in text
    finally:
        sentry.close()
