"""The product's own incident store in PostgreSQL (`REMEDIATION_DATABASE_URL`).

Incidents, their timeline events, known-good snapshots and operator controls (the kill switch).
The schema is under alembic (`migrations/`); `Store.open()` creates the database when it does not
exist and brings the schema to head the first time a process uses it, under an advisory lock so
that two processes starting together migrate once.
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from remediate.domain.models import Incident, Severity, TimelineEvent
from remediate.domain.settings import ConfigError, redact_url

__all__ = ["LockTimeout", "Store", "StoreUnavailable", "one_store"]

APPLICATION_NAME = "remediate:store"
# The store's schema: `migrations/` of a checkout, else the copy the wheel carries as
# `remediate/store/_migrations` (pyproject.toml, `force-include`).
_CHECKOUT_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
MIGRATIONS = next(
    (
        path
        for path in (_CHECKOUT_MIGRATIONS, Path(__file__).resolve().parent / "_migrations")
        if (path / "env.py").is_file()
    ),
    _CHECKOUT_MIGRATIONS,
)
_MIGRATION_LOCK = 0x7265_6D65  # "reme": one advisory lock id for schema upgrades
_migrated: set[str] = set()
_ONE: ContextVar[Store | None] = ContextVar("remediate_one_store", default=None)
_migrated_lock = threading.Lock()


class StoreUnavailable(ConfigError):
    """The store cannot be reached or prepared; the message is safe to print."""


class LockTimeout(Exception):
    """Another run holds the lock on this resource."""


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _connect(url: str, *, application_name: str = APPLICATION_NAME) -> psycopg.Connection[Any]:
    return psycopg.connect(
        url, autocommit=True, connect_timeout=5, application_name=application_name
    )


def _ensure_database(url: str) -> None:
    """Create the store's database when the server has none of that name."""
    name = urlsplit(url).path.lstrip("/")
    with _connect(_with_database(url, "postgres")) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            # UTF8 whatever the server's default (SQL_ASCII on a cluster made without a locale).
            admin.execute(
                sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(name)
                )
            )


def migrate(url: str) -> None:
    """Bring the store's schema to alembic head (idempotent, safe to race)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    engine = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1).replace(
            "postgres://", "postgresql+psycopg://", 1
        )
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK})
            try:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK})
                connection.commit()
    finally:
        engine.dispose()


@contextmanager
def one_store(store: Store) -> Iterator[Store]:
    """Within this block (this thread, or a context copied from it), `Store.open` of the same URL
    returns `store`, one connection for all: a health sweep's hundreds of checks share it."""
    token = _ONE.set(store)
    try:
        yield store
    finally:
        _ONE.reset(token)


class Store:
    """A thread-safe handle on the incident store. One connection, reopened if it drops."""

    def __init__(self, url: SecretStr, *, fail_fast_seconds: float = 0.0) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.RLock()
        # After a failed connection, calls within this many seconds fail at once rather than
        # each waiting out its own connect timeout (a store shared by many threads).
        self._fail_fast = fail_fast_seconds
        self._outage: tuple[float, StoreUnavailable] | None = None

    @classmethod
    def open(cls, url: SecretStr) -> Store:
        raw = url.get_secret_value()
        one = _ONE.get()
        if one is not None and one._url.get_secret_value() == raw:
            return one
        with _migrated_lock:
            if raw not in _migrated:
                try:
                    _ensure_database(raw)
                    migrate(raw)
                except Exception as exc:  # noqa: BLE001 - driver, sqlalchemy and alembic errors
                    raise StoreUnavailable(
                        f"REMEDIATION_DATABASE_URL ({redact_url(url)}): {_reason(exc)}"
                    ) from None
                _migrated.add(raw)
        return cls(url)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(
            f"the incident store is unreachable (REMEDIATION_DATABASE_URL"
            f" {redact_url(self._url)}: {_reason(exc)})"
        )

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = _connect(self._url.get_secret_value())
        return self._conn

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A cursor on the store's connection; a lost or refused connection is `StoreUnavailable`
        (the next call connects again)."""
        with self._lock:
            if self._outage is not None and time.monotonic() < self._outage[0]:
                raise self._outage[1]
            try:
                with self._connection().cursor(row_factory=dict_row) as cursor:
                    yield cursor
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                down = self._unavailable(exc)
                if self._fail_fast:
                    self._outage = (time.monotonic() + self._fail_fast, down)
                raise down from None

    # Incidents and their timeline.

    def open_incident(
        self,
        *,
        runbook: str,
        severity: Severity,
        resource: str,
        title: str,
        flow_run_id: str | None = None,
        requested_by: str | None = None,
    ) -> Incident:
        with self._cursor() as cur:
            cur.execute(
                """INSERT INTO incidents (id, runbook, severity, status, resource, title,
                                          flow_run_id, requested_by)
                   VALUES (%s, %s, %s, 'open', %s, %s, %s, %s) RETURNING *""",
                (uuid.uuid4(), runbook, severity, resource, title, flow_run_id, requested_by),
            )
            row = cur.fetchone()
        assert row is not None
        return _incident(row)

    def close_incident(self, incident_id: str, *, status: str) -> None:
        with self._cursor() as cur:
            cur.execute(
                "UPDATE incidents SET status = %s, closed_at = clock_timestamp() WHERE id = %s",
                (status, incident_id),
            )

    def set_incident_status(self, incident_id: str, *, status: str) -> None:
        with self._cursor() as cur:
            cur.execute("UPDATE incidents SET status = %s WHERE id = %s", (status, incident_id))

    def record(
        self,
        incident_id: str,
        kind: str,
        *,
        actor: str | None = None,
        resource: str | None = None,
        detail: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        with self._cursor() as cur:
            cur.execute(
                """INSERT INTO incident_events (incident_id, kind, actor, resource, detail, data)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                (incident_id, kind, actor, resource, detail, Jsonb(data or {})),
            )

    def record_once(self, incident_id: str, kind: str, *, detail: str = "") -> bool:
        """Record `kind` unless the incident has one already (False then); safe across processes."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    return _record_once(cur, incident_id, kind, detail=detail)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise self._unavailable(exc) from None

    def apply_journal(self, entries: list[dict[str, Any]]) -> None:
        """Write what a run kept while the store was unreachable (`remediate.engine.journal`), in
        order and
        in one transaction, with the times they happened."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    for entry in entries:
                        _apply(cur, entry)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise self._unavailable(exc) from None

    def incident(self, incident_id: str) -> Incident | None:
        with self._cursor() as cur:
            cur.execute("SELECT * FROM incidents WHERE id::text = %s", (incident_id,))
            row = cur.fetchone()
        return _incident(row) if row else None

    def incidents(self, *, open_only: bool = False, limit: int = 100) -> list[Incident]:
        query = "SELECT * FROM incidents"
        if open_only:
            query += " WHERE closed_at IS NULL"
        with self._cursor() as cur:
            cur.execute(query + " ORDER BY opened_at DESC LIMIT %s", (limit,))
            return [_incident(row) for row in cur.fetchall()]

    def timeline(self, incident_id: str) -> list[TimelineEvent]:
        with self._cursor() as cur:
            cur.execute(
                """SELECT at, kind, actor, detail, data FROM incident_events
                   WHERE incident_id = %s ORDER BY id""",
                (incident_id,),
            )
            return [TimelineEvent(**row) for row in cur.fetchall()]

    def incident_for_flow_run(self, flow_run_id: str) -> Incident | None:
        """The incident a run opened (None when the run found nothing or has not got there)."""
        with self._cursor() as cur:
            cur.execute(
                "SELECT * FROM incidents WHERE flow_run_id::text = %s ORDER BY opened_at DESC"
                " LIMIT 1",
                (flow_run_id,),
            )
            row = cur.fetchone()
        return _incident(row) if row else None

    def set_incident_severity(self, incident_id: str, *, severity: Severity) -> None:
        with self._cursor() as cur:
            cur.execute("UPDATE incidents SET severity = %s WHERE id = %s", (severity, incident_id))

    def save_postmortem(self, incident_id: str, markdown: str) -> None:
        with self._cursor() as cur:
            cur.execute(
                """INSERT INTO postmortems (incident_id, markdown) VALUES (%s, %s)
                   ON CONFLICT (incident_id) DO UPDATE SET markdown = EXCLUDED.markdown,
                       written_at = clock_timestamp()""",
                (incident_id, markdown),
            )

    def postmortem(self, incident_id: str) -> str | None:
        with self._cursor() as cur:
            cur.execute(
                "SELECT markdown FROM postmortems WHERE incident_id::text = %s", (incident_id,)
            )
            row = cur.fetchone()
        return str(row["markdown"]) if row else None

    # Alerts the receiver took, and single-use approval links.

    def record_alert(
        self,
        *,
        source: str,
        status: str,
        name: str,
        fingerprint: str,
        outcome: str,
        dedup_key: str | None = None,
        runbook: str | None = None,
        flow_run_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        with self._cursor() as cur:
            cur.execute(
                """INSERT INTO alerts (source, status, name, fingerprint, dedup_key, runbook,
                                       outcome, flow_run_id, data)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    source,
                    status,
                    name,
                    fingerprint,
                    dedup_key,
                    runbook,
                    outcome,
                    flow_run_id,
                    Jsonb(data or {}),
                ),
            )

    def alerts(self, *, limit: int = 100) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            cur.execute("SELECT * FROM alerts ORDER BY id DESC LIMIT %s", (limit,))
            return [dict(row) for row in cur.fetchall()]

    def run_for_alert(self, dedup_key: str) -> str | None:
        """The flow run the latest firing alert with this key started, if one did."""
        with self._cursor() as cur:
            cur.execute(
                """SELECT flow_run_id FROM alerts WHERE dedup_key = %s
                   AND flow_run_id IS NOT NULL ORDER BY id DESC LIMIT 1""",
                (dedup_key,),
            )
            row = cur.fetchone()
        return str(row["flow_run_id"]) if row else None

    def use_approval_link(self, nonce: str, *, flow_run_id: str, used_by: str) -> bool:
        """Mark a link used; False when it was used before (a link answers once)."""
        with self._cursor() as cur:
            cur.execute(
                """INSERT INTO approval_links_used (nonce, flow_run_id, used_by)
                   VALUES (%s, %s, %s) ON CONFLICT (nonce) DO NOTHING""",
                (nonce, flow_run_id, used_by),
            )
            return cur.rowcount == 1

    # The safety envelope's memory.

    def executed_actions(
        self, resource: str, *, within_seconds: float, automatic_only: bool = True
    ) -> list[datetime]:
        """When destructive actions (by default: automatic ones) ran on `resource`, newest first."""
        with self._cursor() as cur:
            cur.execute(
                """SELECT at FROM incident_events
                   WHERE resource = %s AND kind = 'acted'
                     AND at > clock_timestamp() - make_interval(secs => %s)
                     AND (NOT %s OR data ->> 'automatic' = 'true')
                   ORDER BY at DESC""",
                (resource, within_seconds, automatic_only),
            )
            return [row["at"] for row in cur.fetchall()]

    def now(self) -> datetime:
        with self._cursor() as cur:
            cur.execute("SELECT clock_timestamp() AS now")
            row = cur.fetchone()
        assert row is not None
        result: datetime = row["now"]
        return result

    def kill_switch(self) -> bool:
        with self._cursor() as cur:
            cur.execute("SELECT value FROM controls WHERE name = 'kill-switch'")
            row = cur.fetchone()
        return bool(row and row["value"].get("on"))

    def set_kill_switch(self, on: bool, *, by: str) -> None:
        with self._cursor() as cur:
            cur.execute(
                """INSERT INTO controls (name, value, updated_by) VALUES ('kill-switch', %s, %s)
                   ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value,
                       updated_by = EXCLUDED.updated_by, updated_at = clock_timestamp()""",
                (Jsonb({"on": on}), by),
            )

    @contextmanager
    def resource_lock(self, resource: str, *, timeout: float) -> Iterator[Callable[[], bool]]:
        """Hold an advisory lock named after `resource` across every process using this store;
        yields a check that the lock is still held (its connection still up).

        The lock lives on a connection of its own: it is released when the block ends, or by
        PostgreSQL itself if the process dies, so a crashed run never leaves a resource locked.
        If that connection drops, PostgreSQL releases the lock too: a run checks before each
        step and stops rather than act unguarded.
        """
        key = zlib.crc32(f"remediate:{resource}".encode())
        try:
            conn = _connect(self._url.get_secret_value(), application_name="remediate:lock")
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if row and row[0]:
                    break
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"another run holds the lock on {resource}")
                time.sleep(0.1)

            def held() -> bool:
                try:
                    conn.execute("SELECT 1").fetchone()
                except psycopg.Error:
                    return False
                return not conn.closed

            yield held
        finally:
            conn.close()

    # Run leases: is the process executing an incident's run still there
    # (`remediate/engine/liveness.py`)?

    def take_lease(
        self,
        *,
        incident_id: str | None = None,
        flow_run_id: str | None,
        run_count: int,
        holder: str,
        ttl_seconds: int,
    ) -> str:
        """A new lease (its id), for a run still detecting (`incident_id` None) or an incident's."""
        with self._cursor() as cur:
            cur.execute(
                """INSERT INTO run_leases (incident_id, flow_run_id, run_count, holder,
                                           ttl_seconds, expires_at)
                   VALUES (%s, %s, %s, %s, %s,
                           clock_timestamp() + make_interval(secs => %s))
                   RETURNING id::text AS id""",
                (incident_id, flow_run_id, run_count, holder, ttl_seconds, ttl_seconds),
            )
            row = cur.fetchone()
            assert row is not None
            return str(row["id"])

    def attach_lease(self, lease_id: str, incident_id: str) -> bool:
        """The run opened `incident_id`: its lease is now the incident's. False when the lease
        was declared lost meanwhile (the execution must not act)."""
        with self._cursor() as cur:
            cur.execute(
                "UPDATE run_leases SET incident_id = %s WHERE id = %s AND lost_at IS NULL",
                (incident_id, lease_id),
            )
            return cur.rowcount == 1

    def renew_lease(self, lease_id: str) -> bool:
        """Renew the lease for another of its terms; False when it was declared lost (or is
        gone): the execution holding it must not act any more."""
        with self._cursor() as cur:
            cur.execute(
                """UPDATE run_leases SET renewed_at = clock_timestamp(), suspected_at = NULL,
                          expires_at = clock_timestamp() + make_interval(secs => ttl_seconds)
                   WHERE id = %s AND lost_at IS NULL""",
                (lease_id,),
            )
            return cur.rowcount == 1

    def release_lease(self, lease_id: str) -> None:
        with self._cursor() as cur:
            cur.execute("DELETE FROM run_leases WHERE id = %s AND lost_at IS NULL", (lease_id,))

    def release_run_leases(self, flow_run_id: str) -> None:
        """Every live lease of a flow run (a worker handing the run back)."""
        with self._cursor() as cur:
            cur.execute(
                "DELETE FROM run_leases WHERE flow_run_id = %s AND lost_at IS NULL",
                (flow_run_id,),
            )

    def lost_leases(self) -> list[dict[str, Any]]:
        """Leases now declared lost (each returned once, to one caller, across processes): expired,
        seen expired by a check, and still not renewed a whole term after that check. The second
        look is what tells a dead executor from one that could not reach the store for a while:
        a live one renews within a third of a term of the store coming back."""
        with self._cursor() as cur, cur.connection.transaction():
            cur.execute(
                """UPDATE run_leases SET suspected_at = clock_timestamp()
                   WHERE lost_at IS NULL AND suspected_at IS NULL
                     AND expires_at < clock_timestamp()"""
            )
            cur.execute(
                """UPDATE run_leases SET lost_at = clock_timestamp()
                   WHERE lost_at IS NULL AND expires_at < clock_timestamp()
                     AND suspected_at < clock_timestamp() - make_interval(secs => ttl_seconds)
                   RETURNING id::text AS id, incident_id::text AS incident_id, flow_run_id,
                             run_count, holder, renewed_at, lost_at"""
            )
            return list(cur.fetchall())

    # Known-good snapshots (used by later runbooks: policies, key fingerprints…).

    def save_snapshot(self, kind: str, resource: str, data: dict[str, Any]) -> None:
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO snapshots (kind, resource, data) VALUES (%s, %s, %s)",
                (kind, resource, Jsonb(data)),
            )

    def replace_snapshot(self, kind: str, resource: str, data: dict[str, Any]) -> None:
        """The one snapshot of (`kind`, `resource`): a heartbeat, not a history."""
        with self._cursor() as cur, cur.connection.transaction():
            cur.execute("DELETE FROM snapshots WHERE kind = %s AND resource = %s", (kind, resource))
            cur.execute(
                "INSERT INTO snapshots (kind, resource, data) VALUES (%s, %s, %s)",
                (kind, resource, Jsonb(data)),
            )

    def incident_counts(self) -> dict[tuple[str, str], int]:
        """How many incidents each (runbook, status) has, over the whole store."""
        with self._cursor() as cur:
            cur.execute(
                "SELECT runbook, status, count(*) AS n FROM incidents GROUP BY runbook, status"
            )
            return {(r["runbook"], r["status"]): int(r["n"]) for r in cur.fetchall()}

    def latest_snapshot(self, kind: str, resource: str) -> dict[str, Any] | None:
        with self._cursor() as cur:
            cur.execute(
                """SELECT data FROM snapshots WHERE kind = %s AND resource = %s
                   ORDER BY taken_at DESC, id DESC LIMIT 1""",
                (kind, resource),
            )
            row = cur.fetchone()
        return dict(row["data"]) if row else None


def _record_once(
    cur: psycopg.Cursor[Any], incident_id: str, kind: str, *, detail: str, at: Any = None
) -> bool:
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(f"{incident_id}:{kind}".encode()),))
    cur.execute(
        "SELECT 1 FROM incident_events WHERE incident_id = %s AND kind = %s", (incident_id, kind)
    )
    if cur.fetchone():
        return False
    cur.execute(
        """INSERT INTO incident_events (incident_id, kind, detail, data, at)
           VALUES (%s, %s, %s, '{}', COALESCE(%s::timestamptz, clock_timestamp()))""",
        (incident_id, kind, detail, at),
    )
    return True


def _apply(cur: psycopg.Cursor[Any], entry: dict[str, Any]) -> None:
    """One journal entry (see `remediate.engine.journal`) as the store write it stands for."""
    op, at = entry["op"], entry["at"]
    if op == "open":
        i = entry["incident"]
        cur.execute(
            """INSERT INTO incidents (id, runbook, severity, status, resource, title, flow_run_id,
                                      requested_by, opened_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING""",
            (
                i["id"],
                i["runbook"],
                i["severity"],
                i["status"],
                i["resource"],
                i["title"],
                i["flow_run_id"],
                i["requested_by"],
                i["opened_at"],
            ),
        )
    elif op == "once":
        _record_once(
            cur, entry["incident_id"], entry["kind"], detail=entry.get("detail", ""), at=at
        )
    elif op == "event":
        cur.execute(
            """INSERT INTO incident_events (incident_id, kind, actor, resource, detail, data, at)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            (
                entry["incident_id"],
                entry["kind"],
                entry.get("actor"),
                entry.get("resource"),
                entry.get("detail", ""),
                Jsonb(entry.get("data") or {}),
                at,
            ),
        )
    elif op == "status":
        cur.execute(
            """UPDATE incidents SET status = %s,
                      closed_at = CASE WHEN %s THEN %s::timestamptz ELSE closed_at END
               WHERE id = %s""",
            (entry["status"], entry["close"], at, entry["incident_id"]),
        )
    elif op == "severity":
        cur.execute(
            "UPDATE incidents SET severity = %s WHERE id = %s",
            (entry["severity"], entry["incident_id"]),
        )
    elif op == "postmortem":
        cur.execute(
            """INSERT INTO postmortems (incident_id, markdown, written_at) VALUES (%s, %s, %s)
               ON CONFLICT (incident_id) DO UPDATE SET markdown = EXCLUDED.markdown,
                   written_at = EXCLUDED.written_at""",
            (entry["incident_id"], entry["markdown"], at),
        )
    else:
        raise ValueError(f"unknown journal entry {op!r}")


def _incident(row: dict[str, Any]) -> Incident:
    values = dict(row)
    values["id"] = str(values["id"])
    if values.get("flow_run_id") is not None:
        values["flow_run_id"] = str(values["flow_run_id"])
    return Incident(**values)


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, which names the cause and never the password."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
