"""Seed 000, "API 500 Errors" (P2): API endpoints answer 500 Internal Server Error.

Detect: the 5xx rate of a probe over `api_paths`, and Sentry's error rate when configured.
Diagnose: error lines of the backend's log; the database reachable; migrations applied
(`current == head` when `ALEMBIC_CONFIG` is set); a deployment in the last `since_hours` hours
(`APP_REPO`). Remediate (approval), only where the recent deployment is the cause (database up,
migrations applied): revert the last deploy commit in `APP_REPO` and restart the backend so that it
runs the reverted code. Verify: the 5xx rate back under the limit.
"""

from __future__ import annotations

import time

from remediate.domain.errors import ConfigError
from remediate.domain.models import ActionResult, Diagnosis, Finding, Plan, PlannedAction
from remediate.engine import targets
from remediate.engine.actions import narrowed_restarts
from remediate.engine.incident import step_refusal
from remediate.engine.runbook import Detection, Escalate, Runbook, RunbookParameters
from remediate.tasks import containers, git, http_probe, postgres
from remediate.tasks.containers import ComposeService, ContainerInfo

RUNBOOK = "api-500-errors"
ROLLBACK = "roll-back-last-deploy"
PREVENTION = (
    "a smoke test of the API after each deploy, with automatic rollback; Sentry alerts on new"
    " 5xx issues; migrations applied before the new code starts (prestart)"
)


def error_rate(probes: list[http_probe.HttpProbe]) -> float:
    return sum(1 for p in probes if p.status is None or p.status >= 500) / max(1, len(probes))


def plan_rollback(
    last: git.Commit,
    service: ComposeService,
    found: list[ContainerInfo],
    *,
    repo: str,
    resource: str,
) -> Plan:
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
        summary=f"roll back {last.sha[:10]} ({last.subject}) and restart {service.service}",
        actions=[
            PlannedAction(
                name=ROLLBACK,
                destructive=True,
                resource=service.resource,
                description="Revert the last deploy commit in APP_REPO (a new commit, nothing"
                " pushed) and restart the backend so that it runs the reverted"
                " code. The database and the migrations are healthy, so the"
                " deploy is the suspect (seed 000: 'rollback if recent deployment').",
                targets=[f"commit {last.sha[:10]}: {last.subject}"]
                + [f"container {c.name}" for c in found],
                statements=[
                    f"git -C {repo} revert --no-edit {last.sha}",
                    f"restart {service.service}",
                ],
                params={"sha": last.sha, "container_ids": [c.id for c in found]},
            )
        ],
    )


class Api500Errors(Runbook):
    """Seed 000: API 500s → logs, database, migrations, recent deploy → roll it back (approval)."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "API requests fail with 500"
    prevention = PREVENTION

    class Parameters(RunbookParameters):
        api_paths: list[str] | None = None
        probes_per_path: int = 5
        error_rate_limit: float = 0.05
        since_hours: float = 6
        stop_timeout_seconds: int = 10
        start_timeout_seconds: float = 60

    params: Parameters
    service: ComposeService | None = None

    def preflight(self) -> None:
        if not self.settings.app_url:
            raise ConfigError("APP_URL is not set (the backend's base URL)")

    @property
    def app_url(self) -> str:
        assert self.settings.app_url is not None
        return self.settings.app_url

    def token(self) -> str | None:
        """Logged in as the probe user when one is set: most of an API is behind its login."""
        settings = self.settings
        if not (settings.login_probe_email and settings.login_probe_password):
            return None
        login = http_probe.probe_login.fn(
            self.app_url,
            path=settings.app_login_path,
            email=settings.login_probe_email,
            password=settings.login_probe_password,
            form=settings.app_login_form,
        )
        return login.token

    def probe(self, check: str) -> Finding:
        bearer = self.token()
        limit = self.params.error_rate_limit
        results = [
            http_probe.probe_http.fn(self.app_url, path=p, timeout_seconds=10, token=bearer)
            for p in self.params.api_paths or ["/api/items"]
            for _ in range(self.params.probes_per_path)
        ]
        rate = error_rate(results)
        worst = next(
            (r.detail for r in results if r.status is None or r.status >= 500), results[-1].detail
        )
        return Finding(
            check=check,
            ok=rate <= limit,
            detail=f"5xx rate {rate:.0%} over {len(results)} requests"
            f" (limit {limit:.0%}); e.g. {worst}",
        )

    def detect(self) -> Detection:
        """The API's 5xx rate."""
        self.preflight()
        return Detection(resource=self.app_url, findings=[self.probe("api-5xx-rate")])

    def log_evidence(self) -> list[Finding]:
        """Error lines of the backend's log (its containers kept for the rollback)."""
        evidence: list[Finding] = []
        self.service = service = targets.compose_service(self.settings, self.settings.app_service)
        self.found: list[ContainerInfo] = []
        if service is not None:
            try:
                self.found = containers.find_service(service)
                for c in self.found[:1]:
                    evidence += [
                        Finding(check="log-error", ok=False, detail=line)
                        for line in containers.error_lines(
                            containers.container_logs(service, container_id=c.id, tail=200)
                        )
                    ]
            except containers.EngineUnreachable as exc:
                evidence.append(Finding(check="app-container", ok=False, detail=str(exc)))
        return evidence

    def diagnose(self, detection: Detection) -> Diagnosis:
        """Logs, database, migrations, recent deploys."""
        settings = self.settings
        evidence = self.log_evidence()
        database_ok = migrations_ok = True
        if settings.target_database_url is not None:
            db = postgres.probe_query(targets.pg_target(settings), timeout_seconds=5)
            database_ok = db.ok
            evidence.append(
                Finding(check="database", ok=db.ok, detail="reachable" if db.ok else db.error)
            )
        if settings.alembic_config and database_ok:
            from remediate.tasks import alembic

            state = alembic.read_schema_state(targets.alembic_target(settings))
            migrations_ok = state.current == state.heads
            evidence.append(
                Finding(
                    check="migrations",
                    ok=migrations_ok,
                    detail=f"at {state.current}, head {state.heads}",
                )
            )
        self.commits = (
            git.recent_commits(settings.app_repo, since_hours=self.params.since_hours, paths=["."])
            if settings.app_repo
            else []
        )
        evidence += [
            Finding(
                check="recent-deploy",
                ok=True,
                detail=f"{c.sha[:10]} {c.author} {c.date}: {c.subject}",
            )
            for c in self.commits[:5]
        ]
        causes = [
            c
            for c, yes in (
                ("database-unreachable", not database_ok),
                ("migrations-not-applied", not migrations_ok),
                ("recent-deploy", bool(self.commits)),
            )
            if yes
        ]
        return Diagnosis(causes=causes, evidence=evidence)

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """Roll back only where the recent deploy is the one cause."""
        causes, service, repo = diagnosis.causes, self.service, self.settings.app_repo
        if causes != ["recent-deploy"] or service is None or not self.found or not repo:
            raise Escalate(
                "no automatic rollback: "
                + (", ".join(causes) or "no recent deploy")
                + (
                    ""
                    if causes != ["recent-deploy"]
                    else "; no backend container or APP_REPO to roll back with"
                )
            )
        return plan_rollback(
            self.commits[0], service, self.found, repo=repo, resource=detection.resource
        )

    def recheck(self, plan: Plan) -> Plan:
        """After the approval (minutes may have passed): the errors still there, the commit to
        revert still the newest, the backend's containers narrowed to those still running."""
        repo, service = self.settings.app_repo, self.service
        assert repo and service is not None
        if self.probe("api-5xx-rate-recheck").ok:
            return plan.model_copy(update={"actions": []})  # the errors stopped
        newest = git.recent_commits(repo, since_hours=self.params.since_hours, paths=["."])
        planned = plan.actions[0].params["sha"]
        if not newest or newest[0].sha != planned:
            now = f"{newest[0].sha[:10]} {newest[0].subject}" if newest else "none"
            raise RuntimeError(
                f"the newest commit is no longer {planned[:10]} (now: {now}): the deploy to roll"
                " back has changed since the plan was approved"
            )
        return narrowed_restarts(plan, service)

    def act(self, plan: Plan) -> list[ActionResult]:
        repo, service = self.settings.app_repo, self.service
        assert repo and service is not None
        params = plan.actions[0].params
        new = git.revert_commit(repo, sha=params["sha"])
        if (why := step_refusal()) is not None:
            detail = f"reverted in {new[:10]}; the backend was not restarted: {why}"
        else:
            restarted = containers.restart_containers(
                service,
                container_ids=params["container_ids"],
                stop_timeout=self.params.stop_timeout_seconds,
            )
            detail = f"reverted in {new[:10]}; {len(restarted)} container(s) restarted; push it"
        return [
            ActionResult(
                name=ROLLBACK,
                destructive=True,
                executed=True,
                targets=plan.actions[0].targets,
                detail=detail,
            )
        ]

    def verify(self) -> list[Finding]:
        """The 5xx rate back under the limit within `start_timeout_seconds`."""
        deadline = time.monotonic() + self.params.start_timeout_seconds
        while True:
            after = self.probe("api-5xx-rate-after")
            if after.ok or time.monotonic() > deadline:
                return [after]
            time.sleep(1)
