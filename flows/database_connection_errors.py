"""Seed 000, "Database Connection Errors" (P1): the backend cannot connect to PostgreSQL.

Detect: a connection and `SELECT 1` to the target fail. Diagnose: the database container's state,
exit code and log tail (`DATABASE_SERVICE` of `COMPOSE_PROJECT_NAME`), the app's connection
settings (host, port, database, user: never the password). Remediate (approval): restart the
stopped database container. Verify: a connection and a test query succeed; the migration state
(`alembic current`) is readable when `ALEMBIC_CONFIG` is set.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from remediate.domain.models import Diagnosis, Finding, Plan, PlannedAction
from remediate.engine import targets
from remediate.engine.actions import RestartsOneService
from remediate.engine.runbook import Detection, Escalate, RunbookParameters
from remediate.tasks import containers, postgres
from remediate.tasks.containers import ComposeService, ContainerInfo
from remediate.tasks.postgres import PgTarget

RUNBOOK = "database-connection-errors"
RESTART = "restart-database-container"
PREVENTION = (
    "give the db service a restart policy and a health check the backend waits on"
    " (depends_on: condition: service_healthy); alert on the container's exit"
)


# Pure decisions.


def connection_settings(target: PgTarget) -> str:
    """What the app connects to, without the password."""
    parts = urlsplit(target.url.get_secret_value())
    return (
        f"host {parts.hostname or 'localhost'}, port {parts.port or 5432},"
        f" database {target.database}, user {parts.username or '(default)'}"
    )


def container_findings(found: list[ContainerInfo], service: ComposeService) -> list[Finding]:
    if not found:
        return [
            Finding(
                check="database-container",
                ok=False,
                detail=f"no container for service {service.service} of project {service.project}",
            )
        ]
    return [
        Finding(
            check="database-container",
            ok=c.status == "running",
            detail=f"{c.name}: {c.status}"
            + (f", exit code {c.exit_code}" if c.status == "exited" else "")
            + (", killed for lack of memory" if c.oom_killed else "")
            + (f", health {c.health}" if c.health else ""),
        )
        for c in found
    ]


def causes_of(found: list[ContainerInfo] | None) -> list[str]:
    if found is None:
        return ["container-state-unknown"]
    if not found:
        return ["database-container-missing"]
    states = {c.status for c in found}
    if states & {"exited", "dead", "created"}:
        oom = any(c.oom_killed for c in found)
        return ["database-container-stopped"] + (["out-of-memory"] if oom else [])
    if "restarting" in states:
        return ["database-container-crash-loop"]
    return ["database-up-but-unreachable"]


def plan_restart(found: list[ContainerInfo], service: ComposeService, *, resource: str) -> Plan:
    stopped = [c for c in found if c.status in {"exited", "dead", "created"}]
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
        summary=f"start the stopped database container(s) of service {service.service}",
        actions=[
            PlannedAction(
                name=RESTART,
                destructive=True,
                resource=service.resource,
                description=f"Restart the database service `{service.service}` of project"
                f" `{service.project}` (seed 000: `docker compose restart db`). Its data"
                " stays on its volume; clients reconnect once it accepts connections.",
                targets=[f"container {c.name}" for c in stopped],
                details=[
                    f"container {c.name} ({c.id[:12]}): {c.status}, exit code {c.exit_code}"
                    for c in stopped
                ],
                params={"container_ids": [c.id for c in stopped]},
            )
        ],
    )


# The runbook.


class DatabaseConnectionErrors(RestartsOneService):
    """Seed 000: "could not connect to server" → restart the database container (approval)."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "the backend cannot reach its database: the application is down"
    prevention = PREVENTION

    class Parameters(RunbookParameters):
        database: str | None = None
        log_lines: int = 30
        start_timeout_seconds: float = 60
        stop_timeout_seconds: int = 30

    params: Parameters
    service: ComposeService | None = None
    found: list[ContainerInfo] | None = None

    def preflight(self) -> None:
        """Before a CLI run: the settings name a target (that it does not answer is the
        incident)."""
        self.settings.require_target_database()

    def detect(self) -> Detection:
        """Can the app's connection settings reach the database?"""
        self.target = targets.pg_target(self.settings, database=self.params.database)
        self.service = targets.compose_service(self.settings, self.settings.database_service)
        probe = postgres.probe_query(self.target, timeout_seconds=5)
        reach = Finding(
            check="database-reachable",
            ok=probe.ok,
            detail=f"SELECT 1 answered in {probe.latency_ms:.0f} ms"
            if probe.ok
            else f"{self.target.resource}: {probe.error}",
        )
        return Detection(resource=self.target.resource, findings=[reach])

    def diagnose(self, detection: Detection) -> Diagnosis:
        """The container, its logs, the connection settings."""
        service = self.service
        evidence = [
            Finding(check="connection-settings", ok=True, detail=connection_settings(self.target))
        ]
        if service is None:
            evidence.append(
                Finding(
                    check="database-container",
                    ok=False,
                    detail="DOCKER_HOST and COMPOSE_PROJECT_NAME are not set:"
                    " the container cannot be inspected",
                )
            )
        else:
            try:
                self.found = containers.find_service(service)
                evidence += container_findings(self.found, service)
                for c in self.found[:1]:
                    evidence += [
                        Finding(check="database-log", ok=True, detail=line)
                        for line in containers.container_logs(
                            service, container_id=c.id, tail=self.params.log_lines
                        )
                    ]
            except containers.EngineUnreachable as exc:
                evidence.append(Finding(check="database-container", ok=False, detail=str(exc)))
        return Diagnosis(causes=causes_of(self.found), evidence=evidence)

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """Restart only a stopped container; anything else is a person's to look at."""
        causes = diagnosis.causes
        if self.service is None or not self.found or "database-container-stopped" not in causes:
            reasons = {
                "database-up-but-unreachable": "the database container is running: check the"
                f" connection settings ({connection_settings(self.target)}) and the network",
                "database-container-crash-loop": "the database container keeps restarting: read"
                " its log (a restart will not fix it)",
                "database-container-missing": "the database service has no container",
            }
            raise Escalate("no automatic fix: " + "; ".join(reasons.get(c, c) for c in causes))
        return plan_restart(self.found, self.service, resource=self.target.resource)

    def recheck(self, plan: Plan) -> Plan:
        """Only the containers still stopped are started."""
        assert self.service is not None
        now = {c.id: c for c in containers.find_service(self.service)}
        action = plan.actions[0]
        still = [
            i
            for i in action.params["container_ids"]
            if i in now and now[i].status in {"exited", "dead", "created"}
        ]
        narrowed = action.model_copy(
            update={
                "targets": [f"container {now[i].name}" for i in still],
                "params": {"container_ids": still},
            }
        )
        return plan.model_copy(update={"actions": [narrowed]})

    def verify(self) -> list[Finding]:
        """A connection and a test query succeed; the migration state is readable when
        ALEMBIC_CONFIG is set."""
        after = postgres.wait_reachable(
            self.target, timeout_seconds=self.params.start_timeout_seconds
        )
        checks = [
            Finding(
                check="database-reachable-after",
                ok=after.ok,
                detail=f"SELECT 1 answered in {after.latency_ms:.0f} ms"
                if after.ok
                else after.error,
            )
        ]
        if after.ok and self.settings.alembic_config:
            from remediate.tasks import alembic

            state = alembic.read_schema_state(
                targets.alembic_target(self.settings, database=self.params.database)
            )
            checks.append(
                Finding(
                    check="alembic-current",
                    ok=True,
                    detail=f"at {', '.join(state.current or []) or 'no version'};"
                    f" head {', '.join(state.heads)}",
                )
            )
        return checks
