"""One drill per runbook: the seed's incident, built for real in a sandbox.

Each builder sets the runbook's settings with `sb.setenv` (the drill restores the environment
afterwards), breaks the sandbox, and says how to tell the runbook fixed it.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import httpx
import psycopg

from remediate.drills import ASSETS
from remediate.drills.sandbox import (
    ADMIN_URL,
    DOCKER_HOST,
    REDIS_URL,
    Check,
    Sandbox,
    World,
    free_port,
    git,
    postgres_server,
    reachable,
    wait_until,
)

__all__ = ["DRILLS"]

IDLE_SESSIONS = 30


def _answers(url: str, path: str = "/health", *, method: str = "GET", status: int = 200) -> bool:
    try:
        return httpx.request(method, url + path, timeout=2, json={}).status_code == status
    except httpx.HTTPError:
        return False


def _sql(url: str, query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


# Seed 002 §2: a leaking pool fills the server with idle sessions.


def _count(database: str, state: str) -> int:
    row = _sql(
        ADMIN_URL,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = %s"
        " AND application_name LIKE 'drill-%%'",
        (database, state),
    )
    return int(row[0][0])


def connection_pool_exhausted(sb: Sandbox) -> World:
    from remediate.drills.runner import threshold_below

    database = sb.database()
    url = sb.url(database)
    conns = [
        psycopg.connect(url, autocommit=True, application_name="drill-app-pool")
        for _ in range(IDLE_SESSIONS)
    ]
    worker = psycopg.connect(url, application_name="drill-worker")  # idle in transaction
    worker.execute("SELECT 1")
    report = psycopg.connect(url, autocommit=True, application_name="drill-report")

    def long_report() -> None:
        with suppress(psycopg.Error):
            report.execute("SELECT pg_sleep(600)")

    threading.Thread(target=long_report, daemon=True).start()

    def close() -> None:
        for conn in [*conns, worker, report]:
            with suppress(psycopg.Error):
                conn.cancel()
                conn.close()

    sb.on_close(close)
    time.sleep(0.5)
    threshold = threshold_below(IDLE_SESSIONS, admin_url=ADMIN_URL)
    sb.setenv(TARGET_DATABASE_URL=url)

    def check() -> list[Check]:
        idle = _count(database, "idle")
        return [
            (idle == 0, f"idle sessions of the leaking pool left: {idle} of {IDLE_SESSIONS}"),
            (
                _count(database, "idle in transaction") == 1,
                "the session idle in a transaction was left alone",
            ),
            (_count(database, "active") == 1, "the running report was left alone"),
        ]

    return World(
        story=[
            f"sandbox database {database}: {IDLE_SESSIONS} idle sessions from a leaking pool,"
            " 1 idle in a transaction, 1 running a report",
            f"usage threshold for the drill: {threshold:.1%} of max_connections",
        ],
        params={"usage_threshold": threshold, "idle_minutes": 0, "database": database},
        check=check,
    )


# Seed 002 §4: rate-limit counters written without a TTL never refill.


def rate_limiter(sb: Sandbox) -> World:
    client = sb.redis()
    pattern = f"{sb.key_prefix}ratelimit:*"
    stuck = [f"{sb.key_prefix}ratelimit:login:user-{i}" for i in range(5)]
    healthy = [f"{sb.key_prefix}ratelimit:login:user-{i}" for i in range(5, 8)]
    for key in stuck:
        client.set(key, 12)  # the crash between INCR and EXPIRE
    window = 900  # healthy buckets outlive a person reading the plan (they expired after 45 s)
    for key in healthy:
        client.set(key, 2, ex=window)
    sb.setenv(TARGET_REDIS_URL=REDIS_URL)

    def check() -> list[Check]:
        without_ttl = [k for k in stuck if client.ttl(k) == -1]
        intact = [k for k in healthy if client.get(k) == "2" and client.ttl(k) > 0]
        return [
            (not without_ttl, f"buckets without a TTL left: {len(without_ttl)} of {len(stuck)}"),
            (len(intact) == len(healthy), f"healthy buckets untouched: {len(intact)} of 3"),
        ]

    return World(
        story=[f"{len(stuck)} rate-limit buckets without a TTL and 3 healthy ones under {pattern}"],
        params={"key_pattern": pattern, "window_seconds": window},
        check=check,
    )


# Seed 002 §1: a deploy drops an RLS policy; users see nothing (or too much).


def rls_auth_failure(sb: Sandbox) -> World:
    from remediate.drills.supabase import ALICE, build, supabase_roles
    from remediate.flows.rls_auth_failure import rls_auth_failure as flow

    sb.enter(supabase_roles(ADMIN_URL, database_prefix="remediate\\_drill\\_"))
    database = sb.database()
    url = sb.url(database)
    build(url)
    sb.setenv(TARGET_DATABASE_URL=url)
    baseline = flow(database=database, probe_user_id=ALICE, requested_by="drill-baseline")
    _sql(url, "DROP POLICY auth_policy_select ON users")

    def check() -> list[Check]:
        names = {r[0] for r in _sql(url, "SELECT policyname FROM pg_policies")}
        return [("auth_policy_select" in names, "auth_policy_select is back on users")]

    return World(
        story=[
            f"sandbox database {database}: a Supabase-shaped schema with RLS on 4 tables",
            f"a healthy run recorded the known-good policies ({baseline.status})",
            "the incident: a migration dropped auth_policy_select on users",
        ],
        params={"database": database, "probe_user_id": ALICE},
        check=check,
    )


# Seed 000: `alembic stamp` instead of `upgrade`; every table gone but alembic_version.


def tables_missing_after_migration(sb: Sandbox) -> World:
    from alembic import command
    from alembic.config import Config

    root = sb.tmp / "app"
    shutil.copytree(ASSETS / "app_alembic", root)
    database = sb.database()
    url = sb.url(database)
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("postgresql://", "postgresql+psycopg://"))
    command.upgrade(config, "head")
    _sql(url, 'DROP TABLE ingestions, "user"')
    sb.setenv(TARGET_DATABASE_URL=url, ALEMBIC_CONFIG=str(root / "alembic.ini"))

    def check() -> list[Check]:
        tables = {
            r[0] for r in _sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        version = [r[0] for r in _sql(url, "SELECT version_num FROM alembic_version")]
        return [
            (tables == {"alembic_version", "user", "ingestions"}, f"tables: {sorted(tables)}"),
            (version == ["d4"], f"alembic_version: {version}"),
        ]

    return World(
        story=[
            f"sandbox database {database} migrated to head (d4) with the app's alembic project",
            "the incident: every table is gone but alembic_version, which still says d4",
        ],
        params={"database": database},
        check=check,
    )


# Seed 000: "could not connect to server": the database container stopped.


def database_connection_errors(sb: Sandbox) -> World:
    port = free_port()
    server = postgres_server(port)
    container = sb.container(server.pop("command"), service="db", **server)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    wait_until(lambda: reachable(url), timeout=60, what="the database container did not answer")
    container.stop(timeout=5)
    sb.setenv(
        TARGET_DATABASE_URL=url,
        DOCKER_HOST=DOCKER_HOST,
        COMPOSE_PROJECT_NAME=sb.project,
        DATABASE_SERVICE="db",
    )

    def check() -> list[Check]:
        return [(reachable(url), f"the database on port {port} answers SELECT 1")]

    return World(
        story=[
            f"a PostgreSQL container ({container.name}, service db) on port {port}",
            "the incident: the container stopped",
        ],
        check=check,
    )


# The backend container (seed 000 and 002 §5): crashed, unhealthy, a bad deploy, a stale process.

APP_ENV = {
    # An app built on an older template: POSTGRES_* rather than DATABASE_URL.
    "SECRET_KEY": "drill-secret-key-0123456789abcdef0123",
    "PROJECT_NAME": "drill",
    "FIRST_SUPERUSER": "admin@drill.test",
    "FIRST_SUPERUSER_PASSWORD": "drill-superuser-password",
    "POSTGRES_SERVER": "db",
    "POSTGRES_USER": "app",
    "POSTGRES_PASSWORD": "drill-postgres-password",
    "POSTGRES_DB": "app",
    "DOMAIN": "app.drill.test",
    "ACCESS_TOKEN_EXPIRE_MINUTES": "11520",
    "BACKEND_CORS_ORIGINS": "http://localhost:5173,https://app.drill.test",
}


def _backend(
    sb: Sandbox, *, mounts: dict[str, str] | None = None, **environment: str
) -> tuple[Any, str]:
    port = free_port()
    container = sb.host_python(
        ASSETS / "backend.py",
        [str(port)],
        service="backend",
        environment={**APP_ENV, **environment},
        mounts=mounts,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(url), timeout=30, what="the backend did not answer /health")
    return container, url


def _container_state(container: Any) -> str:
    container.reload()
    return str(container.status)


def app_not_starting(sb: Sandbox) -> World:
    backend, url = _backend(sb, REQUIRED=" ".join(k for k in APP_ENV if k.isupper()))
    worker = sb.container(["/bin/sh", "-c", "exec sleep 100000"], service="worker")
    worker.reload()
    worker_started = worker.attrs["State"]["StartedAt"]
    backend.kill()
    wait_until(lambda: _container_state(backend) == "exited", timeout=20, what="backend down")
    sb.setenv(DOCKER_HOST=DOCKER_HOST, COMPOSE_PROJECT_NAME=sb.project)

    def check() -> list[Check]:
        worker.reload()
        return [
            (_container_state(backend) == "running" and _answers(url), "the backend is back"),
            (worker.attrs["State"]["StartedAt"] == worker_started, "the worker was not restarted"),
        ]

    return World(
        story=[
            f"compose project {sb.project}: backend and worker running",
            "the incident: the backend crashed (killed, exit code 137)",
        ],
        params={"settle_seconds": 2, "stop_timeout_seconds": 1},
        check=check,
    )


def auth_server_health(sb: Sandbox) -> World:
    _, url = _backend(sb, SLOW_SECONDS="4")
    httpx.post(f"{url}/_control", json={"mode": "503"}, timeout=5).raise_for_status()
    _answers(url)  # an error line in the log, as real traffic would leave
    sb.setenv(APP_URL=url, DOCKER_HOST=DOCKER_HOST, COMPOSE_PROJECT_NAME=sb.project)

    def check() -> list[Check]:
        return [(_answers(url), "/health answers 200")]

    return World(
        story=[f"the backend on {url}", "the incident: its worker pool is exhausted; /health 503"],
        params={"stop_timeout_seconds": 1, "healthy_checks": 3},
        check=check,
    )


def api_500_errors(sb: Sandbox) -> World:
    repo = sb.tmp / "app"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "dev@app.drill.test")
    git(repo, "config", "user.name", "Dev")
    (repo / "features.json").write_text(json.dumps({"items_crash": False}))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "release 1.0")
    backend, url = _backend(sb, FEATURES="/repo/features.json", mounts={str(repo): "/repo"})
    (repo / "features.json").write_text(json.dumps({"items_crash": True}))
    git(repo, "commit", "-qam", "items: read ocr_provider")
    backend.restart(timeout=1)  # the deploy
    wait_until(lambda: _answers(url), timeout=30, what="the deployed backend did not answer")
    database = sb.database()
    sb.setenv(
        APP_URL=url,
        APP_REPO=str(repo),
        DOCKER_HOST=DOCKER_HOST,
        COMPOSE_PROJECT_NAME=sb.project,
        TARGET_DATABASE_URL=sb.url(database),
    )

    def check() -> list[Check]:
        last = git(repo, "log", "-1", "--format=%s").strip()
        return [
            (_answers(url, "/api/items"), "/api/items answers 200"),
            (last.startswith("Revert"), f"last commit: {last}"),
        ]

    return World(
        story=[
            f"the backend on {url}, deployed from a git repository",
            "the incident: the deploy 'items: read ocr_provider' makes /api/items answer 500",
        ],
        params={"stop_timeout_seconds": 1},
        check=check,
    )


def auth_failures(sb: Sandbox) -> World:
    _, url = _backend(sb)
    httpx.post(f"{url}/_control", json={"mode": "401"}, timeout=5).raise_for_status()
    sb.setenv(
        APP_URL=url,
        FRONTEND_URL="https://app.drill.test",
        LOGIN_PROBE_EMAIL="probe@app.drill.test",
        LOGIN_PROBE_PASSWORD="drill-probe-password",
        DOCKER_HOST=DOCKER_HOST,
        COMPOSE_PROJECT_NAME=sb.project,
    )

    def check() -> list[Check]:
        ok = _answers(url, "/auth/login", method="POST")
        return [(ok, "the probe user logs in")]

    return World(
        story=[
            f"the backend on {url} with a right SECRET_KEY, token expiry and CORS",
            "the incident: a stale process rejects every login with 401",
        ],
        params={"stop_timeout_seconds": 1},
        check=check,
    )


SHELL = (
    '<!doctype html><div id="root"></div>'
    '<script type="module" src="/assets/index-4f2a.js"></script>'
)


def frontend_404(sb: Sandbox) -> World:
    site = sb.tmp / "site"
    (site / "dist" / "assets").mkdir(parents=True)
    (site / "dist" / "index.html").write_text(SHELL)
    (site / "dist" / "assets" / "index-4f2a.js").write_text("console.log('app')")
    config = site / "frontend.json"
    config.write_text(json.dumps({"history_fallback": False}))  # the broken deploy
    port = free_port()
    sb.host_python(
        ASSETS / "frontend.py",
        [str(port), "/srv/site/dist"],
        service="frontend",
        mounts={str(site): "/srv/site"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(url, "/"), timeout=30, what="the frontend did not answer")
    config.write_text(json.dumps({"history_fallback": True}))  # the team redeployed, not reloaded
    sb.setenv(FRONTEND_URL=url, DOCKER_HOST=DOCKER_HOST, COMPOSE_PROJECT_NAME=sb.project)

    def check() -> list[Check]:
        try:
            page = httpx.get(f"{url}/settings/profile", timeout=3)
        except httpx.HTTPError:
            return [(False, "the frontend does not answer")]
        return [(page.status_code == 200 and page.text == SHELL, "deep links serve the shell")]

    return World(
        story=[
            f"the SPA on {url}",
            "the incident: deep links answer 404 (no history fallback); the fixed configuration"
            " is deployed but the server has not reloaded it",
        ],
        params={"stop_timeout_seconds": 1},
        check=check,
    )


# Seeds 000 and 002 §3: an address on SendGrid's bounce list gets no email.


def email_delivery(sb: Sandbox) -> World:
    from aiosmtpd.controller import Controller

    from remediate.drills.standins import KEY, SMTP_PASSWORD, Inbox, SendGrid, authenticator

    inbox, port = Inbox(), free_port()
    smtp = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    smtp.start()

    def stop_smtp() -> None:
        smtp.stop()
        sb.removed.append(f"SMTP server on port {port}")

    sb.on_close(stop_smtp)
    sendgrid = SendGrid(
        bounces=["otp-user@school.test", "old@school.test"], requests=1000, bounced=20
    )

    def stop_sendgrid() -> None:
        sendgrid.server.shutdown()
        sb.removed.append("SendGrid stand-in")

    sb.on_close(stop_sendgrid)
    sb.setenv(
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(port),
        SMTP_TLS="false",
        SMTP_USER="mailer",
        SMTP_PASSWORD=SMTP_PASSWORD,
        EMAILS_FROM_EMAIL="noreply@school.test",
        SENDGRID_API_KEY=KEY,
        SENDGRID_API_URL=sendgrid.url,
    )

    def check() -> list[Check]:
        return [
            (sendgrid.deleted == ["otp-user@school.test"], "otp-user@school.test unbounced"),
            ("old@school.test" in sendgrid.bounces, "the other bounce was left alone"),
            (bool(inbox.messages), f"test messages received by SMTP: {len(inbox.messages)}"),
        ]

    return World(
        story=[
            f"a real SMTP server on 127.0.0.1:{port} and a SendGrid stand-in",
            "the incident: otp-user@school.test is on the bounce list and gets no OTP email",
        ],
        params={"address": "otp-user@school.test"},
        check=check,
    )


DRILLS: dict[str, Callable[[Sandbox], World]] = {
    "api-500-errors": api_500_errors,
    "app-not-starting": app_not_starting,
    "auth-failures": auth_failures,
    "auth-server-health": auth_server_health,
    "connection-pool-exhausted": connection_pool_exhausted,
    "database-connection-errors": database_connection_errors,
    "email-delivery": email_delivery,
    "frontend-404": frontend_404,
    "rate-limiter": rate_limiter,
    "rls-auth-failure": rls_auth_failure,
    "tables-missing-after-migration": tables_missing_after_migration,
}
