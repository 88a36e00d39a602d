"""Seed 002 §5, "Authentication Server" (P2): "Service unavailable" on login, 503s, slow answers.

Detect: `APP_URL/health` not 200 or slower than `latency_limit_seconds` (seed: 10 s); 503 on
login. Diagnose: error and exception lines of the app container's log (`APP_SERVICE` of
`COMPOSE_PROJECT_NAME`). Remediate (approval): restart the application container. Verify:
`/health` answers 200 under the latency limit several times in a row.
"""

from __future__ import annotations

import time
from typing import Any

from remediate.domain.models import ActionResult, Diagnosis, Finding, Outcome, Plan
from remediate.domain.settings import ConfigError, Settings, load_settings
from remediate.engine import targets
from remediate.engine.actions import restart_action, restart_planned
from remediate.engine.incident import IncidentRun, runbook_flow
from remediate.tasks import containers, http_probe
from remediate.tasks.containers import ComposeService, ContainerInfo

RUNBOOK = "auth-server-health"
RESTART = "restart-application-container"
PREVENTION = (
    "a container health check on /health with a restart policy; alert on /health latency;"
    " find the leak or deadlock the error lines point at"
)


def health_finding(
    probe: http_probe.HttpProbe, *, latency_limit: float, check: str = "health"
) -> Finding:
    slow = probe.latency_ms > latency_limit * 1000
    return Finding(
        check=check,
        ok=probe.ok and not slow,
        detail=probe.detail + (f" (over the {latency_limit:g} s limit)" if slow else ""),
    )


def plan_restart(found: list[ContainerInfo], service: ComposeService, *, resource: str) -> Plan:
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
        summary=f"restart the application service {service.service}",
        actions=[
            restart_action(
                RESTART,
                service,
                found,
                description=f"Restart `{service.service}` of project `{service.project}`: requests"
                " in flight fail and clients retry (seed 002 §5, 'restart application if safe').",
            )
        ],
    )


def configuration_problem(
    runbook: str, findings: list[Finding], probe: http_probe.HttpProbe, *, setting: str
) -> Outcome:
    return IncidentRun.misconfigured(
        runbook, findings=findings, problem=http_probe.misconfiguration(probe, setting=setting)
    )


def preflight(settings: Settings, params: dict[str, Any]) -> None:
    if not settings.app_url:
        raise ConfigError("APP_URL is not set (the backend's base URL)")


@runbook_flow(RUNBOOK)
def auth_server_health(
    *,
    health_path: str | None = None,
    login_path: str | None = None,
    latency_limit_seconds: float = 10,
    healthy_checks: int = 3,
    start_timeout_seconds: float = 60,
    stop_timeout_seconds: int = 10,
    dry_run: bool = False,
    auto_approve: bool = False,
    requested_by: str | None = None,
) -> Outcome:
    """Seed 002 §5: /health failing or slow, 503 on login → restart the app (approval)."""
    settings = load_settings()
    preflight(settings, {})
    assert settings.app_url is not None
    app_url = settings.app_url
    timeout = latency_limit_seconds + 2
    health_route = health_path or settings.app_health_path
    login_route = login_path or settings.app_login_path
    probes: list[http_probe.HttpProbe] = []

    def health(check: str = "health") -> Finding:
        probe = http_probe.probe_http(app_url, path=health_route, timeout_seconds=timeout)
        probes.append(probe)
        return health_finding(probe, latency_limit=latency_limit_seconds, check=check)

    # Detect: the health route's status and latency; a 503 on login.
    findings = [health()]
    if settings.login_probe_email and settings.login_probe_password:
        login = http_probe.probe_login(
            app_url,
            path=login_route,
            email=settings.login_probe_email,
            password=settings.login_probe_password,
            timeout_seconds=timeout,
            form=settings.app_login_form,
        )
        probes.append(login)
        findings.append(Finding(check="login", ok=login.status != 503, detail=login.detail))
    if all(f.ok for f in findings):
        return IncidentRun.healthy(RUNBOOK, findings=findings)
    wrong = next((p for p in probes if p.misconfigured), None)
    if wrong is not None:
        # A 404/405/422 is the probe not fitting the app, never a reason to restart it.
        return configuration_problem(
            RUNBOOK, findings, wrong, setting="APP_HEALTH_PATH, APP_LOGIN_PATH, APP_LOGIN_FORM"
        )
    run = IncidentRun.open(
        RUNBOOK,
        resource=app_url,
        findings=findings,
        settings=settings,
        requester=requested_by,
        impact="'Service unavailable' on login: users cannot sign in",
    )

    # Diagnose: error and exception lines of the app's log.
    service = targets.compose_service(settings, settings.app_service)
    found: list[ContainerInfo] = []
    evidence: list[Finding] = []
    if service is None:
        evidence.append(
            Finding(
                check="app-container",
                ok=False,
                detail="DOCKER_HOST and COMPOSE_PROJECT_NAME are not set",
            )
        )
    else:
        try:
            found = containers.find_service(service)
            for c in found[:1]:
                lines = containers.container_logs(service, container_id=c.id, tail=200)
                evidence += [
                    Finding(check="log-error", ok=False, detail=line)
                    for line in containers.error_lines(lines)
                ]
            evidence += [
                Finding(
                    check="app-container", ok=c.status == "running", detail=f"{c.name}: {c.status}"
                )
                for c in found
            ]
        except containers.EngineUnreachable as exc:
            evidence.append(Finding(check="app-container", ok=False, detail=str(exc)))
    causes = ["unhealthy" if not findings[0].ok else "login-503"]
    if any(f.check == "log-error" for f in evidence):
        causes.append("errors-in-log")
    run.diagnosed(Diagnosis(causes=causes, evidence=evidence))
    if service is None or not found:
        return run.escalate("no application container to restart; a person must look")

    plan = plan_restart(found, service, resource=app_url)
    run.planned(plan)
    if dry_run:
        return run.dry_run(plan)

    def recheck(approved: Plan) -> Plan:
        if health().ok:
            return approved.model_copy(
                update={
                    "actions": [
                        approved.actions[0].model_copy(
                            update={"targets": [], "params": {"container_ids": []}}
                        )
                    ]
                }
            )
        return approved

    def act(current: Plan) -> list[ActionResult]:
        assert service is not None
        return [restart_planned(current.actions[0], service, stop_timeout=stop_timeout_seconds)]

    def verify() -> list[Finding]:
        deadline = time.monotonic() + start_timeout_seconds
        first = health("health-after")
        while not first.ok and time.monotonic() < deadline:
            time.sleep(0.5)
            first = health("health-after")
        checks = [first]
        for _ in range(healthy_checks - 1):
            time.sleep(1)
            checks.append(health("health-after"))
        ok = all(c.ok for c in checks)
        return [
            Finding(
                check="health-after",
                ok=ok,
                detail=f"{sum(c.ok for c in checks)} of {len(checks)} checks healthy;"
                f" last: {checks[-1].detail}",
            )
        ]

    return run.carry_out(
        plan,
        auto_approve=auto_approve,
        recheck=recheck,
        act=act,
        verify=verify,
        prevention=PREVENTION,
    )
