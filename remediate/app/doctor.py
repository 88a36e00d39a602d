"""`remediate doctor`: every configured part reached once, in a few seconds (CONTRACT.md).

What a person runs first after configuring: one line per part (the incident store, the product's
Redis, Prefect, the container engine, each target, each notification channel) saying what answered
or what is wrong and which setting to fix. Read-only: no message is posted, no event triggered, no
mail sent, no database created. The checks run at once, each with a short timeout, and a setting
that does not parse is named on its part's line while every other part is still checked.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
from pydantic import SecretStr, ValidationError

from remediate.domain.settings import Settings, redact_url, setting_problem

__all__ = ["Part", "Report", "examine", "lines"]

Status = Literal["ok", "FAIL", "not configured"]
TIMEOUT = 3.0  # seconds, per connection or request
DEADLINE = 10.0  # seconds for the whole report: a part still silent by then is a FAIL
APPLICATION_NAME = "remediate:doctor"  # `remediate…` sessions are never terminated by a runbook
PROJECT_LABEL = "com.docker.compose.project"
ENGINE_API = "1.41"  # podman 4's, and within what every current Docker engine serves
TEMPLATE_HEALTH_PATH = "/api/v1/utils/health-check/"


@dataclass(frozen=True)
class Part:
    """One line of the report: `setting` is the one to look at (the one to fix on a FAIL)."""

    part: str
    setting: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Report:
    parts: list[Part]

    @property
    def ok(self) -> bool:
        return all(p.status != "FAIL" for p in self.parts)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "parts": [asdict(p) for p in self.parts]}


class Broken(Exception):
    """A part that does not answer, or answers wrongly; `setting` overrides the part's own."""

    def __init__(self, detail: str, *, setting: str | None = None) -> None:
        super().__init__(detail)
        self.setting = setting


class NotConfigured(Exception):
    """A part found unset while checking it (Prefect without PREFECT_API_URL)."""


@dataclass(frozen=True)
class Check:
    part: str
    setting: str
    run: Callable[[], str] | None  # None: not configured, `unset` says what that means
    unset: str = ""
    related: tuple[str, ...] = field(default=())  # other settings the check reads

    @property
    def settings(self) -> tuple[str, ...]:
        return (self.setting, *self.related)


# Reaching things, with short timeouts and one-line reasons.


def _outside(text: str) -> str:
    """Text a server sent (an error, a reply), shortened and with secret-looking values masked."""
    from remediate.domain.redact import redact

    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return redact(lines[0] if lines else "")[:200]


def _http(
    method: str,
    url: str,
    *,
    setting: str | None = None,
    headers: dict[str, str] | None = None,
    json: object = None,
    follow: bool = False,
    shown: str | None = None,
) -> httpx.Response:
    try:
        return httpx.request(
            method, url, headers=headers, json=json, timeout=TIMEOUT, follow_redirects=follow
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = _outside(str(exc)) or type(exc).__name__
        raise Broken(f"{method} {shown or redact_url(url)}: {reason}", setting=setting) from None


def _origin(url: str) -> str:
    """`scheme://host:port` of a URL: what may be shown of a URL whose path is its secret."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def _pg_reason(exc: BaseException) -> str:
    """libpq's reason without its preamble: `database "x" does not exist`, `Connection refused`."""
    first = _outside(str(exc)) or type(exc).__name__
    reason = first.rsplit(" failed: ", 1)[-1]
    return " ".join(reason.removeprefix("FATAL:").split())


def _pg(url: str) -> Any:
    import psycopg

    return psycopg.connect(
        url, autocommit=True, connect_timeout=int(TIMEOUT), application_name=APPLICATION_NAME
    )


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _server_version(conn: Any) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {str(row[0]).split()[0]}"


# The product itself.


def _store(url: SecretStr) -> str:
    import psycopg

    raw, where = url.get_secret_value(), redact_url(url)
    name = urlsplit(raw).path.lstrip("/")
    try:
        with _pg(raw) as conn:
            version = _server_version(conn)
            found = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
            revisions = (
                {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")}
                if found and found[0]
                else set()
            )
    except psycopg.Error as exc:
        reason = _pg_reason(exc)
        if f'database "{name}" does not exist' not in reason:
            raise Broken(f"{where}: {reason}") from None
        return _store_to_create(raw, where=where, name=name)
    return f"{where}: {version}; {_schema(revisions)}"


def _store_to_create(raw: str, *, where: str, name: str) -> str:
    """The store's server answers without its database, which the first command creates."""
    import psycopg

    try:
        with _pg(_with_database(raw, "postgres")) as conn:
            version = _server_version(conn)
            row = conn.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as exc:
        raise Broken(f"{where}: no database {name}, and its server: {_pg_reason(exc)}") from None
    if not (row and row[0]):
        raise Broken(
            f"{where}: no database {name}, and this user may not create it"
            " (CREATE DATABASE it, or grant CREATEDB)"
        )
    return f"{where}: {version}; no database {name} yet: the first command creates it"


def _schema(revisions: set[str]) -> str:
    from alembic.script import ScriptDirectory

    from remediate.store.database import MIGRATIONS

    script = ScriptDirectory(str(MIGRATIONS))
    heads = set(script.get_heads())
    head = ", ".join(sorted(heads))
    if not revisions:
        return f"schema not made yet: the first command brings it to {head}"
    if revisions == heads:
        return f"schema up to date ({head})"
    known = {s.revision for s in script.walk_revisions()}
    if revisions - known:
        raise Broken(
            f"schema revision {', '.join(sorted(revisions - known))} is unknown to this"
            " remediate (a store of a newer version?)"
        )
    return f"schema at {', '.join(sorted(revisions))}: the first command upgrades it to {head}"


def _redis(url: SecretStr, *, keys: bool, schemes: tuple[str, ...] = ("redis", "rediss")) -> str:
    import redis

    raw, where = url.get_secret_value(), redact_url(url)
    if urlsplit(raw).scheme not in schemes:
        raise Broken(f"{where}: not a {' or '.join(f'{s}://' for s in schemes)} URL")
    try:
        client = redis.Redis.from_url(raw, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    except ValueError as exc:
        raise Broken(f"{where}: {_outside(str(exc))}") from None
    try:
        version = client.info("server").get("redis_version", "?")
        count = client.dbsize() if keys else None
    except redis.RedisError as exc:
        raise Broken(f"{where}: {_outside(str(exc)) or type(exc).__name__}") from None
    finally:
        client.close()
    db = urlsplit(raw).path.strip("/") or "0"
    return f"{where}: Redis {version}" + (f"; {count} keys in database {db}" if keys else "")


def _prefect() -> str:
    from remediate.engine.prefect_api import LOCAL_API_URL, configured_api_url, owned_server_answers

    configured = configured_api_url()
    api = (configured or LOCAL_API_URL).rstrip("/")
    headers = {}
    if os.environ.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['PREFECT_API_KEY']}"
    elif os.environ.get("PREFECT_API_AUTH_STRING"):
        auth = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
        headers["Authorization"] = f"Basic {auth}"
    try:
        health = _http("GET", f"{api}/health", headers=headers)
    except Broken:
        if configured:
            raise
        raise NotConfigured(
            f"not set: `remediate run` and `remediate serve` start a private Prefect server on"
            f" {LOCAL_API_URL} (none answers there now)"
        ) from None
    if health.status_code in {401, 403}:
        raise Broken(
            f"{redact_url(api)}/health: HTTP {health.status_code}: the server wants"
            " PREFECT_API_AUTH_STRING (or PREFECT_API_KEY), or refused it",
            setting="PREFECT_API_AUTH_STRING",
        )
    if health.status_code != 200:
        raise Broken(
            f"{redact_url(api)}/health: HTTP {health.status_code}: not a Prefect API"
            " (the URL ends in /api)"
        )
    answer = _http("GET", f"{api}/admin/version", headers=headers)
    try:
        version = f"Prefect {answer.json()}" if answer.status_code == 200 else "Prefect"
    except ValueError:
        version = "Prefect"
    if configured:
        return f"{redact_url(api)}: {version} answers /health"
    if not owned_server_answers():
        raise Broken(
            f"not set, and a server this installation did not start answers on {LOCAL_API_URL}"
            f" ({version}): commands refuse it; set PREFECT_API_URL to it, or stop it"
        )
    return (
        f"not set; the local server a running remediate command started answers on"
        f" {LOCAL_API_URL} ({version}) and commands use it while that command runs"
    )


def _docker_reason(exc: BaseException) -> str:
    text = str(exc)
    for needle, reason in (
        ("FileNotFoundError", "no socket there"),
        ("PermissionError", "permission denied on the socket"),
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return reason
    return _outside(text) or type(exc).__name__


def _engine(host: str, project: str | None) -> str:
    import docker

    where = redact_url(host)
    try:
        # A pinned API version: "auto" would ask the engine's /version (slow on podman) first.
        client = docker.DockerClient(base_url=host, version=ENGINE_API, timeout=int(TIMEOUT))
        try:
            ping = client.api.get(f"{client.api.base_url}/_ping", timeout=TIMEOUT)
            ping.raise_for_status()
            found = (
                client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
                if project
                else []
            )
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - docker-py raises its own and requests' errors
        raise Broken(f"{where}: {_docker_reason(exc)}") from None
    # `Server: Libpod/4.3.1 (linux)` from podman, `Docker/24.0.7 (linux)` from Docker.
    server = ping.headers.get("Server", "").split(" ")[0].replace("Libpod/", "Podman/")
    name = server.replace("/", " ") or "an engine"
    engine = f"{where}: {name} (API {ping.headers.get('Api-Version', '?')})"
    if not project:
        return f"{engine}; COMPOSE_PROJECT_NAME is not set, so no compose service is guarded"
    if not found:
        raise Broken(
            f"{engine} answers, but no container carries {PROJECT_LABEL}={project}"
            " (the compose project's name: `docker compose ls`)",
            setting="COMPOSE_PROJECT_NAME",
        )
    return f"{engine}; {len(found)} container(s) of compose project {project}"


# The guarded app.


def _database(url: str) -> str:
    import psycopg

    where = redact_url(url)
    try:
        with _pg(url) as conn:
            version = _server_version(conn)
            row = conn.execute(
                "SELECT count(*), current_setting('max_connections') FROM pg_stat_activity"
            ).fetchone()
    except psycopg.Error as exc:
        raise Broken(f"{where}: {_pg_reason(exc)}") from None
    return f"{where}: {version}; {row[0]} sessions, max_connections {row[1]}"


def _sweep_database(settings: Settings, name: str) -> str:
    if settings.target_database_url is None:
        raise Broken(
            f"{name} is swept on TARGET_DATABASE_URL's server, and TARGET_DATABASE_URL is not"
            " usable",
            setting="TARGET_DATABASE_URL",
        )
    if len(name) > 63 or any(c in name for c in "/?#%@:"):
        raise Broken(f"{name[:80]!r} is not a database name")
    return _database(_with_database(settings.target_database_url.get_secret_value(), name))


def _elapsed(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"


def _app(base: str, path: str) -> str:
    url = base.rstrip("/") + "/" + path.lstrip("/")
    started = time.perf_counter()
    response = _http("GET", url, follow=True)
    shown = f"GET {redact_url(url)}: HTTP {response.status_code} in {_elapsed(started)}"
    if response.status_code in {404, 405}:
        raise Broken(
            f"{shown}: the app answers, but not at its health route (APP_HEALTH_PATH {path};"
            f" the FastAPI template's is {TEMPLATE_HEALTH_PATH})",
            setting="APP_HEALTH_PATH",
        )
    return shown


def _frontend(url: str) -> str:
    started = time.perf_counter()
    response = _http("GET", url, follow=True)
    return f"GET {redact_url(url)}: HTTP {response.status_code} in {_elapsed(started)}"


def _alembic(settings: Settings) -> str:
    import shlex
    import shutil

    value = settings.alembic_config or ""
    if Path(value).is_file():
        return f"{value}: the app's alembic project, run in-process"
    try:
        words = shlex.split(value)
    except ValueError:
        words = []
    if words[:3] == ["docker", "compose", "exec"] or words[:2] == ["docker-compose", "exec"]:
        missing = [
            name
            for name, set_ in (
                ("DOCKER_HOST", settings.docker_host),
                ("COMPOSE_PROJECT_NAME", settings.compose_project_name),
            )
            if not set_
        ]
        if missing:
            raise Broken(
                f"runs alembic in a container: set {' and '.join(missing)}", setting=missing[0]
            )
        return "a command run in the app's container through DOCKER_HOST (not run here)"
    if words and (shutil.which(words[0]) or os.access(words[0], os.X_OK)):
        flags = [i for i, word in enumerate(words[:-1]) if word in {"-c", "--config"}]
        ini = words[flags[-1] + 1] if flags else ""
        if not ini:
            raise Broken(f"{words[0]} …: name the app's alembic.ini with -c")
        if not Path(ini).is_file():
            raise Broken(f"{ini}: no such alembic.ini (name it with -c)")
        return f"{words[0]} with {ini} (not run here)"
    raise Broken(f"{_outside(value[:120])}: no such file, and not a command to run alembic")


def _folder(value: str, *, repository: bool) -> str:
    path = Path(value)
    if not path.is_dir():
        raise Broken(f"{value}: no such folder")
    if repository and not (path / ".git").exists():
        raise Broken(f"{value}: not a git repository (no .git)")
    if repository:
        return f"{value}: a git repository"
    files = sum(1 for p in path.iterdir() if p.suffix in {".py", ".sql"})
    return f"{value}: {files} migration file(s)"


# Notifications.

SLACK_WEBHOOK = re.compile(r"/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+/?")


def _slack_webhook(url: SecretStr) -> str:
    raw = url.get_secret_value()
    parts, origin = urlsplit(raw), _origin(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Broken("not an https:// URL (the Slack app's Incoming Webhooks page shows it)")
    if parts.hostname == "hooks.slack.com":
        if parts.scheme != "https":
            raise Broken(f"{origin}: Slack's webhooks are https://")
        if not (
            SLACK_WEBHOOK.fullmatch(parts.path)
            or parts.path.startswith(("/triggers/", "/workflows/"))
        ):
            raise Broken(
                f"{origin}: the path is not Slack's /services/T…/B…/… (copy the whole URL from"
                " the Slack app's Incoming Webhooks page)"
            )
        shape = "URL shape is Slack's (/services/T…/B…/…)"
    else:
        shape = f"not Slack's host, so its shape is not checked ({parts.hostname})"
    response = _http("GET", f"{origin}/", shown=origin)
    return (
        f"{origin} answers (HTTP {response.status_code} to GET /); {shape}; nothing posted, so"
        " the webhook's token itself is not checked (a webhook cannot be tested without posting)"
    )


def _slack_bot(api_url: str, token: SecretStr) -> str:
    api = api_url.rstrip("/")
    response = _http(
        "POST",
        f"{api}/auth.test",
        setting="SLACK_API_URL",
        headers={"Authorization": f"Bearer {token.get_secret_value()}"},
    )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise Broken(
            f"POST {redact_url(api)}/auth.test: HTTP {response.status_code}, not Slack's answer",
            setting="SLACK_API_URL",
        )
    if not body.get("ok"):
        error = _outside(str(body.get("error") or "no reason given"))
        raise Broken(f"Slack refused the token at auth.test ({error})", setting="SLACK_BOT_TOKEN")
    who = _outside(str(body.get("user") or "?"))
    team = _outside(str(body.get("team") or "?"))
    return f"auth.test: {who} in {team}; nothing posted"


def _pagerduty(key: SecretStr, url: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]{32}", key.get_secret_value()):
        raise Broken(
            f"{len(key.get_secret_value())} characters: an Events API v2 integration key is 32"
            " letters and digits (the service's Integrations tab)"
        )
    # An empty event is refused (400) by the Events API without routing anywhere: it shows the
    # endpoint answers, and triggers nothing.
    response = _http("POST", url, setting="PAGERDUTY_EVENTS_URL", json={})
    code = response.status_code
    if code in {404, 405} or code >= 500:
        raise Broken(
            f"POST {redact_url(url)}: HTTP {code}: not the Events API v2 enqueue endpoint"
            " (https://events.pagerduty.com/v2/enqueue)",
            setting="PAGERDUTY_EVENTS_URL",
        )
    return (
        f"POST {redact_url(url)} answers (HTTP {code} to an empty event, which triggers nothing);"
        " the key has an integration key's shape (32 characters)"
    )


def _statuspage(settings: Settings) -> str:
    from remediate.engine.catalogue import CATALOGUE

    url, key = settings.statuspage_url, settings.statuspage_api_key
    if not url:
        raise Broken("STATUSPAGE_API_KEY is set, STATUSPAGE_URL is not", setting="STATUSPAGE_URL")
    if key is None:
        raise Broken(
            "STATUSPAGE_URL is set, STATUSPAGE_API_KEY is not: nothing can be changed",
            setting="STATUSPAGE_API_KEY",
        )
    base, where = url.rstrip("/"), redact_url(url)
    known = {r.component for r in CATALOGUE.values()}
    unknown = [name for name in settings.statuspage_components if name not in known]
    if unknown:
        raise Broken(
            f"{', '.join(unknown)}: no runbook's component (they are: {', '.join(sorted(known))})",
            setting="STATUSPAGE_COMPONENTS",
        )
    headers = {"Authorization": f"OAuth {key.get_secret_value()}"}
    page = _http("GET", base, headers=headers)
    if page.status_code in {401, 403}:
        raise Broken(
            f"GET {where}: HTTP {page.status_code}: the key is refused",
            setting="STATUSPAGE_API_KEY",
        )
    if page.status_code != 200:
        raise Broken(f"GET {where}: HTTP {page.status_code} (the page's API URL, …/v1/pages/ID)")
    if not settings.statuspage_components:
        raise Broken(
            f"{where}: the page answers, but no component is mapped, so no status will change",
            setting="STATUSPAGE_COMPONENTS",
        )
    states = []
    for name, component in settings.statuspage_components.items():
        answer = _http("GET", f"{base}/components/{component}", headers=headers)
        if answer.status_code != 200:
            raise Broken(
                f"{name}: component {component} answers HTTP {answer.status_code} on {where}",
                setting="STATUSPAGE_COMPONENTS",
            )
        try:
            state = _outside(str(answer.json().get("status")))
        except (ValueError, AttributeError):
            state = "?"
        states.append(f"{name} {state}")
    return f"{where}: the page answers with the key; {'; '.join(states)}; nothing changed"


def _github(settings: Settings) -> str:
    repo, token = settings.github_repo, settings.github_token
    if not repo:
        raise Broken("GITHUB_TOKEN is set, GITHUB_REPO is not", setting="GITHUB_REPO")
    if token is None:
        raise Broken("GITHUB_REPO is set, GITHUB_TOKEN is not", setting="GITHUB_TOKEN")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise Broken(f"{repo[:100]!r} is not owner/name", setting="GITHUB_REPO")
    api = settings.github_api_url.rstrip("/")
    response = _http(
        "GET",
        f"{api}/repos/{repo}",
        setting="GITHUB_API_URL",
        headers={
            "Authorization": f"Bearer {token.get_secret_value()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    code = response.status_code
    if code in {401, 403}:
        raise Broken(f"{repo}: HTTP {code}: the token is refused", setting="GITHUB_TOKEN")
    if code == 404:
        raise Broken(f"{repo}: not found, or the token cannot see it", setting="GITHUB_REPO")
    if code != 200:
        raise Broken(f"GET {redact_url(api)}/repos/{repo}: HTTP {code}", setting="GITHUB_API_URL")
    try:
        issues = response.json().get("has_issues", True)
    except (ValueError, AttributeError):
        issues = True
    if issues is False:
        raise Broken(f"{repo}: issues are turned off in this repository", setting="GITHUB_REPO")
    return f"{repo}: readable with the token, issues on; no issue opened"


def _sentry_api(settings: Settings) -> str:
    values = {
        "SENTRY_API_URL": settings.sentry_api_url,
        "SENTRY_AUTH_TOKEN": settings.sentry_auth_token,
        "SENTRY_ORG": settings.sentry_org,
        "SENTRY_PROJECT": settings.sentry_project,
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise Broken(
            f"{', '.join(missing)} not set: error rates need all four (SENTRY_API_URL is"
            " https://sentry.io for Sentry's own service)",
            setting=missing[0],
        )
    assert settings.sentry_api_url and settings.sentry_auth_token
    api, org, project = (
        settings.sentry_api_url.rstrip("/"),
        settings.sentry_org,
        settings.sentry_project,
    )
    response = _http(
        "GET",
        f"{api}/api/0/projects/{org}/{project}/",
        headers={"Authorization": f"Bearer {settings.sentry_auth_token.get_secret_value()}"},
    )
    code = response.status_code
    if code in {401, 403}:
        raise Broken(
            f"{redact_url(api)}: HTTP {code}: the token is refused", setting="SENTRY_AUTH_TOKEN"
        )
    if code == 404:
        raise Broken(f"{redact_url(api)}: no project {org}/{project}", setting="SENTRY_PROJECT")
    if code != 200:
        raise Broken(f"GET {redact_url(api)}/api/0/projects/{org}/{project}/: HTTP {code}")
    return f"{redact_url(api)}: project {org}/{project} readable with the token"


def _sentry_dsn(dsn: SecretStr) -> str:
    raw = dsn.get_secret_value()
    origin = _origin(raw)
    project = urlsplit(raw).path.rstrip("/").rsplit("/", 1)[-1]
    response = _http("GET", f"{origin}/", shown=origin)
    return (
        f"project {project} at {origin}: a DSN's shape, and the host answers (HTTP"
        f" {response.status_code}); no event sent"
    )


def _smtp(settings: Settings) -> str:
    import smtplib
    import ssl
    from contextlib import suppress

    host, port = settings.smtp_host or "", settings.smtp_port or 587
    implicit = settings.smtp_ssl and not settings.smtp_tls  # as the FastAPI template sends
    step, setting, done = "connect", "SMTP_HOST", []
    smtp: smtplib.SMTP | None = None
    try:
        # Implicit TLS verifies the server's certificate as STARTTLS does (smtplib's SMTP_SSL
        # accepts any certificate without a context, and the login would follow).
        smtp = (
            smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=ssl.create_default_context())
            if implicit
            else smtplib.SMTP(host, port, timeout=TIMEOUT)
        )
        step = "EHLO"
        smtp.ehlo()
        done.append("EHLO")
        if settings.smtp_tls:
            step, setting = "STARTTLS", "SMTP_TLS"
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
            done.append("STARTTLS")
        if settings.smtp_user:
            step, setting = "login", "SMTP_PASSWORD"
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            if "PLAIN" in str(smtp.esmtp_features.get("auth", "")).upper().split():
                # One try: after a refusal smtplib's login() tries the next mechanism, which
                # some servers leave hanging, and the person would read a timeout.
                smtp.user, smtp.password = settings.smtp_user, password
                smtp.auth("PLAIN", smtp.auth_plain)
            else:
                smtp.login(settings.smtp_user, password)
            done.append(f"login as {settings.smtp_user}")
    except (smtplib.SMTPException, OSError) as exc:
        reason = getattr(exc, "smtp_error", b"") or str(exc).encode()
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise Broken(
            f"{host}:{port} failed at {step}: {type(exc).__name__} {_outside(text)}".rstrip(),
            setting=setting,
        ) from None
    finally:
        if smtp is not None:
            with suppress(smtplib.SMTPException, OSError):
                smtp.quit()
    sender = "" if settings.emails_from_email else "; EMAILS_FROM_EMAIL is not set"
    tls = " (implicit TLS)" if implicit else ""
    return f"{host}:{port}{tls}: {', '.join(done)} ok; no mail sent{sender}"


def _sendgrid(base_url: str, key: SecretStr) -> str:
    base = base_url.rstrip("/")
    response = _http(
        "GET",
        f"{base}/v3/mail_settings",
        setting="SENDGRID_API_URL",
        headers={"Authorization": f"Bearer {key.get_secret_value()}"},
    )
    code = response.status_code
    if code in {401, 403}:
        raise Broken(
            f"{redact_url(base)}: HTTP {code}: the key is refused, or lacks the read access"
            " email-delivery needs (mail settings, suppressions, stats)",
            setting="SENDGRID_API_KEY",
        )
    if code != 200:
        raise Broken(
            f"GET {redact_url(base)}/v3/mail_settings: HTTP {code}", setting="SENDGRID_API_URL"
        )
    return f"{redact_url(base)}: mail settings readable with the key; nothing changed"


# What to check, in the order a person reads it.


def plan(settings: Settings) -> list[Check]:
    s = settings
    checks = [
        Check(
            "incident store",
            "REMEDIATION_DATABASE_URL",
            lambda: _store(s.remediation_database_url),
        ),
        Check(
            "Redis (deduplication)",
            "REMEDIATION_REDIS_URL",
            lambda: _redis(
                s.remediation_redis_url, keys=False, schemes=("redis", "rediss", "unix")
            ),
            related=("REMEDIATION_REDIS_PREFIX",),
        ),
        Check("Prefect API", "PREFECT_API_URL", _prefect),
        Check(
            "container engine",
            "DOCKER_HOST",
            (lambda: _engine(s.docker_host or "", s.compose_project_name))
            if s.docker_host
            else None,
            "not set: the runbooks that read logs and restart compose services cannot",
            related=("COMPOSE_PROJECT_NAME",),
        ),
        Check(
            "target database",
            "TARGET_DATABASE_URL",
            lambda: _target_database(s),
        ),
    ]
    return [*checks, *_target_checks(s), *_channel_checks(s)]


def _target_checks(s: Settings) -> list[Check]:
    """The guarded systems: each database swept, Redis, the app, alembic, the repositories."""
    checks = [
        Check(f"target database {name}", "SWEEP_DATABASES", partial(_sweep_database, s, name))
        for name in s.sweep_databases
    ]
    target_redis = s.target_redis_url
    return [
        *checks,
        Check(
            "target Redis",
            "TARGET_REDIS_URL",
            (lambda: _redis(target_redis, keys=True)) if target_redis else None,
            "not set: rate-limiter has no Redis to watch",
        ),
        Check(
            "app",
            "APP_URL",
            (lambda: _app(s.app_url or "", s.app_health_path)) if s.app_url else None,
            "not set: the backend's health and login are not probed",
            related=("APP_HEALTH_PATH",),
        ),
        Check(
            "frontend",
            "FRONTEND_URL",
            (lambda: _frontend(s.frontend_url or "")) if s.frontend_url else None,
            "not set: frontend-404 has no frontend to probe",
        ),
        Check(
            "alembic",
            "ALEMBIC_CONFIG",
            (lambda: _alembic(s)) if s.alembic_config else None,
            "not set: tables-missing-after-migration cannot run alembic",
        ),
        Check(
            "migrations",
            "MIGRATIONS_DIR",
            (lambda: _folder(s.migrations_dir or "", repository=False))
            if s.migrations_dir
            else None,
            "not set: rollbacks are not also written as migration files",
        ),
        Check(
            "app repository",
            "APP_REPO",
            (lambda: _folder(s.app_repo or "", repository=True)) if s.app_repo else None,
            "not set: api-500-errors cannot look at recent deploys",
        ),
    ]


def _channel_checks(s: Settings) -> list[Check]:
    """Where incidents are told: chat, pager, status page, issues, Sentry, email."""
    webhook, bot = s.slack_webhook_url, s.slack_bot_token
    pd_key, statuspage = s.pagerduty_routing_key, bool(s.statuspage_url or s.statuspage_api_key)
    github = bool(s.github_repo or s.github_token)
    sentry_api = bool(s.sentry_api_url or s.sentry_auth_token or s.sentry_org or s.sentry_project)
    dsn, sendgrid = s.sentry_dsn, s.sendgrid_api_key
    return [
        Check(
            "Slack webhook",
            "SLACK_WEBHOOK_URL",
            (lambda: _slack_webhook(webhook)) if webhook else None,
            "not set: no incident message goes to Slack",
        ),
        Check(
            "Slack bot token",
            "SLACK_BOT_TOKEN",
            (lambda: _slack_bot(s.slack_api_url, bot)) if bot else None,
            "not set (optional: doctor checks it with auth.test)",
            related=("SLACK_API_URL",),
        ),
        Check(
            "PagerDuty",
            "PAGERDUTY_ROUTING_KEY",
            (lambda: _pagerduty(pd_key, s.pagerduty_events_url)) if pd_key else None,
            "not set: P1/P2 incidents page nobody",
            related=("PAGERDUTY_EVENTS_URL",),
        ),
        Check(
            "status page",
            "STATUSPAGE_URL",
            (lambda: _statuspage(s)) if statuspage else None,
            "not set: no status page is updated",
            related=("STATUSPAGE_API_KEY", "STATUSPAGE_COMPONENTS"),
        ),
        Check(
            "GitHub",
            "GITHUB_REPO",
            (lambda: _github(s)) if github else None,
            "not set: no follow-up issue is opened",
            related=("GITHUB_TOKEN", "GITHUB_API_URL"),
        ),
        Check(
            "Sentry API",
            "SENTRY_API_URL",
            (lambda: _sentry_api(s)) if sentry_api else None,
            "not set: error rates are not read from Sentry",
            related=("SENTRY_AUTH_TOKEN", "SENTRY_ORG", "SENTRY_PROJECT"),
        ),
        Check(
            "Sentry DSN",
            "SENTRY_DSN",
            (lambda: _sentry_dsn(dsn)) if dsn else None,
            "not set: the product's own errors are not reported",
        ),
        Check(
            "SMTP",
            "SMTP_HOST",
            (lambda: _smtp(s)) if s.smtp_host else None,
            "not set: email-delivery checks the backend container's own SMTP settings, if any",
            related=(
                "SMTP_PORT",
                "SMTP_USER",
                "SMTP_PASSWORD",
                "SMTP_TLS",
                "SMTP_SSL",
                "EMAILS_FROM_EMAIL",
            ),
        ),
        Check(
            "SendGrid",
            "SENDGRID_API_KEY",
            (lambda: _sendgrid(s.sendgrid_api_url, sendgrid)) if sendgrid else None,
            "not set: bounces are not read from SendGrid",
            related=("SENDGRID_API_URL",),
        ),
    ]


def _target_database(settings: Settings) -> str:
    if settings.target_database_url is None:
        raise Broken(
            "not set (postgresql://user@host:port/database): the guarded database, which the"
            " database runbooks and the sweep need"
        )
    return _database(settings.target_database_url.get_secret_value())


# Running it.


def _settings() -> tuple[Settings | None, dict[str, str]]:
    """The settings, each malformed one set aside (its default used instead) and named."""
    bad: dict[str, str] = {}
    overrides: dict[str, object] = {}
    fields = Settings.model_fields
    while True:
        try:
            return Settings(**overrides), bad  # type: ignore[arg-type]
        except ValidationError as exc:
            for error in exc.errors():
                name, message = setting_problem(error)
                if name.lower() not in fields or name.lower() in overrides:
                    bad.setdefault(name, message)
                    return None, bad
                bad[name] = message
                overrides[name.lower()] = fields[name.lower()].get_default(
                    call_default_factory=True
                )
        except Exception as exc:  # noqa: BLE001 - pydantic-settings' own parse errors
            bad["settings"] = _outside(str(exc)) or type(exc).__name__
            return None, bad


def _run(check: Check) -> Part:
    if check.run is None:
        return Part(check.part, check.setting, "not configured", check.unset)
    try:
        return Part(check.part, check.setting, "ok", check.run())
    except NotConfigured as exc:
        return Part(check.part, check.setting, "not configured", str(exc))
    except Broken as exc:
        return Part(check.part, exc.setting or check.setting, "FAIL", str(exc))
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        reason = _outside(str(exc))
        return Part(check.part, check.setting, "FAIL", f"{type(exc).__name__}: {reason}".rstrip())


def _run_all(checks: list[Check], *, deadline: float) -> list[Part]:
    """Every check at once, in daemon threads: one that hangs past the deadline is a FAIL and
    does not keep the process alive."""
    done: dict[int, Part] = {}

    def work(index: int, check: Check) -> None:
        done[index] = _run(check)

    threads = [
        threading.Thread(target=work, args=(i, c), daemon=True, name=f"doctor {c.part}")
        for i, c in enumerate(checks)
    ]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    silent = f"no answer within {deadline:.0f} s"
    return [done.get(i) or Part(c.part, c.setting, "FAIL", silent) for i, c in enumerate(checks)]


def _secrets(settings: Settings | None) -> list[str]:
    """Every secret value, and the parts of one that are secret alone (a URL's password, the
    random segments of a webhook URL), including the raw values of secrets that did not parse."""
    values = [os.environ.get(n, "") for n in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")]
    for name, info in Settings.model_fields.items():
        if "SecretStr" not in str(info.annotation):
            continue
        value = getattr(settings, name, None) if settings is not None else None
        raws = [os.environ.get(name.upper(), "")]
        if isinstance(value, SecretStr):
            raws.append(value.get_secret_value())
        for raw in filter(None, raws):
            try:
                parts = urlsplit(raw)
            except ValueError:  # not even a URL ("Invalid IPv6 URL"): masked whole
                values.append(raw)
                continue
            if not (parts.scheme and parts.netloc):
                values.append(raw)
                continue
            # A URL is shown redacted: what is secret in it is its password, a key as its user
            # (a Sentry DSN's), random path segments (a webhook's token) and query values.
            user = parts.username or ""
            values += [parts.password or "", user if len(user) >= 16 else ""]
            values += [seg for seg in parts.path.split("/") if len(seg) >= 16]
            values += [v for _, v in parse_qsl(parts.query) if len(v) >= 8]
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def _mask(text: str, secrets: list[str]) -> str:
    from remediate.domain.redact import MASK

    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def examine(*, deadline: float = DEADLINE) -> Report:
    """Every part's line: the settings (a bad one named on its part's line), then each check."""
    settings, bad = _settings()
    if settings is None:
        parts = [Part("settings", name, "FAIL", message) for name, message in bad.items()]
    else:
        checks = plan(settings)
        runnable = [c for c in checks if not set(c.settings) & set(bad)]
        results = dict(zip(map(id, runnable), _run_all(runnable, deadline=deadline), strict=True))
        parts, named = [], set()
        for check in checks:
            if id(check) in results:
                parts.append(results[id(check)])
                continue
            names = [n for n in check.settings if n in bad]
            named.update(names)
            detail = "; ".join(bad[n] for n in names)
            parts.append(Part(check.part, names[0], "FAIL", detail))
        parts[:0] = [
            Part("settings", name, "FAIL", message)
            for name, message in bad.items()
            if name not in named
        ]
    secrets = _secrets(settings)
    return Report([Part(p.part, p.setting, p.status, _mask(p.detail, secrets)) for p in parts])


STYLES: dict[str, dict[str, Any]] = {
    "ok": {"fg": "green"},
    "FAIL": {"fg": "red", "bold": True},
    "not configured": {"dim": True},
}


def lines(report: Report, *, style: Callable[..., str] | None = None) -> list[str]:
    """The report for a person: status, part, setting, detail; `style` colours the status
    (typer.style, which the terminal keeps and a pipe drops)."""
    part_width = max((len(p.part) for p in report.parts), default=0)
    setting_width = max((len(p.setting) for p in report.parts), default=0)
    out = []
    for p in report.parts:
        status = f"{p.status:<14}"
        if style is not None:
            status = style(status, **STYLES[p.status])
        out.append(
            f"{status}  {p.part:<{part_width}}  {p.setting:<{setting_width}}  {p.detail}".rstrip()
        )
    return out
