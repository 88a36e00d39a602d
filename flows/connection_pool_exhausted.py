"""Seed 002 §2, "Database Query Failure": the connection pool is exhausted.

Detect: client connections against `max_connections`. Diagnose: who holds them (database, state,
user, application), idle sessions older than `idle_minutes`, idle-in-transaction, queries slower
than 5 s. Remediate (approval first): terminate idle sessions of the target database only, never
active ones, replication, superuser maintenance, protected roles or the runner's own. Verify: usage
back under the threshold and a test query answering within its timeout. Notify at every step.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from remediate.domain.errors import ConfigError
from remediate.domain.models import ActionResult, Diagnosis, Finding, Plan, PlannedAction
from remediate.domain.settings import Settings
from remediate.engine import targets
from remediate.engine.incident import step_refusal
from remediate.engine.runbook import Detection, Escalate, Runbook, RunbookParameters
from remediate.tasks import containers, postgres
from remediate.tasks.containers import ComposeService, ContainerInfo
from remediate.tasks.postgres import MAINTENANCE_APPLICATIONS, Activity, Session

RUNBOOK = "connection-pool-exhausted"
SLOW_QUERY_SECONDS = 5.0
ACTION = "terminate-idle-sessions"
RESTART = "restart-pooler"
PREVENTION = (
    "size the application's pool below max_connections; set idle_session_timeout and"
    " idle_in_transaction_session_timeout; put a pooler (PgBouncer/Supavisor) in front"
)


# Pure decisions over what the tasks read.


def usage_finding(activity: Activity, *, usage_threshold: float) -> Finding:
    used = len(activity.client_sessions)
    return Finding(
        check="connection-usage",
        ok=activity.usage < usage_threshold,
        detail=(
            f"{used} of {activity.max_connections} connections in use ({activity.usage:.0%});"
            f" threshold {usage_threshold:.0%}"
        ),
    )


def skip_reason(
    session: Session, *, database: str, idle_seconds: float, protected_roles: frozenset[str]
) -> str | None:
    """Why `session` must not be terminated (None: it is an idle session the plan may name)."""
    if session.own or session.application.startswith("remediate"):
        return "the runner's own session"
    if session.backend_type != "client backend" or session.replication:
        return "replication"
    if session.database != database:
        return "another database"
    if session.superuser and session.application in MAINTENANCE_APPLICATIONS:
        return "superuser maintenance"
    if session.superuser and session.interactive:
        return "an interactive superuser session (a person at a console)"
    if session.advisory_lock:
        return "holds an advisory lock (a migration or a job's lock would be released)"
    if session.user in protected_roles:
        return "protected role"
    if session.state != "idle":
        return f"state {session.state}"
    if (session.state_seconds or 0.0) < idle_seconds:
        return "idle for less than idle_minutes"
    return None


def _top(counter: Counter[str], n: int = 5) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common(n)) or "none"


def diagnose(
    activity: Activity, *, database: str, idle_seconds: float, protected_roles: frozenset[str]
) -> Diagnosis:
    clients = activity.client_sessions
    in_db = [s for s in clients if s.database == database]
    idle = [
        s
        for s in clients
        if skip_reason(
            s, database=database, idle_seconds=idle_seconds, protected_roles=protected_roles
        )
        is None
    ]
    in_tx = [s for s in in_db if (s.state or "").startswith("idle in transaction")]
    slow = [
        s
        for s in clients
        if s.state == "active" and not s.own and (s.query_seconds or 0) > SLOW_QUERY_SECONDS
    ]
    evidence = [
        Finding(
            check="by-database",
            ok=True,
            detail=_top(Counter(s.database or "(none)" for s in clients)),
        ),
        Finding(
            check="by-state", ok=True, detail=_top(Counter(s.state or "(none)" for s in clients))
        ),
        Finding(
            check="by-user", ok=True, detail=_top(Counter(s.user or "(none)" for s in clients))
        ),
        Finding(
            check="by-application",
            ok=True,
            detail=_top(Counter(s.application or "(unnamed)" for s in clients)),
        ),
        Finding(
            check="idle-sessions",
            ok=not idle,
            detail=f"{len(idle)} idle session(s) in {database} older than"
            f" {idle_seconds / 60:g} min that may be terminated",
        ),
        Finding(
            check="idle-in-transaction",
            ok=not in_tx,
            detail=f"{len(in_tx)} session(s) idle in a transaction in {database}",
        ),
        Finding(
            check="slow-queries",
            ok=not slow,
            detail=f"{len(slow)} quer(y/ies) running longer than {SLOW_QUERY_SECONDS:g} s",
        ),
    ]
    causes = []
    if idle:
        causes.append("idle-sessions")
    if in_tx:
        causes.append("idle-in-transaction")
    if slow:
        causes.append("slow-queries")
    if len(in_db) < len(clients) / 2:
        causes.append("connections-in-other-databases")
    suggestions = [
        f"slow query (pid {s.pid}, {s.query_seconds:.0f} s, {s.database}): run EXPLAIN on"
        f" `{s.query[:120]}` and add an index on the columns it filters by"
        for s in slow[:5]
    ]
    if in_tx:
        suggestions.append(
            "sessions idle in a transaction hold locks and connections: find the code path that"
            " does not commit; set idle_in_transaction_session_timeout"
        )
    return Diagnosis(causes=causes, evidence=evidence, suggestions=suggestions)


def plan_idle_terminations(
    activity: Activity,
    *,
    resource: str,
    database: str,
    idle_seconds: float,
    protected_roles: frozenset[str],
    suggestions: list[str],
) -> Plan:
    chosen = sorted(
        (
            s
            for s in activity.client_sessions
            if skip_reason(
                s, database=database, idle_seconds=idle_seconds, protected_roles=protected_roles
            )
            is None
        ),
        key=lambda s: s.pid,
    )
    details = [
        f"pid {s.pid}: user {s.user}, application {s.application or '(unnamed)'},"
        f" client {s.client or 'local'}, idle {(s.state_seconds or 0) / 60:.1f} min"
        for s in chosen
    ]
    action = PlannedAction(
        name=ACTION,
        destructive=True,
        resource=resource,
        description=(
            f"Terminate {len(chosen)} idle session(s) of database `{database}` idle for at least"
            f" {idle_seconds / 60:g} min. Active sessions, replication, superuser maintenance,"
            " protected roles and the runner's own sessions are never touched; a session that"
            " turned active since this plan was made is skipped."
        ),
        details=details,
        targets=[f"pid {s.pid}" for s in chosen],
        statements=termination_statements(
            [(s.pid, s.backend_start) for s in chosen],
            database=database,
            idle_seconds=idle_seconds,
            protected_roles=sorted(protected_roles),
        ),
        params={
            "sessions": [[s.pid, s.backend_start.isoformat()] for s in chosen],
            "idle_seconds": idle_seconds,
            "protected_roles": sorted(protected_roles),
        },
    )
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
        summary=f"terminate {len(chosen)} idle session(s) in {database}",
        actions=[action],
        suggestions=suggestions,
    )


def termination_statements(
    sessions: list[tuple[int, datetime]],
    *,
    database: str,
    idle_seconds: float,
    protected_roles: list[str],
) -> list[str]:
    """What the approver reads is the statement `terminate-idle-sessions` runs (the same
    `postgres.termination`), its values in it."""
    if not sessions:
        return []
    statement = postgres.termination(
        sessions, database=database, idle_seconds=idle_seconds, protected_roles=protected_roles
    )
    return [statement.as_string(None) + ";"]


def recheck_plan(plan: Plan, activity: Activity, *, database: str) -> Plan:
    """The approved plan narrowed to the sessions that still exist and are still eligible."""
    action = plan.actions[0]
    approved = {(pid, start) for pid, start in action.params["sessions"]}
    protected = frozenset(action.params["protected_roles"])
    still = sorted(
        (
            s
            for s in activity.client_sessions
            if (s.pid, s.backend_start.isoformat()) in approved
            and skip_reason(
                s,
                database=database,
                idle_seconds=action.params["idle_seconds"],
                protected_roles=protected,
            )
            is None
        ),
        key=lambda s: s.pid,
    )
    narrowed = action.model_copy(
        update={
            "targets": [f"pid {s.pid}" for s in still],
            "statements": termination_statements(
                [(s.pid, s.backend_start) for s in still],
                database=database,
                idle_seconds=action.params["idle_seconds"],
                protected_roles=sorted(protected),
            ),
            "params": {
                **action.params,
                "sessions": [[s.pid, s.backend_start.isoformat()] for s in still],
            },
        }
    )
    return plan.model_copy(update={"actions": [narrowed, *plan.actions[1:]]})


def plan_pooler_restart(
    activity: Activity,
    *,
    terminating: int,
    usage_threshold: float,
    service: ComposeService,
    running: list[ContainerInfo],
) -> PlannedAction | None:
    """Restart the pooler when terminating idle sessions cannot bring usage under the threshold."""
    left = len(activity.client_sessions) - terminating
    projected = left / activity.max_connections
    if projected < usage_threshold or not running:
        return None
    return PlannedAction(
        name=RESTART,
        destructive=True,
        resource=service.resource,
        description=(
            f"Only if usage is still at or over {usage_threshold:.0%} after the step above"
            f" (projected {projected:.0%}): restart the pooler service `{service.service}` of"
            f" project `{service.project}`. Every client of the pooler is disconnected and"
            " reconnects; the server connections it leaked are released (seed 002 §2, quick fix 1)."
        ),
        targets=[f"container {c.name}" for c in running],
        details=[
            f"container {c.name} ({c.id[:12]}), {c.image}, started {c.started_at}" for c in running
        ],
        params={"container_ids": [c.id for c in running]},
    )


def pooler_service(settings: Settings) -> ComposeService | None:
    """The configured pooler (POOLER_SERVICE), or None; a half-configured one is an error."""
    if not settings.pooler_service:
        return None
    missing = [
        name
        for name, value in (
            ("DOCKER_HOST", settings.docker_host),
            ("COMPOSE_PROJECT_NAME", settings.compose_project_name),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"POOLER_SERVICE is set but {' and '.join(missing)} is not")
    assert settings.docker_host and settings.compose_project_name
    return ComposeService(
        docker_host=settings.docker_host,
        project=settings.compose_project_name,
        service=settings.pooler_service,
    )


# The runbook.


class ConnectionPoolExhausted(Runbook):
    """Seed 002 §2: too many connections → terminate idle sessions (approval first) → verify."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "new connections may be refused"  # each incident states its own (`detect`)
    prevention = PREVENTION
    # The detector connects to the target first, which is this preflight's check: the health
    # sweep skips it (one connection less per database).
    sweep_preflight = False

    class Parameters(RunbookParameters):
        usage_threshold: float = 0.8
        idle_minutes: float = 10
        database: str | None = None
        protected_roles: list[str] | None = None
        probe_timeout_seconds: float = 5.0
        pooler_stop_timeout_seconds: int = 10

    params: Parameters
    running: list[ContainerInfo]

    def preflight(self) -> None:
        """Before a CLI run: the target answers (a server with no free slot is the incident
        itself). The run does not call it: its detector connects first."""
        target = targets.pg_target(self.settings, database=self.params.database)
        try:
            target.connect().close()
        except postgres.TargetUnreachable as exc:
            if not exc.saturated:
                raise
        pooler_service(self.settings)

    def detect(self) -> Detection:
        """Client connections against max_connections."""
        settings, params = self.settings, self.params
        self.target = targets.pg_target(settings, database=params.database)
        self.pooler = pooler_service(settings)
        self.idle_seconds = max(0.0, params.idle_minutes * 60)
        # PROTECTED_ROLES (Supabase's system roles by default) holds for every run, alert- and
        # sweep-started ones included; a run's own list only adds to it.
        self.protected = frozenset(settings.protected_roles) | frozenset(
            params.protected_roles or ()
        )
        try:
            self.activity = postgres.read_activity(self.target)
        except postgres.TargetUnreachable as exc:
            if not exc.saturated:
                raise
            return Detection(
                resource=self.target.resource,
                findings=[Finding(check="connection-usage", ok=False, detail=str(exc))],
                impact="the server refuses new connections",
                escalate="every connection slot is taken and the runner cannot get one to"
                " diagnose; connect it as a role that may use reserved slots (superuser or"
                " pg_use_reserved_connections)",
            )
        usage = usage_finding(self.activity, usage_threshold=params.usage_threshold)
        return Detection(
            resource=self.target.resource,
            findings=[usage],
            impact=f"new connections may be refused: {usage.detail}",
        )

    def diagnose(self, detection: Detection) -> Diagnosis:
        """Who holds the connections; the pooler's containers, when one is configured."""
        diagnosis = diagnose(  # the module's (a test wraps it)
            self.activity,
            database=self.target.database,
            idle_seconds=self.idle_seconds,
            protected_roles=self.protected,
        )
        self.running = []
        if self.pooler is not None:
            try:
                found = containers.find_service(self.pooler)
                self.running = [c for c in found if c.status == "running"]
                detail = f"{len(self.running)} running container(s): " + ", ".join(
                    c.name for c in self.running
                )
                diagnosis.evidence.append(Finding(check="pooler", ok=True, detail=detail))
            except containers.EngineUnreachable as exc:
                diagnosis.evidence.append(Finding(check="pooler", ok=False, detail=str(exc)))
        return diagnosis

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """The idle sessions of the target database, by name; then the pooler, if still needed."""
        plan = plan_idle_terminations(
            self.activity,
            resource=self.target.resource,
            database=self.target.database,
            idle_seconds=self.idle_seconds,
            protected_roles=self.protected,
            suggestions=diagnosis.suggestions,
        )
        if self.pooler is not None:
            restart = plan_pooler_restart(
                self.activity,
                terminating=plan.actions[0].blast_radius,
                usage_threshold=self.params.usage_threshold,
                service=self.pooler,
                running=self.running,
            )
            if restart is not None:
                plan.actions.append(restart)
                plan.summary += (
                    f"; then, if still needed, restart the pooler ({self.pooler.service})"
                )
        if plan.empty:
            raise Escalate(
                "no idle session may be terminated safely and no pooler to restart; "
                + detection.findings[0].detail,
                plan=plan,
            )
        return plan

    def recheck(self, plan: Plan) -> Plan:
        """The approved sessions that still exist and are still eligible."""
        return recheck_plan(
            plan, postgres.read_activity(self.target), database=self.target.database
        )

    # Remediate (approval, safety envelope), then verify inside the same lock.
    def act(self, plan: Plan) -> list[ActionResult]:
        results = []
        params = plan.actions[0].params
        if params["sessions"]:
            terminated = postgres.terminate_idle_sessions(
                self.target,
                sessions=[
                    (pid, datetime.fromisoformat(start)) for pid, start in params["sessions"]
                ],
                idle_seconds=params["idle_seconds"],
                protected_roles=params["protected_roles"],
            )
            results.append(
                ActionResult(
                    name=ACTION,
                    destructive=True,
                    executed=bool(terminated),
                    targets=[f"pid {pid}" for pid in terminated],
                    detail=f"{len(terminated)} session(s) terminated",
                )
            )
        for action in plan.actions[1:]:  # the pooler restart, only if still needed
            assert self.pooler is not None and action.name == RESTART
            threshold = self.params.usage_threshold
            now = postgres.wait_for_usage(self.target, below=threshold, timeout_seconds=2)
            if now < threshold:
                results.append(
                    ActionResult(
                        name=RESTART,
                        destructive=True,
                        executed=False,
                        detail=f"not needed: usage {now:.0%} is under {threshold:.0%}",
                    )
                )
                continue
            if (why := step_refusal()) is not None:
                results.append(
                    ActionResult(name=RESTART, destructive=True, executed=False, detail=why)
                )
                break
            results.append(self.restart_pooler(action))
        return results

    def restart_pooler(self, action: PlannedAction) -> ActionResult:
        assert self.pooler is not None
        restarted = containers.restart_containers(
            self.pooler,
            container_ids=action.params["container_ids"],
            stop_timeout=self.params.pooler_stop_timeout_seconds,
        )
        postgres.wait_for_usage(self.target, below=self.params.usage_threshold)
        return ActionResult(
            name=RESTART,
            destructive=True,
            executed=bool(restarted),
            targets=[f"container {c.name}" for c in restarted],
            detail=f"{len(restarted)} container(s) restarted",
        )

    def verify(self) -> list[Finding]:
        """Usage back under the threshold; a test query answering within its timeout."""
        after = usage_finding(
            postgres.read_activity(self.target), usage_threshold=self.params.usage_threshold
        )
        probe = postgres.probe_query(self.target, timeout_seconds=self.params.probe_timeout_seconds)
        return [
            after.model_copy(update={"check": "connection-usage-after"}),
            Finding(
                check="test-query",
                ok=probe.ok,
                detail=f"SELECT 1 answered in {probe.latency_ms:.0f} ms"
                if probe.ok
                else f"test query failed: {probe.error}",
            ),
        ]
