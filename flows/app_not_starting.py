"""Seed 000, "Application Not Starting" (P1): compose services exit or crash at start.

Detect: services of `COMPOSE_PROJECT_NAME` that are exited, restarting or unhealthy.
Diagnose: states, exit codes and log tails of every service; the required variables of the app's
container (the FastAPI template's required settings and its database settings, `DATABASE_URL`
or the older `POSTGRES_*`: presence and length only, never a value); the
database reachable; host ports taken by something else. Remediate (approval): restart the stopped
services, only when the cause is not configuration: a missing variable or a taken port is
escalated with the diagnosis, because a restart cannot fix it. Verify: every service running
through a settle period.
"""

from __future__ import annotations

import socket
import time

from remediate.domain.errors import ConfigError
from remediate.domain.models import ActionResult, Diagnosis, Finding, Plan, PlannedAction
from remediate.engine import targets
from remediate.engine.incident import step_refusal
from remediate.engine.runbook import Detection, Escalate, Runbook, RunbookParameters
from remediate.tasks import containers, postgres
from remediate.tasks.containers import ComposeService, ServiceContainer

RUNBOOK = "app-not-starting"
RESTART = "restart-services"
# What the FastAPI full-stack template's settings refuse to start without (its core/config.py
# and compose.yml): the variables, and the database as the current `DATABASE_URL` or, in apps
# built on an older template, `POSTGRES_SERVER`/`POSTGRES_USER`/`POSTGRES_DB` (`DOMAIN` only
# feeds the proxy's labels, and has defaults).
REQUIRED = ["SECRET_KEY", "PROJECT_NAME", "FIRST_SUPERUSER", "FIRST_SUPERUSER_PASSWORD"]
DATABASE_ALTERNATIVES = [["DATABASE_URL"], ["POSTGRES_SERVER", "POSTGRES_USER", "POSTGRES_DB"]]
DOWN = {"exited", "dead", "created", "restarting"}
PREVENTION = (
    "validate settings at start-up with a clear message (pydantic-settings); keep .env complete"
    " against .env.example in CI; restart policies and health checks for every service"
)


# Pure decisions.


def variable_findings(
    env: dict[str, int],
    required: list[str],
    alternatives: list[list[str]] | None = None,
) -> list[Finding]:
    """`env`: variable name -> length of its value. Presence and length only. `alternatives`:
    groups of names of which one whole group must be set (the database settings)."""
    found = [
        Finding(
            check="variable",
            ok=env.get(name, 0) > 0,
            detail=f"{name}: set ({env[name]} characters)"
            if env.get(name)
            else f"{name}: missing or empty",
        )
        for name in required
    ]
    if alternatives:
        chosen = next((g for g in alternatives if all(env.get(n, 0) > 0 for n in g)), None)
        found.append(
            Finding(
                check="variable",
                ok=chosen is not None,
                detail=f"database: {', '.join(chosen)} set"
                if chosen
                else "database: missing or empty: "
                + " or ".join("/".join(group) for group in alternatives),
            )
        )
    return found


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host if host not in {"", "0.0.0.0"} else "127.0.0.1", port)) == 0


def causes_of(
    down: list[ServiceContainer],
    variables: list[Finding],
    taken: list[str],
    database_ok: bool | None,
) -> list[str]:
    causes = []
    if any(not v.ok for v in variables):
        causes.append("missing-variable")
    if taken:
        causes.append("port-taken")
    if database_ok is False:
        causes.append("database-unreachable")
    if down and not causes:
        causes.append("crashed")
    return causes


def plan_restart(down: list[ServiceContainer], *, project: str, resource: str) -> Plan:
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
        summary=f"restart {len(down)} stopped service container(s) of {project}",
        actions=[
            PlannedAction(
                name=RESTART,
                destructive=True,
                resource=resource,
                description="Restart the services that are not running (seed 000: `docker compose"
                " down && up -d`, narrowed to what is down: running services are left"
                " alone).",
                targets=[f"{c.service}: container {c.info.name}" for c in down],
                details=[
                    f"{c.service}: {c.info.status}, exit code {c.info.exit_code}" for c in down
                ],
                params={
                    "container_ids": [c.info.id for c in down],
                    "services": sorted({c.service for c in down}),
                },
            )
        ],
    )


class AppNotStarting(Runbook):
    """Seed 000: containers fail to start → diagnose → restart unless it is configuration."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "the application is down"
    prevention = PREVENTION

    class Parameters(RunbookParameters):
        required_variables: list[str] | None = None
        log_lines: int = 20
        settle_seconds: float = 5
        stop_timeout_seconds: int = 10

    params: Parameters

    def preflight(self) -> None:
        if not (self.settings.docker_host and self.settings.compose_project_name):
            raise ConfigError("app-not-starting needs DOCKER_HOST and COMPOSE_PROJECT_NAME")

    @property
    def docker_host(self) -> str:
        assert self.settings.docker_host
        return self.settings.docker_host

    @property
    def project(self) -> str:
        assert self.settings.compose_project_name
        return self.settings.compose_project_name

    def detect(self) -> Detection:
        """Every service of the project, running or not."""
        self.preflight()
        project = self.project
        self.services = services = containers.list_project(self.docker_host, project=project)
        self.down = down = [
            c for c in services if c.info.status in DOWN or c.info.health == "unhealthy"
        ]
        states = [
            Finding(
                check="service",
                ok=c not in down,
                detail=f"{c.service}: {c.info.status}"
                + (f", exit code {c.info.exit_code}" if c in down else ""),
            )
            for c in services
        ]
        if not services:
            states = [
                Finding(check="service", ok=False, detail=f"project {project} has no container")
            ]
        return Detection(resource=f"compose://{project}", findings=states)

    def diagnose(self, detection: Detection) -> Diagnosis:
        """Logs, variables (presence and length), database, ports."""
        settings, down = self.settings, self.down
        evidence: list[Finding] = []
        for c in down:
            service = ComposeService(
                docker_host=self.docker_host, project=self.project, service=c.service
            )
            evidence += [
                Finding(check=f"log:{c.service}", ok=True, detail=line)
                for line in containers.container_logs(
                    service, container_id=c.info.id, tail=self.params.log_lines
                )
            ]
        app = next((c for c in self.services if c.service == settings.app_service), None)
        required = self.params.required_variables
        self.variables = (
            variable_findings(
                app.env_lengths,
                required or REQUIRED,
                None if required else DATABASE_ALTERNATIVES,
            )
            if app
            else []
        )
        evidence += self.variables
        self.database_ok: bool | None = None
        if settings.target_database_url is not None:
            probe = postgres.probe_query(targets.pg_target(settings), timeout_seconds=3)
            self.database_ok = probe.ok
            evidence.append(
                Finding(
                    check="database", ok=probe.ok, detail="reachable" if probe.ok else probe.error
                )
            )
        self.taken = [
            f"{c.service}: host port {port}"
            for c in down
            for port in c.host_ports
            if port_taken(port)
        ]
        evidence += [
            Finding(check="port", ok=False, detail=f"{t} is taken by another process")
            for t in self.taken
        ]
        causes = causes_of(down, self.variables, self.taken, self.database_ok)
        return Diagnosis(causes=causes, evidence=evidence)

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """A restart, only when the cause is not configuration."""
        if diagnosis.causes != ["crashed"]:
            missing = [v.detail for v in self.variables if not v.ok]
            raise Escalate(
                "a restart cannot fix this: "
                + "; ".join(
                    missing
                    + self.taken
                    + (
                        ["the database is unreachable (see database-connection-errors)"]
                        if self.database_ok is False
                        else []
                    )
                )
            )
        if not self.down:
            raise Escalate("services report unhealthy but none is stopped")
        return plan_restart(self.down, project=self.project, resource=detection.resource)

    def recheck(self, plan: Plan) -> Plan:
        """Only what is still down: a service that came back meanwhile is left alone."""
        still = {
            c.info.id: c
            for c in containers.list_project(self.docker_host, project=self.project)
            if c.info.status in DOWN
        }
        action = plan.actions[0]
        ids = [i for i in action.params["container_ids"] if i in still]
        narrowed = action.model_copy(
            update={
                "targets": [f"{still[i].service}: container {still[i].info.name}" for i in ids],
                "params": {
                    "container_ids": ids,
                    "services": sorted({still[i].service for i in ids}),
                },
            }
        )
        return plan.model_copy(update={"actions": [narrowed]})

    def act(self, plan: Plan) -> list[ActionResult]:
        restarted = []
        for number, name in enumerate(plan.actions[0].params["services"]):
            if number and step_refusal() is not None:
                break  # the kill switch: the services restarted so far are reported
            service = ComposeService(
                docker_host=self.docker_host, project=self.project, service=name
            )
            restarted += containers.restart_containers(
                service,
                container_ids=plan.actions[0].params["container_ids"],
                stop_timeout=self.params.stop_timeout_seconds,
            )
        return [
            ActionResult(
                name=RESTART,
                destructive=True,
                executed=bool(restarted),
                targets=[f"container {c.name}" for c in restarted],
                detail=f"{len(restarted)} container(s) restarted",
            )
        ]

    def verify(self) -> list[Finding]:
        """Every service running through a settle period."""
        time.sleep(self.params.settle_seconds)  # a crash at start shows within the settle period
        after = containers.list_project(self.docker_host, project=self.project)
        return [
            Finding(
                check="service-after",
                ok=c.info.status == "running",
                detail=f"{c.service}: {c.info.status}",
            )
            for c in after
        ]
