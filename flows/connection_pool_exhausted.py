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
from typing import Any

from remediate.domain.models import ActionResult, Diagnosis, Finding, Outcome, Plan, PlannedAction
from remediate.domain.settings import ConfigError, Settings, load_settings
from remediate.engine import targets
from remediate.engine.incident import IncidentRun, runbook_flow, step_refusal
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
    pids = ", ".join(str(s.pid) for s in chosen) or "none"
    quoted_db = database.replace("'", "''")
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
        statements=[
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ({pids})"
            f" AND datname = '{quoted_db}' AND state = 'idle'"
            f" AND state_change <= now() - interval '{idle_seconds:g} seconds';"
        ],
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


# The detector connects to the target first, which is this preflight's check: the health sweep
# skips it (one connection less per database).
SWEEP_PREFLIGHT = False


def preflight(settings: Settings, params: dict[str, Any]) -> None:
    """Before a CLI run: the target answers (a server with no free slot is the incident itself)."""
    database = params.get("database")
    target = targets.pg_target(settings, database=str(database) if database else None)
    try:
        target.connect().close()
    except postgres.TargetUnreachable as exc:
        if not exc.saturated:
            raise
    pooler_service(settings)


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


@runbook_flow(RUNBOOK)
def connection_pool_exhausted(
    *,
    usage_threshold: float = 0.8,
    idle_minutes: float = 10,
    database: str | None = None,
    protected_roles: list[str] | None = None,
    probe_timeout_seconds: float = 5.0,
    pooler_stop_timeout_seconds: int = 10,
    dry_run: bool = False,
    auto_approve: bool = False,
    requested_by: str | None = None,
) -> Outcome:
    """Seed 002 §2: too many connections → terminate idle sessions (approval first) → verify."""
    settings = load_settings()
    target = targets.pg_target(settings, database=database)
    pooler = pooler_service(settings)
    idle_seconds = max(0.0, idle_minutes * 60)
    # PROTECTED_ROLES (Supabase's system roles by default) holds for every run, alert- and
    # sweep-started ones included; a run's own list only adds to it.
    protected = frozenset(settings.protected_roles) | frozenset(protected_roles or ())

    # Detect: client connections against max_connections.
    try:
        activity = postgres.read_activity(target)
    except postgres.TargetUnreachable as exc:
        if not exc.saturated:
            raise
        refused = Finding(check="connection-usage", ok=False, detail=str(exc))
        run = IncidentRun.open(
            RUNBOOK,
            resource=target.resource,
            findings=[refused],
            settings=settings,
            requester=requested_by,
            impact="the server refuses new connections",
        )
        return run.escalate(
            "every connection slot is taken and the runner cannot get one to diagnose; connect it"
            " as a role that may use reserved slots (superuser or pg_use_reserved_connections)"
        )
    usage = usage_finding(activity, usage_threshold=usage_threshold)
    if usage.ok:
        return IncidentRun.healthy(RUNBOOK, findings=[usage])
    run = IncidentRun.open(
        RUNBOOK,
        resource=target.resource,
        findings=[usage],
        settings=settings,
        requester=requested_by,
        impact=f"new connections may be refused: {usage.detail}",
    )

    # Diagnose: who holds the connections.
    diagnosis = diagnose(
        activity, database=target.database, idle_seconds=idle_seconds, protected_roles=protected
    )
    running: list[ContainerInfo] = []
    if pooler is not None:
        try:
            running = [c for c in containers.find_service(pooler) if c.status == "running"]
            detail = f"{len(running)} running container(s): " + ", ".join(c.name for c in running)
            diagnosis.evidence.append(Finding(check="pooler", ok=True, detail=detail))
        except containers.EngineUnreachable as exc:
            diagnosis.evidence.append(Finding(check="pooler", ok=False, detail=str(exc)))
    run.diagnosed(diagnosis)

    # Plan: the idle sessions of the target database, by name.
    plan = plan_idle_terminations(
        activity,
        resource=target.resource,
        database=target.database,
        idle_seconds=idle_seconds,
        protected_roles=protected,
        suggestions=diagnosis.suggestions,
    )
    if pooler is not None:
        restart = plan_pooler_restart(
            activity,
            terminating=plan.actions[0].blast_radius,
            usage_threshold=usage_threshold,
            service=pooler,
            running=running,
        )
        if restart is not None:
            plan.actions.append(restart)
            plan.summary += f"; then, if still needed, restart the pooler ({pooler.service})"
    run.planned(plan)
    if plan.empty:
        return run.escalate(
            "no idle session may be terminated safely and no pooler to restart; " + usage.detail
        )
    if dry_run:
        return run.dry_run(plan)

    # Remediate (approval, safety envelope), then verify inside the same lock.
    def act(current: Plan) -> list[ActionResult]:
        results = []
        params = current.actions[0].params
        if params["sessions"]:
            terminated = postgres.terminate_idle_sessions(
                target,
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
        for action in current.actions[1:]:  # the pooler restart, only if still needed
            assert pooler is not None and action.name == RESTART
            now = postgres.wait_for_usage(target, below=usage_threshold, timeout_seconds=2)
            if now < usage_threshold:
                results.append(
                    ActionResult(
                        name=RESTART,
                        destructive=True,
                        executed=False,
                        detail=f"not needed: usage {now:.0%} is under {usage_threshold:.0%}",
                    )
                )
                continue
            if (why := step_refusal()) is not None:
                results.append(
                    ActionResult(name=RESTART, destructive=True, executed=False, detail=why)
                )
                break
            restarted = containers.restart_containers(
                pooler,
                container_ids=action.params["container_ids"],
                stop_timeout=pooler_stop_timeout_seconds,
            )
            postgres.wait_for_usage(target, below=usage_threshold)
            results.append(
                ActionResult(
                    name=RESTART,
                    destructive=True,
                    executed=bool(restarted),
                    targets=[f"container {c.name}" for c in restarted],
                    detail=f"{len(restarted)} container(s) restarted",
                )
            )
        return results

    def verify() -> list[Finding]:
        after = usage_finding(postgres.read_activity(target), usage_threshold=usage_threshold)
        probe = postgres.probe_query(target, timeout_seconds=probe_timeout_seconds)
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

    return run.carry_out(
        plan,
        auto_approve=auto_approve,
        recheck=lambda p: recheck_plan(p, postgres.read_activity(target), database=target.database),
        act=act,
        verify=verify,
        prevention=PREVENTION,
    )
