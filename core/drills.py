"""`remediate drill ID`: a fire drill in a disposable sandbox on the local services.

The drill builds the runbook's incident for real (for connection-pool-exhausted: a sandbox
database full of idle sessions, plus active and idle-in-transaction ones that must survive), runs
the runbook against it through the approval gate, prints what changed, and removes the sandbox.
"""

from __future__ import annotations

import getpass
import os
import select
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from core.catalogue import Runbook
from core.settings import ConfigError

__all__ = ["run_drill", "threshold_below"]

ADMIN_URL = os.environ.get("DRILL_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IDLE_SESSIONS = 30


def _say(text: str = "") -> None:
    print(text, flush=True)


@contextmanager
def _sandbox_database() -> Iterator[str]:
    name = f"remediate_drill_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"DRILL_POSTGRES_URL: cannot reach PostgreSQL: {first}") from None
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        _say(f"sandbox database {name} removed")


def _url(database: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"


def _count(database: str, state: str) -> int:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = %s"
            " AND application_name LIKE 'drill-%%'",
            (database, state),
        ).fetchone()
    return int(row[0]) if row else 0


def _open_incident(database: str) -> list[psycopg.Connection[Any]]:
    """The incident: a leaking pool's idle sessions, plus sessions that must survive."""
    url = _url(database)
    conns = [
        psycopg.connect(url, autocommit=True, application_name="drill-app-pool")
        for _ in range(IDLE_SESSIONS)
    ]
    worker = psycopg.connect(url, application_name="drill-worker")  # idle in transaction
    worker.execute("SELECT 1")
    conns.append(worker)
    report = psycopg.connect(url, autocommit=True, application_name="drill-report")

    def long_report() -> None:
        with suppress(psycopg.Error):
            report.execute("SELECT pg_sleep(600)")

    threading.Thread(target=long_report, daemon=True).start()
    conns.append(report)
    time.sleep(0.5)
    return conns


def threshold_below(idle_sessions: int, *, admin_url: str = ADMIN_URL) -> float:
    """A usage threshold the server is over now, and under once `idle_sessions` are gone.

    It sits halfway, so that connections others open or close meanwhile do not flip the result.
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
            " current_setting('max_connections')::int"
        ).fetchone()
    assert row is not None
    used, limit = row
    return round(float(used - idle_sessions / 2) / float(limit), 4)


def _paused_run_id(database: str, future: Future[Any], timeout: float = 60) -> str | None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and not future.done():
            for run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            ):
                if run.parameters.get("database") == database:
                    return str(run.id)
            time.sleep(0.3)
    return None


def _plan_markdown(database: str) -> str:
    """The plan the approver is shown, as the run recorded it in the store."""
    from core.models import Plan
    from core.settings import load_settings
    from core.store import Store

    store = Store.open(load_settings().remediation_database_url)
    for incident in store.incidents(open_only=True, limit=20):
        if incident.resource.endswith(f"/{database}"):
            for event in store.timeline(incident.id):
                if event.kind == "approval-asked":
                    return Plan(**event.data["plan"]).to_markdown()
    return "(plan not found in the store)"


def _person() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "drill"


def _ask_person(run_id: str, future: Future[Any]) -> bool | None:
    """y/n at the terminal, while an answer from elsewhere (UI, CLI) ends the question too."""
    _say("Approve this plan? [y/N]  (or answer from another terminal / the Prefect UI)")
    while not future.done():
        ready, _, _ = select.select([sys.stdin], [], [], 0.5)
        if ready:
            return sys.stdin.readline().strip().lower() in {"y", "yes"}
    return None


def run_drill(runbook: Runbook, *, approve_as: str | None, interactive: bool) -> int:
    if runbook.id != "connection-pool-exhausted":
        raise ConfigError(f"no drill for {runbook.id} yet")
    from core.prefect_api import ensure_api, run_settings

    ensure_api()
    from prefect.flow_runs import resume_flow_run

    _say(f"== Drill: {runbook.id} ({runbook.severity}, seed {runbook.seed}) ==")
    with _sandbox_database() as database:
        os.environ["TARGET_DATABASE_URL"] = _url(database)
        conns = _open_incident(database)
        try:
            threshold = threshold_below(IDLE_SESSIONS)
            _say(
                f"sandbox database {database}: {_count(database, 'idle')} idle sessions from a"
                " leaking pool, 1 idle in a transaction, 1 running a report"
            )
            _say(f"usage threshold for the drill: {threshold:.1%} of max_connections")
            flow = runbook.load_flow()
            future: Future[Any] = Future()

            def run() -> None:
                try:
                    with run_settings():
                        future.set_result(
                            flow(
                                usage_threshold=threshold,
                                idle_minutes=0,
                                database=database,
                                requested_by="drill",
                            )
                        )
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    future.set_exception(exc)

            threading.Thread(target=run, daemon=True).start()
            run_id = _paused_run_id(database, future)
            if run_id is not None:
                _say("\n" + _plan_markdown(database))
                _say(f"The run {run_id} is waiting for an approval.")
                _say(f"  remediate approve {run_id}            (approve)")
                _say(f"  remediate approve {run_id} --deny     (decline)\n")
                if approve_as:
                    _say(f"approving as {approve_as} (--approve-as)")
                    resume_flow_run(
                        UUID(run_id),
                        run_input={"approve": True, "approver": approve_as, "note": "drill"},
                    )
                elif interactive:
                    answer = _ask_person(run_id, future)
                    if answer is not None:
                        with suppress(Exception):
                            resume_flow_run(
                                UUID(run_id),
                                run_input={
                                    "approve": answer,
                                    "approver": _person(),
                                    "note": "drill",
                                },
                            )
                else:
                    _say("waiting for an answer from another terminal or the Prefect UI…")
            outcome = future.result()
            left = _count(database, "idle")
            _say(f"\noutcome: {outcome.status}; {outcome.summary}")
            for action in outcome.actions:
                _say(
                    f"  {action.name}: {'executed' if action.executed else 'not executed'},"
                    f" {len(action.targets)} target(s), approved by {action.approved_by}"
                )
            _say(
                f"idle drill sessions left: {left} of {IDLE_SESSIONS};"
                f" idle in transaction: {_count(database, 'idle in transaction')};"
                f" active: {_count(database, 'active')}"
            )
            if outcome.incident_id:
                _say(f"timeline: remediate incident {outcome.incident_id}")
            return 0 if outcome.status == "resolved" and left == 0 else 1
        finally:
            for conn in conns:
                with suppress(psycopg.Error):
                    conn.cancel()
                    conn.close()
