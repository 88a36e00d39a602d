"""Real PostgreSQL sessions of every kind the connection-pool runbook must tell apart."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pids_alive(pids: set[int]) -> set[int]:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
        ).fetchall()
    return {row[0] for row in rows}


def wait_idle(pids: set[int], timeout: float = 10.0) -> None:
    """Wait until every session in `pids` is reported idle (or idle in transaction)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND state LIKE 'idle%%'",
                (list(pids),),
            ).fetchone()
        if rows and rows[0] == len(pids):
            return
        time.sleep(0.05)
    raise AssertionError("sessions did not settle as idle")


@dataclass
class Herd:
    """Sessions opened by a test; `close()` ends whatever is left of them."""

    conns: list[psycopg.Connection] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def _open(self, url: str, *, app: str, autocommit: bool = True) -> psycopg.Connection:
        conn = psycopg.connect(url, autocommit=autocommit, application_name=app)
        self.conns.append(conn)
        return conn

    def idle(self, url: str, n: int, *, app: str = "app-pool") -> set[int]:
        return {self._open(url, app=app).info.backend_pid for _ in range(n)}

    def idle_in_transaction(self, url: str, *, app: str = "app-worker") -> int:
        conn = self._open(url, app=app, autocommit=False)
        conn.execute("SELECT 1")
        return conn.info.backend_pid

    def active(self, url: str, n: int, *, seconds: float = 60, app: str = "app-report") -> set[int]:
        pids = set()
        for _ in range(n):
            conn = self._open(url, app=app)
            pids.add(conn.info.backend_pid)

            def sleep(c: psycopg.Connection = conn) -> None:
                with contextlib.suppress(psycopg.Error):
                    c.execute("SELECT pg_sleep(%s)", (seconds,))

            thread = threading.Thread(target=sleep, daemon=True)
            thread.start()
            self.threads.append(thread)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE pid = ANY(%s) AND state = 'active'",
                    (list(pids),),
                ).fetchone()
            if row and row[0] == n:
                break
            time.sleep(0.05)
        return pids

    def close(self) -> None:
        for conn in self.conns:
            try:
                if not conn.closed:
                    conn.cancel()
            except psycopg.Error:
                pass
        for conn in self.conns:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        for thread in self.threads:
            thread.join(timeout=5)
