"""PostgreSQL tasks: read the server's sessions, terminate named idle sessions, probe a query.

Every task takes a `PgTarget` first and opens and closes its own connection, named
`remediate:postgres` so that the runner's own sessions are recognisable (and never terminated).
Read-only tasks retry; the destructive one never does and carries the `destructive` tag.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from prefect.cache_policies import NONE
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, SecretStr

from remediate.domain.errors import ConfigError
from remediate.tasks.steps import task

__all__ = [
    "SATURATED",
    "Activity",
    "PgTarget",
    "ProbeResult",
    "Session",
    "TargetUnreachable",
    "probe_query",
    "read_activity",
    "terminate_idle_sessions",
    "wait_for_usage",
    "wait_reachable",
]

APPLICATION_NAME = "remediate:postgres"
# Superuser sessions from these tools are maintenance in progress: never terminated.
# Interactive clients a DBA works in: a superuser's idle session of one is a person, not a leak.
INTERACTIVE_APPLICATIONS = (
    "psql",
    "pgcli",
    "pgAdmin",
    "DBeaver",
    "DataGrip",
    "TablePlus",
    "Postico",
    "Navicat",
)
MAINTENANCE_APPLICATIONS = (
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "pg_basebackup",
    "pg_upgrade",
    "pg_repack",
    "pg_amcheck",
    "vacuumdb",
    "reindexdb",
    "clusterdb",
    "pg_rewind",
    "pg_checksums",
)
_LITERAL = re.compile(r"'(?:[^']|'')*'")


SATURATED = ("too many clients", "too many connections", "remaining connection slots are reserved")


class TargetUnreachable(ConfigError):
    """The target database does not answer; the message names host and database, never secrets."""

    @property
    def saturated(self) -> bool:
        """The server answered but refused a new connection because every slot is taken."""
        return any(marker in str(self) for marker in SATURATED)


class PgTarget(BaseModel):
    """A PostgreSQL database to act on. `resource` names it in locks, logs and the timeline."""

    model_config = ConfigDict(frozen=True)

    url: SecretStr
    connect_timeout: int = 5

    @classmethod
    def of(cls, url: SecretStr, *, database: str | None = None) -> PgTarget:
        """The server of `url`, on `database` when one is named (checked: a bare name)."""
        raw = url.get_secret_value()
        if database and (len(database) > 63 or any(c in database for c in "/?#%@:")):
            raise ConfigError(f"database {database[:80]!r}: not a database name")
        if database:
            raw = urlunsplit(urlsplit(raw)._replace(path=f"/{database}"))
        return cls(url=SecretStr(raw))

    @property
    def database(self) -> str:
        return urlsplit(self.url.get_secret_value()).path.lstrip("/")

    @property
    def resource(self) -> str:
        parts = urlsplit(self.url.get_secret_value())
        return f"postgres://{parts.hostname or 'localhost'}:{parts.port or 5432}/{self.database}"

    def connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.url.get_secret_value(),
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name=APPLICATION_NAME,
                # A SQL_ASCII server (a bare `initdb`) would otherwise hand text back as bytes.
                client_encoding="utf8",
            )
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
            raise TargetUnreachable(f"TARGET_DATABASE_URL ({self.resource}): {first}") from None


class Session(BaseModel):
    """A row of pg_stat_activity, as much as the runbook needs (literals in the query masked)."""

    pid: int
    backend_start: datetime
    database: str | None
    user: str | None
    application: str
    client: str | None
    state: str | None
    backend_type: str
    state_seconds: float | None
    query_seconds: float | None
    superuser: bool
    replication: bool
    own: bool
    # Holds an advisory lock (an idle session holds only session-level ones: a migration tool's,
    # a scheduler's leader lock); terminating it would release that lock under its owner.
    advisory_lock: bool = False
    query: str = ""

    @property
    def interactive(self) -> bool:
        return any(self.application.startswith(name) for name in INTERACTIVE_APPLICATIONS)


class Activity(BaseModel):
    max_connections: int
    superuser_reserved: int
    sessions: list[Session]

    @property
    def client_sessions(self) -> list[Session]:
        return [s for s in self.sessions if s.backend_type == "client backend"]

    @property
    def usage(self) -> float:
        return len(self.client_sessions) / self.max_connections


class ProbeResult(BaseModel):
    ok: bool
    latency_ms: float
    error: str = ""


_ACTIVITY = """
SELECT a.pid, a.backend_start, a.datname AS database, a.usename AS user,
       coalesce(a.application_name, '') AS application, a.client_addr::text AS client,
       a.state, coalesce(a.backend_type, '') AS backend_type,
       extract(epoch FROM now() - a.state_change)::float8 AS state_seconds,
       extract(epoch FROM now() - a.query_start)::float8 AS query_seconds,
       coalesce(r.rolsuper, false) AS superuser,
       a.backend_type = 'walsender' AS replication,
       a.pid = pg_backend_pid() AS own,
       EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory')
         AS advisory_lock,
       left(coalesce(a.query, ''), 500) AS query
FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.backend_type IN ('client backend', 'walsender')
"""


@task(
    name="read-activity",
    retries=2,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["postgres", "read-only"],
)
def read_activity(target: PgTarget) -> Activity:
    """max_connections and every client session of the server (all databases)."""
    with target.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT current_setting('max_connections')::int AS max,"
            " current_setting('superuser_reserved_connections')::int AS reserved"
        )
        limits = cur.fetchone()
        assert limits is not None
        cur.execute(_ACTIVITY)
        sessions = [
            Session(**{**row, "query": _LITERAL.sub("'?'", row["query"])[:200]})
            for row in cur.fetchall()
        ]
    return Activity(
        max_connections=limits["max"], superuser_reserved=limits["reserved"], sessions=sessions
    )


_TERMINATE = """
SELECT a.pid, pg_terminate_backend(a.pid) AS terminated
FROM pg_stat_activity a
LEFT JOIN pg_roles r ON r.oid = a.usesysid
JOIN unnest({pids}::int[], {starts}::timestamptz[]) AS p(pid, backend_start)
  ON p.pid = a.pid AND p.backend_start = a.backend_start
WHERE a.datname = {database}
  AND a.backend_type = 'client backend'
  AND a.state = 'idle'
  AND a.state_change <= now() - make_interval(secs => {idle_seconds}::float8)
  AND a.pid <> pg_backend_pid()
  AND coalesce(a.application_name, '') NOT LIKE 'remediate%'
  AND NOT (coalesce(r.rolsuper, false) AND a.application_name = ANY({maintenance}::text[]))
  AND NOT (a.usename::text = ANY({protected_roles}::text[]))
  AND NOT (coalesce(r.rolsuper, false) AND a.application_name LIKE ANY({interactive}::text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory')
"""


def termination(
    sessions: list[tuple[int, datetime]],
    *,
    database: str,
    idle_seconds: float,
    protected_roles: list[str],
) -> sql.Composed:
    """The statement `terminate_idle_sessions` runs, its values in it as literals: the plan
    shows the approver this very statement (`.as_string(None)`)."""
    return sql.SQL(_TERMINATE.strip()).format(
        pids=sql.Literal([pid for pid, _ in sessions]),
        starts=sql.Literal([start for _, start in sessions]),
        database=sql.Literal(database),
        idle_seconds=sql.Literal(float(idle_seconds)),
        maintenance=sql.Literal(list(MAINTENANCE_APPLICATIONS)),
        protected_roles=sql.Literal(list(protected_roles)),
        interactive=sql.Literal([f"{name}%" for name in INTERACTIVE_APPLICATIONS]),
    )


@task(name="terminate-idle-sessions", cache_policy=NONE, tags=["postgres", "destructive"])
def terminate_idle_sessions(
    target: PgTarget,
    *,
    sessions: list[tuple[int, datetime]],
    idle_seconds: float,
    protected_roles: list[str],
    wait_seconds: float = 5.0,
) -> list[int]:
    """Terminate exactly the named sessions that are still idle in the target database.

    Each session is named by (pid, backend_start), so a pid reused by a new connection is never
    hit; the guards of the plan are re-applied in the same statement, so a session that turned
    active since the plan was approved is left alone. Returns the pids that were terminated.
    """
    if not sessions:
        return []
    with target.connect() as conn:
        statement = termination(
            sessions,
            database=target.database,
            idle_seconds=idle_seconds,
            protected_roles=protected_roles,
        )
        rows = conn.execute(statement).fetchall()
        terminated = sorted(pid for pid, ok in rows if ok)
        # pg_terminate_backend only signals; wait (all at once) until the backends are gone.
        deadline = time.monotonic() + wait_seconds
        while terminated and time.monotonic() < deadline:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (terminated,)
            ).fetchone()
            if not left or left[0] == 0:
                break
            time.sleep(0.02)
    return terminated


@task(name="wait-for-usage", cache_policy=NONE, tags=["postgres", "read-only"])
def wait_for_usage(target: PgTarget, *, below: float, timeout_seconds: float = 15.0) -> float:
    """Poll client-connection usage until it is under `below` (or the timeout); the last reading.

    Backends of a killed client end a moment after their socket closes: wait for them to go.
    """
    deadline = time.monotonic() + timeout_seconds
    with target.connect() as conn:
        while True:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend')::float8"
                " / current_setting('max_connections')::float8"
            ).fetchone()
            usage = float(row[0]) if row else 1.0
            if usage < below or time.monotonic() >= deadline:
                return usage
            time.sleep(0.2)


@task(name="wait-reachable", cache_policy=NONE, tags=["postgres", "read-only"])
def wait_reachable(target: PgTarget, *, timeout_seconds: float = 30.0) -> ProbeResult:
    """Probe until the database answers `SELECT 1` or the timeout passes; the last probe."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = probe_query.fn(target, timeout_seconds=3)
        if result.ok or time.monotonic() >= deadline:
            return result
        time.sleep(0.5)


@task(
    name="probe-query",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["postgres", "read-only"],
)
def probe_query(target: PgTarget, *, timeout_seconds: float = 5.0) -> ProbeResult:
    """Open a fresh connection and run `SELECT 1` within the timeout, as a client would."""
    started = time.perf_counter()
    try:
        with psycopg.connect(
            target.url.get_secret_value(),
            autocommit=True,
            connect_timeout=max(1, round(timeout_seconds)),
            application_name=APPLICATION_NAME,
        ) as conn:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (f"{int(timeout_seconds * 1000)}ms",),
            )
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ProbeResult(ok=False, latency_ms=(time.perf_counter() - started) * 1000, error=first)
    latency = (time.perf_counter() - started) * 1000
    return ProbeResult(ok=latency <= timeout_seconds * 1000, latency_ms=latency)
