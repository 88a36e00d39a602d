"""Disk almost full on the database volume (P2): WAL kept by a replication slot nobody reads
(a replica or a CDC job went away, its slot stayed). Detect: inactive slots keeping more WAL than
`max_retained_mb`. Remediate (approval): drop them, each only while still inactive; the server
recycles the WAL at its next checkpoint. Verify: no inactive slot over the limit."""

from __future__ import annotations

from psycopg import sql

from remediate.domain.models import ActionResult, Diagnosis, Finding, Plan, PlannedAction
from remediate.engine import targets
from remediate.engine.runbook import Detection, Runbook, RunbookParameters
from remediate.tasks.postgres import PgTarget

SLOTS = """SELECT slot_name, slot_type, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
  FROM pg_replication_slots WHERE NOT active AND restart_lsn IS NOT NULL ORDER BY slot_name"""
# Dropped only while still inactive: a consumer that came back keeps its slot.
DROP = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
DROP += " WHERE slot_name = {} AND NOT active"


class DiskAlmostFull(Runbook):
    """WAL kept by inactive replication slots → drop them (approval)."""

    id = "disk-almost-full"
    seed = "example"
    severity = "P2"
    component = "Postgres volume"
    summary = "inactive replication slots keep WAL until the volume fills: drop them"
    resolution_minutes = 60
    eta = "1 hour"
    impact = "writes fail once the database volume is full"
    prevention = "set max_slot_wal_keep_size; alert on pg_replication_slots' retained WAL"

    class Parameters(RunbookParameters):
        database: str | None = None
        max_retained_mb: int = 1024
        slot_prefix: str = ""  # only slots whose name starts with it

    params: Parameters

    def target(self) -> PgTarget:
        return targets.pg_target(self.settings, database=self.params.database)

    def over_limit(self) -> dict[str, tuple[str, int]]:
        """{slot: (type, retained bytes)} of the inactive slots over the limit."""
        with self.target().connect() as conn:
            rows = conn.execute(SLOTS).fetchall()
        limit = self.params.max_retained_mb * 2**20
        return {
            name: (kind, size)
            for name, kind, size in rows
            if size > limit and name.startswith(self.params.slot_prefix)
        }

    def detect(self) -> Detection:
        self.resource = self.target().resource
        over = self.over_limit()
        findings = [
            Finding(check="slot-wal", ok=False, detail=f"{k} slot {n} keeps {s >> 20} MB of WAL")
            for n, (k, s) in over.items()
        ] or [Finding(check="slot-wal", ok=True, detail="no inactive slot over the limit")]
        return Detection(resource=self.resource, findings=findings, facts={"slots": over})

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        return self.drop(list(detection.facts["slots"]))

    def drop(self, slots: list[str]) -> Plan:
        """The statements shown to the approver are the ones `act` runs."""
        action = PlannedAction(
            name="drop-replication-slots",
            destructive=True,
            resource=self.resource,
            description="Drop the slots: their consumer must start again from a new base backup",
            targets=slots,
            statements=[sql.SQL(DROP).format(sql.Literal(s)).as_string() for s in slots],
        )
        summary = f"drop {len(slots)} inactive replication slot(s)"
        return Plan(runbook=self.id, resource=self.resource, summary=summary, actions=[action])

    def recheck(self, plan: Plan) -> Plan:  # after the approval: only the slots still over it
        return self.drop([s for s in plan.actions[0].targets if s in self.over_limit()])

    def act(self, plan: Plan) -> list[ActionResult]:
        """Runs the approved plan's statements, as shown."""
        action = plan.actions[0]
        with self.target().connect() as conn:
            pairs = zip(action.targets, action.statements, strict=True)
            done = [slot for slot, statement in pairs if conn.execute(statement).rowcount]
        result = ActionResult(name=action.name, destructive=True, executed=True, targets=done)
        return [result]

    def verify(self) -> list[Finding]:
        over = self.over_limit()
        detail = ", ".join(over) + " still over the limit" if over else "no inactive slot over it"
        return [Finding(check="slot-wal-after", ok=not over, detail=detail)]
