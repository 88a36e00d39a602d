"""`remediate doctor` against the real services: every part up, then each part down in turn.

PostgreSQL, Redis and the podman engine are the real ones; Slack, PagerDuty, the status page,
GitHub, Sentry and SendGrid are local servers answering in their documented shapes; SMTP is a real
server (aiosmtpd). Every secret is a canary that must never reach stdout or stderr, and nothing is
posted, triggered, changed or mailed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiosmtpd.controller import Controller
from typer.testing import CliRunner

from remediate.app.cli import app
from remediate.drills.standins import KEY, SMTP_PASSWORD, Inbox, SendGrid, authenticator
from tests.conftest import REDIS_URL, db_url
from tests.e2e.conftest import DOCKER_HOST
from tests.support.httpcapture import CaptureServer
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")
REMEDIATE = str(Path(sys.executable).with_name("remediate"))

PG_PASSWORD = "pg-canary-5e1f9a"
REDIS_PASSWORD = "redis-canary-77ab03"
WEBHOOK_TOKEN = "WebhookCanary0123456789abcdef"
SLACK_TOKEN = "xoxb-canary-0c3d9e7f"
PAGERDUTY_KEY = "canary0pagerduty0routing0key0032"  # 32 letters and digits, as PagerDuty's
STATUSPAGE_KEY = "statuspage-canary-41d2"
GITHUB_TOKEN = "ghp_canary_9b8a7c6d5e"
SENTRY_TOKEN = "sentry-canary-token-2f4e"
DSN_KEY = "0123456789abcdef0123456789abcdef"
CANARIES = [
    PG_PASSWORD,
    REDIS_PASSWORD,
    WEBHOOK_TOKEN,
    SLACK_TOKEN,
    PAGERDUTY_KEY,
    STATUSPAGE_KEY,
    GITHUB_TOKEN,
    SENTRY_TOKEN,
    DSN_KEY,
    SMTP_PASSWORD,
    KEY,
]
SLACK_OK = {"ok": True, "url": "https://acme.slack.com/", "team": "Acme", "user": "remediate"}
SLACK_REFUSED = {"ok": False, "error": "invalid_auth"}
PAGERDUTY_INVALID = {  # what the Events API answers to an event without a routing key
    "status": "invalid event",
    "message": "Event object is invalid",
    "errors": ["'routing_key' is missing"],
}


def _json(body: object) -> bytes:
    return json.dumps(body).encode()


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or ''}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Services:
    servers: dict[str, CaptureServer]
    inbox: Inbox
    smtp_port: int
    sendgrid: SendGrid


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    """The stand-ins, once for the module (each test starts with their records empty)."""
    servers = {
        "app": CaptureServer(),
        "frontend": CaptureServer(body=b"<!doctype html><div id=app></div>"),
        "webhook": CaptureServer(),
        "slack": CaptureServer(body=_json(SLACK_OK)),
        "slack-refusing": CaptureServer(body=_json(SLACK_REFUSED)),
        "pagerduty": CaptureServer(status=400, body=_json(PAGERDUTY_INVALID)),
        "statuspage": CaptureServer(body=_json({"id": "cmp-db", "status": "operational"})),
        "statuspage-refusing": CaptureServer(status=401, body=b'{"error":"Unauthorized"}'),
        "github": CaptureServer(body=_json({"full_name": "acme/app", "has_issues": True})),
        "github-refusing": CaptureServer(status=401, body=b'{"message":"Bad credentials"}'),
        "sentry": CaptureServer(body=_json({"slug": "app", "name": "app"})),
    }
    inbox, smtp_port = Inbox(), free_port()
    smtp = Controller(
        inbox,
        hostname="127.0.0.1",
        port=smtp_port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    smtp.start()
    sendgrid = SendGrid(bounces=[], requests=0, bounced=0)
    yield Services(servers, inbox, smtp_port, sendgrid)
    smtp.stop()
    sendgrid.server.shutdown()
    for server in servers.values():
        server.close()


@dataclass
class World:
    env: dict[str, str]
    servers: dict[str, CaptureServer]
    closed: str  # host:port where nothing listens
    tmp: Path


@pytest.fixture
def world(
    env: dict[str, str],
    services: Services,
    make_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[World]:
    """Every part configured, and each answering."""
    servers = services.servers
    for server in servers.values():
        server.received.clear()
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (tmp_path / "versions").mkdir()
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    values = {
        "REMEDIATION_DATABASE_URL": with_password(env["REMEDIATION_DATABASE_URL"], PG_PASSWORD),
        "REMEDIATION_REDIS_URL": with_password(REDIS_URL, REDIS_PASSWORD),
        "DOCKER_HOST": DOCKER_HOST,
        "TARGET_DATABASE_URL": with_password(env["TARGET_DATABASE_URL"], PG_PASSWORD),
        "SWEEP_DATABASES": make_database(),
        "TARGET_REDIS_URL": REDIS_URL,
        "APP_URL": servers["app"].url,
        "FRONTEND_URL": servers["frontend"].url,
        "ALEMBIC_CONFIG": str(tmp_path / "alembic.ini"),
        "MIGRATIONS_DIR": str(tmp_path / "versions"),
        "APP_REPO": str(tmp_path / "repo"),
        "SLACK_WEBHOOK_URL": f"{servers['webhook'].url}/services/T0001/B0001/{WEBHOOK_TOKEN}",
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_API_URL": f"{servers['slack'].url}/api",
        "PAGERDUTY_ROUTING_KEY": PAGERDUTY_KEY,
        "PAGERDUTY_EVENTS_URL": f"{servers['pagerduty'].url}/v2/enqueue",
        "STATUSPAGE_URL": f"{servers['statuspage'].url}/v1/pages/page1",
        "STATUSPAGE_API_KEY": STATUSPAGE_KEY,
        "STATUSPAGE_COMPONENTS": "Postgres Database=cmp-db",
        "GITHUB_REPO": "acme/app",
        "GITHUB_TOKEN": GITHUB_TOKEN,
        "GITHUB_API_URL": servers["github"].url,
        "SENTRY_API_URL": servers["sentry"].url,
        "SENTRY_AUTH_TOKEN": SENTRY_TOKEN,
        "SENTRY_ORG": "acme",
        "SENTRY_PROJECT": "app",
        "SENTRY_DSN": f"http://{DSN_KEY}@{servers['sentry'].url.split('//')[1]}/42",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(services.smtp_port),
        "SMTP_TLS": "false",
        "SMTP_USER": "mailer",
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "EMAILS_FROM_EMAIL": "noreply@school.test",
        "SENDGRID_API_KEY": KEY,
        "SENDGRID_API_URL": services.sendgrid.url,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield World(values, servers, f"127.0.0.1:{free_port()}", tmp_path)
    assert not services.inbox.messages, "doctor sent mail"
    assert not services.sendgrid.deleted


def assert_clean(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text
        for canary in CANARIES:
            assert canary not in text, f"a secret reached the output: {text}"


def assert_nothing_sent(w: World) -> None:
    """Read-only: the webhook got no message, PagerDuty no event, the status page no change."""
    assert {(r.method, r.path) for r in w.servers["webhook"].received} <= {("GET", "/")}
    assert all(r.json() == {} for r in w.servers["pagerduty"].received)
    assert {r.method for r in w.servers["statuspage"].received} <= {"GET"}
    assert {r.method for r in w.servers["github"].received} <= {"GET"}


def test_every_part_up_is_ok_line_by_line_and_exit_0(world: World) -> None:
    started = time.monotonic()
    text = subprocess.run([REMEDIATE, "doctor"], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    report = subprocess.run(
        [REMEDIATE, "doctor", "--json"], capture_output=True, text=True, timeout=60
    )
    assert_clean(text.stdout, text.stderr, report.stdout, report.stderr)
    assert text.returncode == 0, text.stdout + text.stderr
    assert report.returncode == 0, report.stdout + report.stderr
    parsed = json.loads(report.stdout)  # stdout holds the JSON and nothing else
    assert parsed["ok"] is True
    parts = parsed["parts"]
    assert [p["status"] for p in parts] == ["ok"] * len(parts), parts
    assert set(parts[0]) == {"part", "setting", "status", "detail"}
    names = {p["setting"] for p in parts}
    assert {
        "REMEDIATION_DATABASE_URL",
        "REMEDIATION_REDIS_URL",
        "PREFECT_API_URL",
        "DOCKER_HOST",
        "TARGET_DATABASE_URL",
        "SWEEP_DATABASES",
        "TARGET_REDIS_URL",
        "APP_URL",
        "FRONTEND_URL",
        "SLACK_WEBHOOK_URL",
        "SLACK_BOT_TOKEN",
        "PAGERDUTY_ROUTING_KEY",
        "STATUSPAGE_URL",
        "GITHUB_REPO",
        "SENTRY_API_URL",
        "SENTRY_DSN",
        "SMTP_HOST",
        "SENDGRID_API_KEY",
    } <= names
    lines = text.stdout.splitlines()
    assert len(lines) == len(parts) and all(line.startswith("ok ") for line in lines), lines
    by_setting = {p["setting"]: p["detail"] for p in parts}
    # What answered, and the URLs shown without their passwords.
    assert "PostgreSQL " in by_setting["TARGET_DATABASE_URL"]
    assert "postgresql://postgres@127.0.0.1" in by_setting["TARGET_DATABASE_URL"]
    assert "Redis " in by_setting["REMEDIATION_REDIS_URL"]
    assert "Prefect 3." in by_setting["PREFECT_API_URL"]
    assert "Podman 4." in by_setting["DOCKER_HOST"]
    assert "remediate in Acme" in by_setting["SLACK_BOT_TOKEN"]
    assert "nothing posted" in by_setting["SLACK_WEBHOOK_URL"]
    assert "login as mailer" in by_setting["SMTP_HOST"]
    assert "operational" in by_setting["STATUSPAGE_URL"]
    slack_calls = world.servers["slack"].received
    assert {r.path for r in slack_calls} == {"/api/auth.test"}
    assert slack_calls[0].headers["Authorization"] == f"Bearer {SLACK_TOKEN}"
    assert_nothing_sent(world)
    assert elapsed < 15, f"doctor took {elapsed:.1f} s"


CASES: list[tuple[str, Callable[[World], dict[str, str | None]], set[str]]] = [
    (
        "store-down",
        lambda w: {
            "REMEDIATION_DATABASE_URL": f"postgresql://postgres:{PG_PASSWORD}@{w.closed}/store"
        },
        {"REMEDIATION_DATABASE_URL"},
    ),
    (
        "redis-down",
        lambda w: {"REMEDIATION_REDIS_URL": f"redis://:{REDIS_PASSWORD}@{w.closed}/0"},
        {"REMEDIATION_REDIS_URL"},
    ),
    ("prefect-down", lambda w: {"PREFECT_API_URL": f"http://{w.closed}/api"}, {"PREFECT_API_URL"}),
    (
        "engine-down",
        lambda w: {"DOCKER_HOST": f"unix://{w.tmp}/no-engine.sock"},
        {"DOCKER_HOST"},
    ),
    (
        "compose-project-empty",
        lambda w: {"COMPOSE_PROJECT_NAME": "rt-no-such-project"},
        {"COMPOSE_PROJECT_NAME"},
    ),
    (
        "target-database-wrong-name",
        lambda w: {
            "TARGET_DATABASE_URL": with_password(db_url("rt_no_such_database"), PG_PASSWORD)
        },
        {"TARGET_DATABASE_URL"},
    ),
    (
        "target-database-not-set",
        lambda w: {"TARGET_DATABASE_URL": None, "SWEEP_DATABASES": None},
        {"TARGET_DATABASE_URL"},
    ),
    (
        "target-database-malformed",  # set aside: named, and every other part still checked
        lambda w: {"TARGET_DATABASE_URL": f"mysql://root:{PG_PASSWORD}@127.0.0.1/app"},
        {"TARGET_DATABASE_URL"},
    ),
    ("sweep-database-missing", lambda w: {"SWEEP_DATABASES": "rt_gone"}, {"SWEEP_DATABASES"}),
    (
        "target-redis-down",
        lambda w: {"TARGET_REDIS_URL": f"redis://:{REDIS_PASSWORD}@{w.closed}/1"},
        {"TARGET_REDIS_URL"},
    ),
    ("app-down", lambda w: {"APP_URL": f"http://{w.closed}"}, {"APP_URL"}),
    ("frontend-down", lambda w: {"FRONTEND_URL": f"http://{w.closed}/"}, {"FRONTEND_URL"}),
    (
        "alembic-ini-missing",
        lambda w: {"ALEMBIC_CONFIG": f"{w.tmp}/gone/alembic.ini"},
        {"ALEMBIC_CONFIG"},
    ),
    (
        "slack-webhook-down",
        lambda w: {"SLACK_WEBHOOK_URL": f"http://{w.closed}/services/T1/B1/{WEBHOOK_TOKEN}"},
        {"SLACK_WEBHOOK_URL"},
    ),
    (
        "slack-token-refused",
        lambda w: {"SLACK_API_URL": f"{w.servers['slack-refusing'].url}/api"},
        {"SLACK_BOT_TOKEN"},
    ),
    (
        "pagerduty-down",
        lambda w: {"PAGERDUTY_EVENTS_URL": f"http://{w.closed}/v2/enqueue"},
        {"PAGERDUTY_EVENTS_URL"},
    ),
    (
        "pagerduty-key-shape",
        lambda w: {"PAGERDUTY_ROUTING_KEY": "short-canary-key"},
        {"PAGERDUTY_ROUTING_KEY"},
    ),
    (
        "statuspage-key-refused",
        lambda w: {"STATUSPAGE_URL": f"{w.servers['statuspage-refusing'].url}/v1/pages/page1"},
        {"STATUSPAGE_API_KEY"},
    ),
    (
        "statuspage-unknown-component",
        lambda w: {"STATUSPAGE_COMPONENTS": "Postgres DB=cmp-db"},
        {"STATUSPAGE_COMPONENTS"},
    ),
    (
        "github-token-refused",
        lambda w: {"GITHUB_API_URL": w.servers["github-refusing"].url},
        {"GITHUB_TOKEN"},
    ),
    (
        "sentry-api-down",
        lambda w: {"SENTRY_API_URL": f"http://{w.closed}"},
        {"SENTRY_API_URL"},
    ),
    (
        "sentry-dsn-malformed-and-smtp-port-bad",  # two bad settings: both named
        lambda w: {"SENTRY_DSN": f"{DSN_KEY}@sentry", "SMTP_PORT": "smtp"},
        {"SENTRY_DSN", "SMTP_PORT"},
    ),
    ("smtp-down", lambda w: {"SMTP_PORT": w.closed.split(":")[1]}, {"SMTP_HOST"}),
    ("smtp-login-refused", lambda w: {"SMTP_USER": "intruder"}, {"SMTP_PASSWORD"}),
    (
        "sendgrid-key-refused",
        lambda w: {"SENDGRID_API_KEY": "SG.wrong-canary-key"},
        {"SENDGRID_API_KEY"},
    ),
]


def doctor_here(*args: str) -> Any:
    """The command in this process (the same code as `remediate doctor`, without a new
    interpreter per case): its exit code, stdout and stderr."""
    return CliRunner().invoke(app, ["doctor", *args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("overrides", "failing"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_part_down_fails_its_line_naming_the_setting(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    overrides: Callable[[World], dict[str, str | None]],
    failing: set[str],
) -> None:
    changes = overrides(world)
    for name, value in changes.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    secrets = [v for v in changes.values() if v and ("canary" in v or PG_PASSWORD in v)]
    report = doctor_here("--json")
    text = doctor_here()
    assert_clean(report.stdout, report.stderr, text.stdout, text.stderr)
    for output in (report.stdout, text.stdout, text.stderr):
        for value in secrets:
            assert value not in output
    assert report.exit_code == 1 and text.exit_code == 1, report.stdout
    parsed = json.loads(report.stdout)
    assert parsed["ok"] is False
    failed = [p for p in parsed["parts"] if p["status"] == "FAIL"]
    assert {p["setting"] for p in failed} == failing, failed
    assert all(p["status"] == "ok" for p in parsed["parts"] if p not in failed), parsed["parts"]
    # The text line of each failing part says FAIL and names its setting.
    for p in failed:
        (line,) = [line for line in text.stdout.splitlines() if f"  {p['part']}  " in line]
        assert line.startswith("FAIL") and p["setting"] in line, line
    assert "remediate: not ready" in text.stderr
    assert_nothing_sent(world)


def test_without_prefect_api_url_a_private_server_is_what_runs_would_use(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setattr("remediate.engine.prefect_api.LOCAL_API_URL", f"http://{world.closed}/api")
    result = doctor_here("--json")
    parsed = json.loads(result.stdout)
    (prefect,) = [p for p in parsed["parts"] if p["setting"] == "PREFECT_API_URL"]
    assert prefect["status"] == "not configured", prefect
    assert "private Prefect server" in prefect["detail"]
    assert result.exit_code == 0 and parsed["ok"] is True, parsed


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that takes connections and never says a word (a hung server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_parts_that_hang_are_reported_within_seconds(
    world: World, monkeypatch: pytest.MonkeyPatch, silent: str
) -> None:
    for name, value in {
        "TARGET_DATABASE_URL": f"postgresql://postgres@{silent}/app",
        "TARGET_REDIS_URL": f"redis://{silent}/0",
        "APP_URL": f"http://{silent}",
        "SLACK_API_URL": f"http://{silent}/api",
        "SMTP_PORT": silent.split(":")[1],
    }.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    result = doctor_here("--json")
    elapsed = time.monotonic() - started
    parsed = json.loads(result.stdout)
    failed = {p["setting"] for p in parsed["parts"] if p["status"] == "FAIL"}
    assert {"TARGET_DATABASE_URL", "TARGET_REDIS_URL", "APP_URL", "SMTP_HOST"} <= failed, failed
    assert {"SLACK_API_URL", "SLACK_BOT_TOKEN"} & failed
    assert result.exit_code == 1
    assert elapsed < 12, f"doctor took {elapsed:.1f} s with hung parts"
