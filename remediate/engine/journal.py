"""A run's record survives an incident-store outage: what cannot be written is kept on disk.

A run writes its incident, timeline, status and post-mortem through a `JournaledStore`. When the
store does not answer, each write becomes a line of `<spool>/<incident id>.jsonl` (mode 0600, the
same content the store would hold, with the time it happened), and reads of the run's own
incident come from what the run wrote. The next write that reaches the store first replays the
file, so the timeline stays in order; what is still spooled when the run ends is replayed by the
incident watchdog, `remediate serve` and `remediate incidents`, whichever runs first with the
store back.

What the store guards is not journaled: the kill switch, the action budget and the resource lock
raise `StoreUnavailable`, and `IncidentRun` then changes nothing (fail closed).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from pydantic import SecretStr

from remediate.domain.models import Incident, Severity, TimelineEvent
from remediate.domain.settings import Settings
from remediate.store.database import Store, StoreUnavailable

__all__ = ["JournaledStore", "replay_spool", "spool_dir"]

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_FILE = ".lock"
RETRY_SECONDS = 5.0  # after a failure, writes go straight to the spool for this long


def spool_dir(settings: Settings) -> Path:
    """`REMEDIATION_SPOOL_DIR`, else `spool/` in the product's state folder (`REMEDIATE_HOME`)."""
    if settings.remediation_spool_dir is not None:
        return settings.remediation_spool_dir
    from remediate.engine.prefect_api import STATE_DIR

    return STATE_DIR / "spool"


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One writer or replayer at a time in the spool, across processes."""
    from remediate.engine.prefect_api import private_dir

    private_dir(directory)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a crash mid-write: the rest still counts
            log.warning("skipped a torn line in %s", path)
    return entries


UNPLAYABLE = "unplayable"


def _replay_file(store: Store, path: Path) -> int:
    """Write one incident's spooled entries (one transaction); 0 when the store refuses them.

    A file the store cannot take (its incident is not in this store: the store was replaced or
    restored from an older backup; an entry this version cannot read) would fail every replay for
    ever and stop the watchdog: it is moved to `unplayable/` in the spool, kept for a person, and
    named in a warning. An unreachable store raises `StoreUnavailable` (the file stays)."""
    entries = _read(path)
    try:
        if entries:
            store.apply_journal(entries)
    except StoreUnavailable:
        raise
    except (psycopg.IntegrityError, psycopg.DataError, KeyError, TypeError, ValueError) as exc:
        # Only what this store will never take: other errors (a read-only failover, missing
        # privileges, a schema being recreated) leave the file for the next replay.
        aside = path.parent / UNPLAYABLE
        aside.mkdir(mode=0o700, exist_ok=True)
        kept = aside / f"{path.stem}.{time.time_ns()}.jsonl"  # never over an earlier one
        path.replace(kept)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning(
            "the store refused %d spooled entries of incident %s (%s); kept in %s",
            len(entries),
            path.stem,
            first,
            kept,
        )
        return 0
    path.unlink()
    return len(entries)


def replay_spool(settings: Settings, *, store: Store | None = None) -> int:
    """Write every spooled entry to the store (raises `StoreUnavailable` if it is still down).
    Returns how many entries were replayed."""
    directory = spool_dir(settings)
    if not directory.is_dir() or not any(directory.glob("*.jsonl")):
        return 0
    store = store or Store.open(settings.remediation_database_url)
    replayed = 0
    with _locked(directory):
        for path in sorted(directory.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
            replayed += _replay_file(store, path)
    if replayed:
        log.warning("replayed %d timeline entries kept while the store was down", replayed)
    return replayed


def _now() -> datetime:
    return datetime.now(UTC)


class JournaledStore(Store):
    """A `Store` whose incident writes outlive an outage (see the module's docstring)."""

    def __init__(self, url: SecretStr, *, spool: Path) -> None:
        super().__init__(url)
        self.spool = spool
        self.spooled = 0  # entries written to the spool by this handle, not yet replayed
        self._ready = False
        self._incidents: dict[str, Incident] = {}
        self._events: dict[str, list[TimelineEvent]] = {}
        self._postmortems: dict[str, str] = {}
        self._retry_at = 0.0  # monotonic time before which the store is not tried again

    @classmethod
    def for_run(cls, settings: Settings) -> JournaledStore:
        """The store of one run; usable with the store down (its schema is checked once back)."""
        store = cls(settings.remediation_database_url, spool=spool_dir(settings))
        try:
            Store.open(settings.remediation_database_url)
            store._ready = True
        except StoreUnavailable as exc:
            store._down()
            log.warning("%s; the run's record is kept in %s until it is back", exc, store.spool)
        return store

    # The journal.

    def _file(self, incident_id: str) -> Path:
        return self.spool / f"{uuid.UUID(incident_id)}.jsonl"  # a UUID: never a path trick

    def _spool(self, incident_id: str, entry: dict[str, Any]) -> None:
        with _locked(self.spool):
            fd = os.open(self._file(incident_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(json.dumps(entry, default=str) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        self.spooled += 1

    def _down(self) -> None:
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _reachable(self) -> bool:
        """Whether to try the store now: nothing spooled is left behind, and no recent failure
        (an unreachable host costs a connect timeout per try)."""
        return self.flush() and time.monotonic() >= self._retry_at

    def flush(self) -> bool:
        """Replay this handle's spooled entries; True when nothing is left spooled."""
        with self._lock:
            if not self.spooled:
                return True
            if time.monotonic() < self._retry_at:
                return False
            try:
                if not self._ready:
                    Store.open(self._url)
                    self._ready = True
                with _locked(self.spool):
                    for incident_id in {*self._incidents, *self._events}:
                        path = self._file(incident_id)
                        if path.exists():
                            _replay_file(self, path)
            except StoreUnavailable:
                self._down()
                return False
            log.warning("the incident store is back: %d kept entries written", self.spooled)
            self.spooled = 0
            return True

    def _write(
        self, incident_id: str, entry: dict[str, Any], write: Callable[[], T], fallback: T
    ) -> T:
        """`write()` to the store, in order after anything spooled; else spool `entry`."""
        entry = {**entry, "incident_id": incident_id, "at": _now().isoformat()}
        with self._lock:  # the notifier's threads write too
            if self._reachable():
                try:
                    return write()
                except StoreUnavailable as exc:
                    self._down()
                    log.warning("%s; kept in the spool: %s", exc, entry["op"])
            self._spool(incident_id, entry)
            return fallback

    def _mirror(self, incident_id: str, kind: str, **fields: Any) -> None:
        self._events.setdefault(incident_id, []).append(
            TimelineEvent(at=_now(), kind=kind, **fields)
        )

    # Writes.

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
        local = Incident(
            id=str(uuid.uuid4()),
            runbook=runbook,
            severity=severity,
            status="open",
            resource=resource,
            title=title,
            flow_run_id=flow_run_id,
            requested_by=requested_by,
            opened_at=_now(),
        )
        self._incidents[local.id] = local
        incident = self._write(
            local.id,
            {"op": "open", "incident": local.model_dump(mode="json")},
            lambda: super(JournaledStore, self).open_incident(
                runbook=runbook,
                severity=severity,
                resource=resource,
                title=title,
                flow_run_id=flow_run_id,
                requested_by=requested_by,
            ),
            local,
        )
        self._incidents.pop(local.id)
        self._incidents[incident.id] = incident
        return incident

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
        self._mirror(incident_id, kind, actor=actor, detail=detail, data=data or {})
        entry = {
            "op": "event",
            "kind": kind,
            "actor": actor,
            "resource": resource,
            "detail": detail,
            "data": data or {},
        }
        self._write(
            incident_id,
            entry,
            lambda: super(JournaledStore, self).record(
                incident_id, kind, actor=actor, resource=resource, detail=detail, data=data
            ),
            None,
        )

    def record_once(self, incident_id: str, kind: str, *, detail: str = "") -> bool:
        if any(e.kind == kind for e in self._events.get(incident_id, [])):
            return False
        first = self._write(
            incident_id,
            {"op": "once", "kind": kind, "detail": detail},
            lambda: super(JournaledStore, self).record_once(incident_id, kind, detail=detail),
            True,
        )
        if first:
            self._mirror(incident_id, kind, detail=detail)
        return first

    def _set_status(self, incident_id: str, status: str, *, close: bool) -> None:
        known = self._incidents.get(incident_id)
        if known is not None:
            update: dict[str, Any] = {"status": status}
            if close:
                update["closed_at"] = _now()
            self._incidents[incident_id] = known.model_copy(update=update)
        write = super().close_incident if close else super().set_incident_status
        self._write(
            incident_id,
            {"op": "status", "status": status, "close": close},
            lambda: write(incident_id, status=status),
            None,
        )

    def close_incident(self, incident_id: str, *, status: str) -> None:
        self._set_status(incident_id, status, close=True)

    def set_incident_status(self, incident_id: str, *, status: str) -> None:
        self._set_status(incident_id, status, close=False)

    def set_incident_severity(self, incident_id: str, *, severity: Severity) -> None:
        known = self._incidents.get(incident_id)
        if known is not None:
            self._incidents[incident_id] = known.model_copy(update={"severity": severity})
        self._write(
            incident_id,
            {"op": "severity", "severity": severity},
            lambda: super(JournaledStore, self).set_incident_severity(
                incident_id, severity=severity
            ),
            None,
        )

    def save_postmortem(self, incident_id: str, markdown: str) -> None:
        self._postmortems[incident_id] = markdown
        self._write(
            incident_id,
            {"op": "postmortem", "markdown": markdown},
            lambda: super(JournaledStore, self).save_postmortem(incident_id, markdown),
            None,
        )

    # Reads of the run's own incident, from what it wrote when the store cannot answer.

    def incident(self, incident_id: str) -> Incident | None:
        try:
            if self._reachable():
                return super().incident(incident_id)
        except StoreUnavailable:
            self._down()
        return self._incidents.get(incident_id)

    def timeline(self, incident_id: str) -> list[TimelineEvent]:
        try:
            if self._reachable():
                return super().timeline(incident_id)
        except StoreUnavailable:
            self._down()
        return list(self._events.get(incident_id, []))

    def postmortem(self, incident_id: str) -> str | None:
        try:
            if self._reachable():
                return super().postmortem(incident_id)
        except StoreUnavailable:
            self._down()
        return self._postmortems.get(incident_id)

    def now(self) -> datetime:
        try:
            if self._reachable():
                return super().now()
        except StoreUnavailable:
            self._down()
        return _now()
