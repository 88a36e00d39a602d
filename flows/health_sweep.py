"""Seeds 000 and 002, "Monitoring": every runbook's detector, read-only, on a schedule.

Each runbook is run in detect-only mode (`remediate.engine.incident.detect_only`): its own
detection code up to
the point where it would open an incident, so the sweep and the runbook can never disagree about
what is broken. Checks run concurrently (bounded by SWEEP_CONCURRENCY, and by
SWEEP_CONNECTIONS_PER_SERVER on the database server) across every configured target: the database
runbooks on TARGET_DATABASE_URL's database and each of SWEEP_DATABASES.
While checks pass, runbooks record their known-good snapshots (policies, key fingerprints). Each
finding starts the matching runbook's deployment through the receiver's deduplication, so an
incident already running (from an alert) is not started twice.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Literal
from urllib.parse import urlsplit

from prefect import flow
from pydantic import BaseModel, Field

from remediate.domain.models import Alert, Finding
from remediate.domain.settings import ConfigError, Settings, load_settings, settings_read_once
from remediate.engine import catalogue
from remediate.engine.incident import Detected, detect_only
from remediate.store.database import Store, StoreUnavailable, one_store
from remediate.tasks.steps import plain_calls

__all__ = ["Check", "SweepReport", "check", "health_sweep", "run_checks", "sweep_targets"]

FLOW = "health-sweep"


class Check(BaseModel):
    runbook: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    status: Literal["healthy", "finding", "skipped", "error"]
    detail: str = ""
    findings: list[Finding] = Field(default_factory=list)
    flow_run_id: str | None = None
    started: bool = False


class SweepReport(BaseModel):
    checks: list[Check] = Field(default_factory=list)

    @property
    def findings(self) -> list[Check]:
        return [c for c in self.checks if c.status in {"finding", "error"}]

    @property
    def exit_code(self) -> int:
        return 1 if self.findings else 0

    def to_markdown(self) -> str:
        lines = ["| runbook | target | status | detail |", "|---|---|---|---|"]
        for c in self.checks:
            target = c.parameters.get("database", "default")
            run = f" (run {c.flow_run_id})" if c.flow_run_id else ""
            detail = c.detail.replace("|", "/")[:200]
            lines.append(f"| {c.runbook} | {target} | {c.status} | {detail}{run} |")
        return "\n".join(lines) + "\n"


def _takes_database(runbook: catalogue.Runbook) -> bool:
    return "database" in inspect.signature(runbook.load_flow().fn).parameters


def sweep_targets(
    settings: Settings,
    *,
    runbooks: list[str] | None,
    databases: list[str],
    parameters: dict[str, dict[str, Any]] | None = None,
) -> list[tuple[catalogue.Runbook, dict[str, Any]]]:
    """(runbook, parameters) for each check: one per runbook, and one per extra database for the
    runbooks that take a `database`; `parameters` adds a runbook's own (thresholds, patterns)."""
    chosen = [catalogue.get(r) for r in runbooks] if runbooks else catalogue.CATALOGUE.values()
    extra = list(dict.fromkeys([*settings.sweep_databases, *databases]))
    targets: list[tuple[catalogue.Runbook, dict[str, Any]]] = []
    for runbook in chosen:
        own = dict((parameters or {}).get(runbook.id, {}))
        targets.append((runbook, own))
        if _takes_database(runbook):
            targets += [(runbook, {**own, "database": name}) for name in extra]
    return targets


def check(runbook_id: str, parameters: dict[str, Any]) -> Check:
    """One runbook's detector on one target; read-only. Runs inside `run_checks`' scopes: the
    sweep's settings, steps as plain calls."""
    runbook = catalogue.get(runbook_id)
    settings = load_settings()
    try:
        reason = runbook.sweep_skip(settings)  # a runbook with nothing to watch here says why
        # A runbook whose detector is its own preflight (it connects first) says so: the sweep
        # then spends no connection on the preflight's.
        if reason is None and runbook.sweep_preflight:
            runbook.preflight(settings, parameters)
    except ConfigError as exc:
        reason = str(exc)
    if reason is not None:
        return Check(runbook=runbook_id, parameters=parameters, status="skipped", detail=reason)
    try:
        with detect_only():
            outcome = runbook.load_flow().fn(**parameters, requested_by="health-sweep")
    except StoreUnavailable as exc:  # the product's own store, not the target: an error
        return Check(runbook=runbook_id, parameters=parameters, status="error", detail=str(exc))
    except ConfigError as exc:  # what a preflight says: a setting missing, the target unreachable
        return Check(runbook=runbook_id, parameters=parameters, status="skipped", detail=str(exc))
    except Detected as found:
        return Check(
            runbook=runbook_id,
            parameters=parameters,
            status="finding",
            detail=str(found),
            findings=found.findings,
        )
    except Exception as exc:  # noqa: BLE001 - one broken check must not end the sweep
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Check(
            runbook=runbook_id,
            parameters=parameters,
            status="error",
            detail=f"{type(exc).__name__}: {first}"[:500],
        )
    # A detector that could not judge (its probe does not fit the app) is no "healthy".
    status = "healthy" if outcome.status == "healthy" else "error"
    return Check(
        runbook=runbook_id, parameters=parameters, status=status, detail=outcome.summary[:500]
    )


def database_server(settings: Settings) -> str | None:
    """host:port of TARGET_DATABASE_URL, where every database the sweep checks lives."""
    if settings.target_database_url is None:
        return None
    parts = urlsplit(settings.target_database_url.get_secret_value())
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def run_checks(
    targets: list[tuple[catalogue.Runbook, dict[str, Any]]], settings: Settings
) -> list[Check]:
    """Every check, `SWEEP_CONCURRENCY` at a time, in order. The database runbooks' checks hold
    one of `SWEEP_CONNECTIONS_PER_SERVER` slots of their server while they run (each holds at
    most one connection to it at a time), so a sweep over hundreds of databases never opens more
    than that many connections to one server. Settings are read once, the incident store is one
    connection; a probe is a plain call, not a Prefect task run of its own
    (`remediate.tasks.steps`): the
    sweep's artifact is its record."""
    server = threading.BoundedSemaphore(settings.sweep_connections_per_server)
    on_server = database_server(settings) is not None

    def one(runbook: catalogue.Runbook, parameters: dict[str, Any]) -> Check:
        if not (on_server and _takes_database(runbook)):
            return check(runbook.id, parameters)
        with server:
            return check(runbook.id, parameters)

    with ExitStack() as scopes:
        scopes.enter_context(settings_read_once(settings))
        scopes.enter_context(plain_calls())
        try:  # one store connection for every check that reads or saves a snapshot
            Store.open(settings.remediation_database_url)  # the schema
            store = Store(settings.remediation_database_url, fail_fast_seconds=30)
        except StoreUnavailable:
            store = None  # each check meets the outage itself and reports it
        if store is not None:
            scopes.callback(store.close)
            scopes.enter_context(one_store(store))
        pool = scopes.enter_context(
            ThreadPoolExecutor(settings.sweep_concurrency, thread_name_prefix="sweep")
        )
        futures = [
            pool.submit(contextvars.copy_context().run, one, runbook, parameters)
            for runbook, parameters in targets
        ]
        return [future.result() for future in futures]


def _start_runs(report: SweepReport, settings: Settings) -> None:
    """Start the runbook for each finding, through the receiver's deduplication."""
    from remediate.intake.dispatch import Dispatcher, Rejected
    from remediate.intake.routing import Routed

    dispatcher = Dispatcher(settings)
    try:
        for check in report.checks:
            if check.status != "finding":
                continue
            alert = Alert(
                source="sweep",
                status="firing",
                name=check.runbook,
                fingerprint=f"sweep:{check.runbook}:{sorted(check.parameters.items())}",
                summary=check.detail,
                runbook=check.runbook,
            )
            routed = Routed(runbook=check.runbook, parameters=check.parameters, rule="sweep")
            try:
                run_id = dispatcher.start(alert, routed)
            except Rejected as exc:
                check.detail += f"; run not started: {exc}"
                continue
            check.flow_run_id = run_id.removeprefix("dup:") if run_id else None
            check.started = run_id is not None and not run_id.startswith("dup:")
    finally:
        dispatcher.close()


@flow(name=FLOW, log_prints=True)
def health_sweep(
    *,
    runbooks: list[str] | None = None,
    databases: list[str] | None = None,
    parameters: dict[str, dict[str, Any]] | None = None,
    start_runs: bool = True,
) -> SweepReport:
    """Every runbook's detector, read-only and concurrently; start the runbook for each finding.

    `runbooks`: only these (default: all); `databases`: more targets for the database runbooks
    (besides SWEEP_DATABASES); `parameters`: per runbook id, parameters for its detector and run.
    """
    settings = load_settings()
    unknown = set(parameters or {}) - set(catalogue.CATALOGUE)
    if unknown:
        raise ConfigError(f"parameters: unknown runbook {', '.join(sorted(unknown))}")
    targets = sweep_targets(
        settings, runbooks=runbooks, databases=databases or [], parameters=parameters
    )
    report = SweepReport(checks=run_checks(targets, settings))
    if start_runs:
        _start_runs(report, settings)
    found = report.findings
    print(
        f"health sweep: {len(report.checks)} check(s), {len(found)} finding(s)"
        + "".join(f"\n  {c.runbook} {c.parameters or ''}: {c.detail}" for c in found)
    )
    _publish(report)
    _heartbeat(report, settings)
    return report


def _heartbeat(report: SweepReport, settings: Settings) -> None:
    """Leave this sweep's time in the incident store: the receiver's `/metrics` exports it
    (`remediate_sweep_last_run_timestamp_seconds`), so a sweep that stops running is seen."""
    from remediate.intake.dispatch import SWEEP_SNAPSHOT

    data = {
        "finished_at": time.time(),
        "checks": len(report.checks),
        "findings": len(report.findings),
    }
    try:
        store = Store.open(settings.remediation_database_url)
        try:
            store.replace_snapshot(*SWEEP_SNAPSHOT, data)
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - the sweep's own result stands without it
        print(f"could not record the sweep in the incident store: {type(exc).__name__}")


def _publish(report: SweepReport) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key="health-sweep", markdown=report.to_markdown())
    except Exception as exc:  # noqa: BLE001 - an artifact is a convenience
        print(f"could not publish the sweep artifact: {type(exc).__name__}")
