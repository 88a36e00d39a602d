"""Is the process executing a run still there? (issue "Past one machine", item 1)

A runbook's run holds a lease in the store from its first step
(`remediate.engine.incident.runbook_flow`;
the incident's once it opens one) and renews it every third of `RUN_LEASE_SECONDS` from a thread
of its own, whatever the run is doing (detecting, a 30-minute wait for an approval). When the
process is gone (a worker's machine lost, a SIGKILL, an OOM), the
lease expires; a check (every receiver's loop, and the incident watchdog) that sees it expired,
and still expired a whole lease later, declares the run lost: the incident escalates with what was
done and what was not, and the flow run is marked Crashed, so an approval given afterwards is
refused (`remediate approve` exits 1 naming the loss) and the alert's claim is taken over by the
next alert. The second look keeps a run that merely could not reach the store from being declared
lost: it renews within a third of a lease once the store is back. A run whose lease was declared
lost stands down before acting (`Lease.confirm`), so "escalated" and "acted" never both happen.
A run lost while still detecting has no incident to escalate: its flow run is marked Crashed,
which frees the alert's claim for the next alert.

The thread also notices the run's parent process (a Prefect worker) going away: the run's
standard output is a pipe to that worker, and the next line written into it would kill the run
with a broken pipe after its approval. The output goes to a file instead, and the run carries on.

Cost: one UPDATE per third of a lease per running incident, and one thread (bench/liveness.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr

from remediate.domain.settings import Settings
from remediate.store.database import Store, StoreUnavailable

__all__ = ["ExecutorLost", "Lease", "LostRun", "notice_lost_runs", "watch_leases"]

log = logging.getLogger(__name__)


class ExecutorLost(Exception):
    """This execution's lease was declared lost before it opened an incident: it must stop."""


def holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(kw_only=True)
class Lease:
    """One execution's lease, from its first step (`incident_id` None while it detects) to its
    end; `attach()` when it opens its incident, `release()` when it ends."""

    url: SecretStr
    lease_id: str = ""
    incident_id: str | None = None
    ttl_seconds: int
    flow_run_id: str | None = None
    # Set when the store says the lease was declared lost: this execution must not act.
    lost: bool = False
    _store: Store | None = field(default=None, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _parent: int = field(default_factory=os.getppid, init=False, repr=False)
    _own_process: bool = field(default=False, init=False, repr=False)

    @classmethod
    def take(
        cls,
        settings: Settings,
        *,
        incident_id: str | None = None,
        flow_run_id: str | None,
        run_count: int,
    ) -> Lease | None:
        """Take the lease and start renewing it; None when the store cannot be reached (the
        run goes on: its record is spooled, and nothing can declare it lost either)."""
        lease = cls(
            url=settings.remediation_database_url,
            incident_id=incident_id,
            ttl_seconds=settings.run_lease_seconds,
            flow_run_id=flow_run_id,
        )
        # A run in a process of its own (Prefect's runner or a worker started it): its parent
        # is the worker whose death breaks its output pipe.
        lease._own_process = bool(flow_run_id) and os.environ.get("PREFECT__FLOW_RUN_ID") == (
            flow_run_id
        )
        try:
            lease.lease_id = lease._db().take_lease(
                incident_id=incident_id,
                flow_run_id=flow_run_id,
                run_count=run_count,
                holder=holder(),
                ttl_seconds=lease.ttl_seconds,
            )
        except (StoreUnavailable, psycopg.Error) as exc:
            log.warning("no run lease for %s: %s", lease.name, type(exc).__name__)
            lease.close()
            return None
        threading.Thread(target=lease._keep, name=f"lease-{lease.name[:8]}", daemon=True).start()
        return lease

    @property
    def name(self) -> str:
        return self.incident_id or self.flow_run_id or self.lease_id or "run"

    def attach(self, incident_id: str) -> None:
        """The run opened its incident: the lease is the incident's from now on (a lease
        declared lost meanwhile stays lost: the run stands down before acting)."""
        self.incident_id = incident_id
        try:
            with self._lock:
                if not self.lost and not self._db().attach_lease(self.lease_id, incident_id):
                    self.lost = True
        except StoreUnavailable as exc:
            log.warning("could not attach the run lease to incident %s: %s", incident_id, exc)

    def _db(self) -> Store:
        if self._store is None:
            self._store = Store(self.url)  # a connection of its own: never behind the run's
        return self._store

    def renew(self) -> bool:
        """Renew now; False once the lease was declared lost. A store that does not answer
        renews nothing and declares nothing (StoreUnavailable is the caller's)."""
        with self._lock:
            if self.lost:
                return False
            if self._stop.is_set():  # released or closed: nothing to renew, no store to reopen
                return True
            if not self._db().renew_lease(self.lease_id):
                self.lost = True
            return not self.lost

    def lost_now(self) -> bool:
        """Whether this lease was declared lost, asked of the store now (a store that does not
        answer says nothing: the run goes on, as it does without a lease)."""
        with contextlib.suppress(StoreUnavailable):
            self.renew()
        return self.lost

    def confirm(self) -> str | None:
        """Right before acting: why this execution must stand down (its lease was declared
        lost), or None. A renewed lease cannot be declared lost for two terms. A store that does
        not answer raises StoreUnavailable: the run fails closed, as without the store it
        cannot read the kill switch or take the lock either."""
        if self.renew():
            return None
        return (
            "its executor was declared lost (the lease was not renewed in time) and the incident"
            " was escalated"
        )

    def _keep(self) -> None:
        interval = max(1.0, self.ttl_seconds / 3)
        while not self._stop.wait(interval):
            self._watch_parent()
            try:
                if not self.renew():
                    log.warning(
                        "the run lease of %s was declared lost: this run will not act", self.name
                    )
                    return
            except StoreUnavailable:
                continue  # the store is away; the checks cannot see it either
            except Exception as exc:  # noqa: BLE001 - the thread must outlive a surprise
                log.warning("renewing the run lease of %s: %s", self.name, exc)

    def _watch_parent(self) -> None:
        if not self._own_process or os.getppid() == self._parent:
            return
        self._parent = os.getppid()
        path = _orphan_log(self.flow_run_id or self.name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError:
            fd = os.open(os.devnull, os.O_WRONLY)
        for stream in (1, 2):
            os.dup2(fd, stream)
        os.close(fd)
        log.warning("the worker that started this run is gone; its output goes to %s", path)

    def release(self) -> None:
        """The run ended: stop renewing and drop the lease (kept when declared lost)."""
        self._stop.set()
        try:
            with self._lock:
                if not self.lost:
                    self._db().release_lease(self.lease_id)
        except StoreUnavailable:
            pass  # it expires; the check finds the incident closed, or escalates it honestly
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._store is not None:
            self._store.close()


def _orphan_log(name: str) -> Path:
    from remediate.engine.prefect_api import STATE_DIR, private_dir

    folder = STATE_DIR / "orphaned-runs"
    private_dir(folder)
    return folder / f"{name}.log"


@dataclass(frozen=True)
class LostRun:
    incident_id: str | None  # None: lost while detecting, before it opened an incident
    flow_run_id: str | None
    holder: str
    renewed_at: datetime
    crashed: bool
    detail: str

    @classmethod
    def of(
        cls, row: dict[str, Any], *, incident_id: str | None, crashed: bool, detail: str
    ) -> LostRun:
        return cls(
            incident_id=incident_id,
            flow_run_id=row.get("flow_run_id"),
            holder=str(row["holder"]),
            renewed_at=row["renewed_at"],
            crashed=crashed,
            detail=detail,
        )


def notice_lost_runs(settings: Settings, store: Store) -> list[LostRun]:
    """Declare lost the runs whose lease expired and stayed expired; escalate their incidents
    and mark their flow runs Crashed. Safe to call from many processes at once: each lost run is
    handled by one."""
    return [_handle(settings, store, row) for row in store.lost_leases()]


def _handle(settings: Settings, store: Store, row: dict[str, Any]) -> LostRun:
    if row.get("incident_id") is None:
        # Its incident may exist all the same: opened, but the lease not attached to it (the
        # store away at that moment, or the process killed in between).
        flow_run_id = row.get("flow_run_id")
        opened = store.incident_for_flow_run(str(flow_run_id)) if flow_run_id else None
        if opened is None or opened.closed_at is not None:
            return _lost_while_detecting(row)
        row = {**row, "incident_id": opened.id}
    from remediate.engine.comms import IncidentComms

    incident_id = str(row["incident_id"])
    incident = store.incident(incident_id)
    events = store.timeline(incident_id)
    done = [e.detail for e in events if e.kind == "acted"]
    plans = [e for e in events if e.kind == "planned"]
    approvals = [e.kind for e in events if e.kind.startswith("approval-")]
    asked = bool(approvals) and approvals[-1] in {"approval-asked", "approval-refused"}
    where = "while waiting for an approval" if asked else "while it was executing"
    pending = (
        [str(a.get("name")) for a in plans[-1].data.get("plan", {}).get("actions", [])]
        if plans
        else []
    )
    not_done = [name for name in pending if not any(d.startswith(f"{name}:") for d in done)]
    detail = (
        f"the process executing this run ({row['holder']}) stopped renewing its lease at"
        f" {row['renewed_at']:%H:%M:%S %Z} {where}; done: {'; '.join(done) or 'nothing'};"
        f" not done: {', '.join(not_done) or 'nothing planned'}."
        " An approval given now is refused; a new alert starts a new run"
    )
    crashed = _crash(row, detail) if row.get("flow_run_id") else False
    if incident is not None and incident.closed_at is None:
        store.record(
            incident_id,
            "executor-lost",
            actor="remediate",
            detail=detail,
            data={
                "holder": row["holder"],
                "flow_run_id": row.get("flow_run_id"),
                "renewed_at": row["renewed_at"].isoformat(),
                "done": done,
                "not_done": not_done,
                "flow_run_crashed": crashed,
            },
        )
        store.set_incident_status(incident_id, status="escalated")
        comms = IncidentComms.for_incident(incident, settings=settings, store=store)
        causes = next(
            (list(e.data.get("causes", [])) for e in reversed(events) if e.kind == "diagnosed"),
            [],
        )
        comms.ended("escalated", causes=causes, needs_person=f"executor lost: {detail}")
    log.warning("incident %s: executor lost: %s", incident_id, detail)
    return LostRun.of(row, incident_id=incident_id, crashed=crashed, detail=detail)


def _lost_while_detecting(row: dict[str, Any]) -> LostRun:
    """A run lost before it opened an incident changed nothing and told nobody: its flow run is
    marked Crashed, which ends the alert's claim, so the next alert starts a new run instead of
    being deduplicated against a run that will never finish."""
    detail = (
        f"the process executing this run ({row['holder']}) stopped renewing its lease at"
        f" {row['renewed_at']:%H:%M:%S %Z} while detecting, before it opened an incident:"
        " nothing was changed. A new alert starts a new run"
    )
    crashed = _crash(row, detail) if row.get("flow_run_id") else False
    log.warning("flow run %s: executor lost: %s", row.get("flow_run_id"), detail)
    return LostRun.of(row, incident_id=None, crashed=crashed, detail=detail)


def _crash(row: dict[str, Any], detail: str) -> bool:
    """Mark the flow run Crashed when it is still the lost execution (Running or Paused, with
    the same run count); a run already handed back and executing again is left alone."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(UUID(str(row["flow_run_id"])))
            if flow_run.state_type not in {StateType.RUNNING, StateType.PAUSED}:
                return False
            if flow_run.run_count != int(row["run_count"]):
                return False
            client.set_flow_run_state(
                flow_run.id, Crashed(message=f"executor lost: {detail}"[:2000]), force=True
            )
            return True
    except Exception as exc:  # noqa: BLE001 - Prefect away: the incident is escalated anyway
        log.warning("could not mark flow run %s crashed: %s", row.get("flow_run_id"), exc)
        return False


async def watch_leases(settings: Settings) -> None:
    """Every third of a lease, forever: notice lost runs (a receiver's and serve's loop)."""
    import asyncio

    interval = max(1.0, settings.run_lease_seconds / 3)
    store: Store | None = None
    while True:
        await asyncio.sleep(interval)
        try:
            store = store or Store.open(settings.remediation_database_url)
            await asyncio.to_thread(notice_lost_runs, settings, store)
        except StoreUnavailable:
            continue  # said by the receiver's own store checks; try again next round
        except Exception as exc:  # noqa: BLE001 - the loop outlives any one failure
            log.warning("checking run leases failed: %s", exc)
