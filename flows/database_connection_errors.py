"""Seed 000, "Database Connection Errors" (P1): the backend cannot connect to PostgreSQL.

Detect: a connection and `SELECT 1` to the target fail. Diagnose: the database container's state,
exit code and log tail (`DATABASE_SERVICE` of `COMPOSE_PROJECT_NAME`), the app's connection
settings (host, port, database, user: never the password). Remediate (approval): restart the
stopped database container. Verify: a connection and a test query succeed; the migration state
(`alembic current`) is readable when `ALEMBIC_CONFIG` is set.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from remediate.domain.models import ActionResult, Diagnosis, Finding, Outcome, Plan, PlannedAction
from remediate.domain.settings import Settings, load_settings
from remediate.engine import targets
from remediate.engine.actions import restart_planned
from remediate.engine.incident import IncidentRun, runbook_flow
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


def preflight(settings: Settings, params: dict[str, Any]) -> None:
    """Before a CLI run: the settings name a target (that it does not answer is the incident)."""
    settings.require_target_database()


# The runbook.


@runbook_flow(RUNBOOK)
def database_connection_errors(
    *,
    database: str | None = None,
    log_lines: int = 30,
    start_timeout_seconds: float = 60,
    stop_timeout_seconds: int = 30,
    dry_run: bool = False,
    auto_approve: bool = False,
    requested_by: str | None = None,
) -> Outcome:
    """Seed 000: "could not connect to server" → restart the database container (approval)."""
    settings = load_settings()
    target = targets.pg_target(settings, database=database)
    service = targets.compose_service(settings, settings.database_service)

    # Detect: can the app's connection settings reach the database?
    probe = postgres.probe_query(target, timeout_seconds=5)
    reach = Finding(
        check="database-reachable",
        ok=probe.ok,
        detail=f"SELECT 1 answered in {probe.latency_ms:.0f} ms"
        if probe.ok
        else f"{target.resource}: {probe.error}",
    )
    if probe.ok:
        return IncidentRun.healthy(RUNBOOK, findings=[reach])
    run = IncidentRun.open(
        RUNBOOK,
        resource=target.resource,
        findings=[reach],
        settings=settings,
        requester=requested_by,
        impact="the backend cannot reach its database: the application is down",
    )

    # Diagnose: the container, its logs, the connection settings.
    evidence = [Finding(check="connection-settings", ok=True, detail=connection_settings(target))]
    found: list[ContainerInfo] | None = None
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
            found = containers.find_service(service)
            evidence += container_findings(found, service)
            for c in found[:1]:
                evidence += [
                    Finding(check="database-log", ok=True, detail=line)
                    for line in containers.container_logs(
                        service, container_id=c.id, tail=log_lines
                    )
                ]
        except containers.EngineUnreachable as exc:
            evidence.append(Finding(check="database-container", ok=False, detail=str(exc)))
    causes = causes_of(found)
    run.diagnosed(Diagnosis(causes=causes, evidence=evidence))

    if service is None or not found or "database-container-stopped" not in causes:
        reasons = {
            "database-up-but-unreachable": "the database container is running: check the"
            f" connection settings ({connection_settings(target)}) and the network",
            "database-container-crash-loop": "the database container keeps restarting: read its"
            " log (a restart will not fix it)",
            "database-container-missing": "the database service has no container",
        }
        return run.escalate("no automatic fix: " + "; ".join(reasons.get(c, c) for c in causes))

    plan = plan_restart(found, service, resource=target.resource)
    run.planned(plan)
    if dry_run:
        return run.dry_run(plan)

    def recheck(approved: Plan) -> Plan:
        assert service is not None
        now = {c.id: c for c in containers.find_service(service)}
        action = approved.actions[0]
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
        return approved.model_copy(update={"actions": [narrowed]})

    def act(current: Plan) -> list[ActionResult]:
        assert service is not None
        return [restart_planned(current.actions[0], service, stop_timeout=stop_timeout_seconds)]

    def verify() -> list[Finding]:
        after = postgres.wait_reachable(target, timeout_seconds=start_timeout_seconds)
        checks = [
            Finding(
                check="database-reachable-after",
                ok=after.ok,
                detail=f"SELECT 1 answered in {after.latency_ms:.0f} ms"
                if after.ok
                else after.error,
            )
        ]
        if after.ok and settings.alembic_config:
            from remediate.tasks import alembic

            state = alembic.read_schema_state(targets.alembic_target(settings, database=database))
            checks.append(
                Finding(
                    check="alembic-current",
                    ok=True,
                    detail=f"at {', '.join(state.current or []) or 'no version'};"
                    f" head {', '.join(state.heads)}",
                )
            )
        return checks

    return run.carry_out(
        plan,
        auto_approve=auto_approve,
        recheck=recheck,
        act=act,
        verify=verify,
        prevention=PREVENTION,
    )
