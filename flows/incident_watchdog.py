"""The incident watchdog: no incident outlives its clock unnoticed (seed 000's escalation path).

A run escalates its own incident when the resolution target passes, even while it waits for an
approval. A run can die, though (its process killed while paused: PREFECT-NOTES.md), and then
nothing would. Every `WATCHDOG_INTERVAL_SECONDS` this flow reads the open incidents in the store
and escalates each one past its target that has not been escalated for it yet, with the same
checklist, messages and page as the run's own clock (one `target-missed` per incident, whoever
gets there first). First it writes to the store what runs kept on disk while it was unreachable
(`remediate/engine/journal.py`), so the incidents it reads are complete, and it notices the runs
whose
executor is gone (`remediate/engine/liveness.py`; every receiver does too, every few seconds).
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from remediate.domain.settings import load_settings
from remediate.engine import catalogue, lifecycle
from remediate.engine.comms import IncidentComms
from remediate.engine.journal import replay_spool
from remediate.engine.liveness import notice_lost_runs
from remediate.store.database import Store

__all__ = ["WatchdogReport", "incident_watchdog"]

FLOW = "incident-watchdog"


class WatchdogReport(BaseModel):
    open_incidents: int = 0
    replayed_entries: int = 0
    # Incidents it cannot handle (a runbook no longer in the catalogue), with the reason.
    skipped: list[str] = Field(default_factory=list)
    escalated: list[str] = Field(default_factory=list)
    lost_runs: list[str] = Field(default_factory=list)


@flow(name=FLOW, log_prints=True)
def incident_watchdog() -> WatchdogReport:
    """Escalate every open incident past its resolution target that nobody escalated yet."""
    settings = load_settings()
    store = Store.open(settings.remediation_database_url)
    report = WatchdogReport(replayed_entries=replay_spool(settings, store=store))
    # Runs whose executor is gone (their lease lapsed): escalated now, not at the target.
    report.lost_runs = [
        lost.incident_id or f"flow run {lost.flow_run_id}"
        for lost in notice_lost_runs(settings, store)
    ]
    now = store.now()
    for incident in store.incidents(open_only=True, limit=1000):
        report.open_incidents += 1
        if incident.runbook not in catalogue.CATALOGUE:  # one odd incident stops no other
            report.skipped.append(f"{incident.id}: unknown runbook {incident.runbook!r}")
            continue
        targets = lifecycle.targets_for(incident.runbook, incident.severity, settings)
        if now < incident.opened_at + targets.resolution:
            continue
        if any(e.kind == "target-missed" for e in store.timeline(incident.id)):
            continue
        comms = IncidentComms.for_incident(incident, settings=settings, store=store)
        comms.target_missed()
        comms.flush()
        report.escalated.append(incident.id)
    print(
        f"incident watchdog: {report.open_incidents} open incident(s),"
        f" {len(report.escalated)} escalated now, {len(report.lost_runs)} lost run(s),"
        f" {report.replayed_entries} spooled timeline"
        " entries written" + "".join(f"; skipped {line}" for line in report.skipped)
    )
    return report
