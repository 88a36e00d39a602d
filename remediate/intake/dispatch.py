"""From a normalised alert to a started run: route, deduplicate, start, record, count.

Shared by the HTTP receiver and the health sweep, so an incident found by either starts one run.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from remediate.domain.models import Alert, Status
from remediate.domain.settings import Settings
from remediate.engine import catalogue
from remediate.intake.dedup import Deduplicator
from remediate.intake.routing import Route, Routed, Router, load_router
from remediate.intake.starter import DeploymentStarter, Starter, StartFailed
from remediate.store.database import Store

__all__ = ["SWEEP_SNAPSHOT", "Accepted", "Dispatcher", "Metrics", "Rejected", "StoreGauges"]

log = logging.getLogger("remediate.receiver")
PENDING_WAIT_SECONDS = 2.0  # how long a duplicate waits for the id of a run being created
ENDED = frozenset({"CRASHED", "FAILED", "CANCELLED", "CANCELLING", "GONE"})
RUN_STATE_CACHE_SECONDS = 2.0  # a storm of duplicates reads a run's state once in this window
# Where each health sweep leaves its heartbeat in the store: (kind, resource) of a snapshot.
SWEEP_SNAPSHOT = ("sweep", "health-sweep")
# An incident's status in the store: `open` while its run works, then the run's outcome.
INCIDENT_STATUSES = ("open", *get_args(Status))


class Rejected(Exception):
    """A request the receiver refuses: its HTTP status, a metric reason, a one-line message."""

    def __init__(self, status: int, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.extra = extra


def configured_databases(settings: Settings) -> frozenset[str]:
    """The databases the operator configured: TARGET_DATABASE_URL's and SWEEP_DATABASES."""
    from urllib.parse import urlsplit

    names = set(settings.sweep_databases)
    if settings.target_database_url is not None:
        path = urlsplit(settings.target_database_url.get_secret_value()).path.lstrip("/")
        if path:
            names.add(path)
    return frozenset(names)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "remediate_alerts_received", "Alerts received, by source", ["source"], registry=r
        )
        self.rejected = Counter(
            "remediate_alerts_rejected", "Requests rejected, by reason", ["reason"], registry=r
        )
        self.deduplicated = Counter(
            "remediate_alerts_deduplicated", "Alerts of an incident already running", registry=r
        )
        self.unroutable = Counter(
            "remediate_alerts_unroutable", "Alerts no routing rule matched", registry=r
        )
        self.resolved = Counter("remediate_alerts_resolved", "Resolved alerts", registry=r)
        self.runs_started = Counter(
            "remediate_runs_started", "Runbook runs started, by runbook", ["runbook"], registry=r
        )
        self.degraded = Counter(
            "remediate_receiver_degraded",
            "Alerts handled without a dependency, by dependency",
            ["dependency"],
            registry=r,
        )
        self.approvals = Counter(
            "remediate_approval_links", "Approval link answers, by result", ["result"], registry=r
        )


class StoreGauges(Collector):
    """What only the incident store knows, read at scrape time: runs execute in other processes
    (the runner's subprocesses, other workers), so their outcomes and the sweep's heartbeat reach
    `/metrics` through the store that every process writes. Never raises: with the store down,
    `remediate_store_up` is 0 and the store's gauges are left out.

    It reads through a store connection of its own (never the one alerts are recorded on), at
    most once per CACHE_SECONDS, and a scrape that arrives while a read is still under way gets
    the last values instead of waiting: a slow store slows no alert and piles up no threads."""

    CACHE_SECONDS = 10.0

    def __init__(self, store: Store, *, sweep_interval_seconds: int) -> None:
        self.store = store
        self.sweep_interval_seconds = sweep_interval_seconds
        self._reading = threading.Lock()
        self._last: tuple[float, tuple[dict[tuple[str, str], int], float | None]] | None = None

    def _cached_read(self) -> tuple[dict[tuple[str, str], int], float | None]:
        last = self._last
        if last is not None and time.monotonic() - last[0] < self.CACHE_SECONDS:
            return last[1]
        if not self._reading.acquire(blocking=False):
            if last is None:
                raise TimeoutError("the first read of the store is still under way")
            return last[1]
        try:
            values = self._read()
            self._last = (time.monotonic(), values)
            return values
        finally:
            self._reading.release()

    def describe(self) -> list[Metric]:
        return []  # registering must not read the store

    def collect(self) -> list[Metric]:
        interval = GaugeMetricFamily(
            "remediate_sweep_interval_seconds",
            "SWEEP_INTERVAL_SECONDS: how often health-sweep is scheduled",
            value=self.sweep_interval_seconds,
        )
        up = GaugeMetricFamily("remediate_store_up", "1 when the incident store answered")
        try:
            counts, last = self._cached_read()
            counts = dict(counts)
        except Exception as exc:  # noqa: BLE001 - a scrape reports the store down, never fails
            log.warning("incident store unavailable to /metrics: %s", type(exc).__name__)
            up.add_metric([], 0)
            return [interval, up]
        up.add_metric([], 1)
        incidents = GaugeMetricFamily(
            "remediate_incidents",
            "Incidents in the store by runbook and status (escalated, failed and timed-out ones"
            " wait for a person)",
            labels=["runbook", "status"],
        )
        # Every runbook and status from the first scrape on, 0 until it happens: a rule comparing
        # with `offset` then sees the first escalation of a runbook too.
        for runbook in catalogue.CATALOGUE:
            for status in INCIDENT_STATUSES:
                counts.setdefault((runbook, status), 0)
        for (runbook, status), number in sorted(counts.items()):
            incidents.add_metric([runbook, status], number)
        families: list[Metric] = [interval, up, incidents]
        if last is not None:
            families.append(
                GaugeMetricFamily(
                    "remediate_sweep_last_run_timestamp_seconds",
                    "When the last health sweep finished (Unix time)",
                    value=last,
                )
            )
        return families

    def _read(self) -> tuple[dict[tuple[str, str], int], float | None]:
        counts = self.store.incident_counts()
        beat = self.store.latest_snapshot(*SWEEP_SNAPSHOT)
        finished = beat.get("finished_at") if beat else None
        return counts, float(finished) if isinstance(finished, int | float) else None


@dataclass
class Accepted:
    accepted: int = 0
    deduplicated: int = 0
    resolved: int = 0
    unroutable: int = 0
    flow_run_ids: list[str] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "deduplicated": self.deduplicated,
            "resolved": self.resolved,
            "unroutable": self.unroutable,
            "flow_run_ids": self.flow_run_ids,
        }


class Dispatcher:
    """Routing rules, deduplication, the starter, the store and the metrics, together."""

    def __init__(
        self,
        settings: Settings,
        *,
        starter: Starter | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        extra_routes: Sequence[Route] = (),
    ) -> None:
        self.settings = settings
        databases = configured_databases(settings)
        self.router: Router = load_router(settings.alert_routes_file, databases=databases)
        if extra_routes:  # checked like the file's, and matched before them
            self.router = Router([*extra_routes, *self.router.routes], databases=databases)
        self.store = store or Store.open(settings.remediation_database_url)
        self.dedup = Deduplicator(
            settings.remediation_redis_url,
            prefix=settings.remediation_redis_prefix,
            ttl_seconds=settings.alert_dedup_ttl_seconds,
        )
        self._starter = starter
        self.metrics = Metrics()
        self.metrics.registry.register(
            StoreGauges(
                Store(settings.remediation_database_url),  # a connection of its own
                sweep_interval_seconds=settings.sweep_interval_seconds,
            )
        )
        self.clock = clock
        self._run_states: dict[str, tuple[bool, float]] = {}

    @property
    def starter(self) -> Starter:
        if self._starter is None:
            self._starter = DeploymentStarter()
        return self._starter

    # Accepting alerts.

    def accept(self, alerts: list[Alert]) -> Accepted:
        result = Accepted()
        for alert in alerts:
            self.metrics.received.labels(alert.source).inc()
            routed = self.router.route(alert)
            if routed is not None and routed.refused is not None:
                self._record(alert, outcome="unroutable", routed=routed, detail=routed.refused)
                self.metrics.unroutable.inc()
                result.unroutable += 1
                log.warning(
                    "alert %s from %s refused: %s", alert.name, alert.source, routed.refused
                )
                continue
            if routed is None:
                self._record(alert, outcome="unroutable")
                self.metrics.unroutable.inc()
                result.unroutable += 1
                log.info("unroutable alert %s from %s recorded", alert.name, alert.source)
                continue
            if alert.status == "resolved":
                self._resolved(alert, routed)
                result.resolved += 1
                continue
            if result.accepted >= self.settings.alert_max_runs_per_request:
                raise Rejected(
                    503,
                    "over-run-limit",
                    f"this request would start more than {result.accepted} runs"
                    " (ALERT_MAX_RUNS_PER_REQUEST); those were started, retry for the rest",
                    flow_run_ids=result.flow_run_ids,
                )
            run_id = self.start(alert, routed)
            if run_id.startswith("dup:"):
                result.deduplicated += 1
                result.flow_run_ids.append(run_id.removeprefix("dup:"))
                continue
            result.accepted += 1
            result.flow_run_ids.append(run_id)
        return result

    def start(self, alert: Alert, routed: Routed) -> str:
        """Start the routed run unless its incident already runs: the new run's id, or `dup:ID`
        for a duplicate (503 `Rejected` when that run is still being created after a wait)."""
        key = routed.dedup_key
        claim = self.dedup.claim(key)
        replaced: str | None = None
        if not claim.new:
            # Another request is creating the run: wait for its id rather than acknowledge an
            # alert whose run may never come (its receiver killed mid-way); a 503 makes the
            # sender retry, by when the run exists or the claim is stale and taken over.
            run_id = claim.flow_run_id or self.dedup.wait_for_run(key, timeout=PENDING_WAIT_SECONDS)
            if run_id is None:
                self.metrics.deduplicated.inc()
                raise Rejected(
                    503,
                    "run-pending",
                    "the run of this incident is still being created elsewhere; retry",
                )
            # A run that ended without closing its incident swallows no alert: the next one
            # starts a new run (the ended one's claim is taken over by exactly one request).
            if not self._ended(run_id):
                self.metrics.deduplicated.inc()
                return f"dup:{run_id}"
            if not self.dedup.take_over(key, run_id):
                # Another request took the ended run's claim over first: its new run is ours.
                self.metrics.deduplicated.inc()
                newer = self.dedup.wait_for_run(key, timeout=PENDING_WAIT_SECONDS)
                if newer is None or newer == run_id:
                    raise Rejected(
                        503,
                        "run-pending",
                        "the next run of this incident is still being created; retry",
                    )
                return f"dup:{newer}"
            replaced = run_id
            log.info("the run %s of this incident ended; a new alert starts a new run", run_id)
        if claim.degraded:
            self.metrics.degraded.labels("redis").inc()
        # Redeliveries of one occurrence within one dedup window share an idempotency key, so
        # Prefect starts one run even without Redis; a new window may start a new run.
        window = int(self.clock() // self.settings.alert_dedup_ttl_seconds)
        occurrence = f"{alert.starts_at or ''}|{window}|{replaced or ''}"
        idempotency_key = f"alert:{key}:{hashlib.sha256(occurrence.encode()).hexdigest()[:16]}"
        parameters = {**routed.parameters, "requested_by": f"alert:{alert.source}"}
        try:
            run_id = self.starter.start(
                routed.runbook,
                parameters=parameters,
                idempotency_key=idempotency_key,
                tags=["alert", f"source:{alert.source}"],
            )
        except StartFailed as exc:
            self.dedup.release(key)
            self._record(alert, outcome="start-failed", routed=routed, detail=str(exc))
            raise Rejected(503, "prefect-unavailable", str(exc)) from None
        self.dedup.remember(key, run_id)
        self.metrics.runs_started.labels(routed.runbook).inc()
        self._record(alert, outcome="started", routed=routed, flow_run_id=run_id)
        return run_id

    def _ended(self, run_id: str) -> bool:
        """Whether the run an incident's claim names has ended with the incident not closed."""
        now = time.monotonic()
        cached = self._run_states.get(run_id)
        if cached is not None and now - cached[1] < RUN_STATE_CACHE_SECONDS:
            return cached[0]
        state = getattr(self.starter, "run_state", lambda _: None)(run_id)
        ended = state in ENDED
        if state == "COMPLETED":
            incident = self.store_call(lambda: self.store.incident_for_flow_run(run_id))
            ended = incident is not None and incident.closed_at is None
        if len(self._run_states) > 10_000:
            self._run_states.clear()
        self._run_states[run_id] = (ended, now)
        return ended

    def _resolved(self, alert: Alert, routed: Routed) -> None:
        key = routed.dedup_key
        run_id = self.store_call(lambda: self.store.run_for_alert(key))
        self.dedup.release(key)  # a later firing is a new incident
        self.metrics.resolved.inc()
        self._record(alert, outcome="resolved", routed=routed, flow_run_id=run_id)
        if run_id is None:
            return
        incident = self.store_call(lambda: self.store.incident_for_flow_run(run_id))
        if incident is not None:
            self.store_call(
                lambda: self.store.record(
                    incident.id,
                    "alert-resolved",
                    actor=f"alert:{alert.source}",
                    detail=f"{alert.name}: the source reports it resolved",
                    data={"fingerprint": alert.fingerprint},
                )
            )

    def _record(
        self,
        alert: Alert,
        *,
        outcome: str,
        routed: Routed | None = None,
        flow_run_id: str | None = None,
        detail: str = "",
    ) -> None:
        self.store_call(
            lambda: self.store.record_alert(
                source=alert.source,
                status=alert.status,
                name=alert.name[:256],
                fingerprint=alert.fingerprint[:256],
                outcome=outcome,
                dedup_key=routed.dedup_key if routed else None,
                runbook=routed.runbook if routed else None,
                flow_run_id=flow_run_id,
                data={
                    "labels": alert.labels,
                    "summary": alert.summary[:1000],
                    "rule": routed.rule if routed else None,
                    "parameters": routed.parameters if routed else None,
                    "detail": detail,
                },
            )
        )

    def store_call(self, call: Callable[[], Any]) -> Any:
        """A store write or read that must not turn an accepted alert into an error."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the store down degrades recording only
            self.metrics.degraded.labels("store").inc()
            log.warning("incident store unavailable to the receiver: %s", type(exc).__name__)
            return None

    def close(self) -> None:
        self.dedup.close()
        closer = getattr(self._starter, "close", None)
        if closer is not None:
            closer()
