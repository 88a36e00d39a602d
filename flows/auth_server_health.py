"""Seed 002 §5, "Authentication Server" (P2): "Service unavailable" on login, 503s, slow answers.

Detect: `APP_URL/health` not 200 or slower than `latency_limit_seconds` (seed: 10 s); 503 on
login. Diagnose: error and exception lines of the app container's log (`APP_SERVICE` of
`COMPOSE_PROJECT_NAME`). Remediate (approval): restart the application container. Verify:
`/health` answers 200 under the latency limit several times in a row.
"""

from __future__ import annotations

import time

from remediate.domain.errors import ConfigError
from remediate.domain.models import Diagnosis, Finding, Plan
from remediate.engine import targets
from remediate.engine.actions import RestartsOneService, restart_action
from remediate.engine.runbook import Detection, Escalate, RunbookParameters
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


class AuthServerHealth(RestartsOneService):
    """Seed 002 §5: /health failing or slow, 503 on login → restart the app (approval)."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "'Service unavailable' on login: users cannot sign in"
    prevention = PREVENTION

    class Parameters(RunbookParameters):
        health_path: str | None = None
        login_path: str | None = None
        latency_limit_seconds: float = 10
        healthy_checks: int = 3
        start_timeout_seconds: float = 60
        stop_timeout_seconds: int = 10

    params: Parameters
    service: ComposeService | None = None

    def preflight(self) -> None:
        if not self.settings.app_url:
            raise ConfigError("APP_URL is not set (the backend's base URL)")

    def health(self, check: str = "health") -> Finding:
        assert self.settings.app_url is not None
        probe = http_probe.probe_http(
            self.settings.app_url,
            path=self.params.health_path or self.settings.app_health_path,
            timeout_seconds=self.params.latency_limit_seconds + 2,
        )
        self.probes.append(probe)
        return health_finding(probe, latency_limit=self.params.latency_limit_seconds, check=check)

    def detect(self) -> Detection:
        """The health route's status and latency; a 503 on login."""
        self.preflight()
        settings, app_url = self.settings, str(self.settings.app_url)
        self.probes: list[http_probe.HttpProbe] = []
        findings = [self.health()]
        if settings.login_probe_email and settings.login_probe_password:
            login = http_probe.probe_login(
                app_url,
                path=self.params.login_path or settings.app_login_path,
                email=settings.login_probe_email,
                password=settings.login_probe_password,
                timeout_seconds=self.params.latency_limit_seconds + 2,
                form=settings.app_login_form,
            )
            self.probes.append(login)
            findings.append(Finding(check="login", ok=login.status != 503, detail=login.detail))
        wrong = next((p for p in self.probes if p.misconfigured), None)
        # A 404/405/422 is the probe not fitting the app, never a reason to restart it.
        problem = (
            http_probe.misconfiguration(
                wrong, setting="APP_HEALTH_PATH, APP_LOGIN_PATH, APP_LOGIN_FORM"
            )
            if wrong is not None and not all(f.ok for f in findings)
            else None
        )
        return Detection(resource=app_url, findings=findings, misconfigured=problem)

    def diagnose(self, detection: Detection) -> Diagnosis:
        """Error and exception lines of the app's log."""
        self.service = targets.compose_service(self.settings, self.settings.app_service)
        self.found: list[ContainerInfo] = []
        evidence: list[Finding] = []
        if self.service is None:
            detail = "DOCKER_HOST and COMPOSE_PROJECT_NAME are not set"
            evidence.append(Finding(check="app-container", ok=False, detail=detail))
        else:
            try:
                self.found = containers.find_service(self.service)
                for c in self.found[:1]:
                    lines = containers.container_logs(self.service, container_id=c.id, tail=200)
                    evidence += [
                        Finding(check="log-error", ok=False, detail=line)
                        for line in containers.error_lines(lines)
                    ]
                evidence += [
                    Finding(
                        check="app-container",
                        ok=c.status == "running",
                        detail=f"{c.name}: {c.status}",
                    )
                    for c in self.found
                ]
            except containers.EngineUnreachable as exc:
                evidence.append(Finding(check="app-container", ok=False, detail=str(exc)))
        causes = ["unhealthy" if not detection.findings[0].ok else "login-503"]
        if any(f.check == "log-error" for f in evidence):
            causes.append("errors-in-log")
        return Diagnosis(causes=causes, evidence=evidence)

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        if self.service is None or not self.found:
            raise Escalate("no application container to restart; a person must look")
        return plan_restart(self.found, self.service, resource=detection.resource)

    def recheck(self, plan: Plan) -> Plan:
        """Healthy again since: nothing left to restart."""
        if self.health().ok:
            emptied = plan.actions[0].model_copy(
                update={"targets": [], "params": {"container_ids": []}}
            )
            return plan.model_copy(update={"actions": [emptied]})
        return plan

    def verify(self) -> list[Finding]:
        """/health healthy under the latency limit several times in a row."""
        deadline = time.monotonic() + self.params.start_timeout_seconds
        first = self.health("health-after")
        while not first.ok and time.monotonic() < deadline:
            time.sleep(0.5)
            first = self.health("health-after")
        checks = [first]
        for _ in range(self.params.healthy_checks - 1):
            time.sleep(1)
            checks.append(self.health("health-after"))
        return [
            Finding(
                check="health-after",
                ok=all(c.ok for c in checks),
                detail=f"{sum(c.ok for c in checks)} of {len(checks)} checks healthy;"
                f" last: {checks[-1].detail}",
            )
        ]
