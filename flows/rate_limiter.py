"""Seed 002 §4, "Rate Limiter Issues" (P2): users limited too early, buckets that never refill.

Detect: Redis answers `PING`; buckets matching `key_pattern` (found with `SCAN`, never `KEYS`)
with no TTL (they never refill), a TTL longer than the window, or a counter over `limit`.
Diagnose: `INFO stats`, the stuck buckets one by one. Remediate (approval): re-expire the stuck
buckets still under their limit, delete the others, exactly the keys named in the plan, each
re-checked atomically. Verify: `PING` answers and no stuck bucket is left.
"""

from __future__ import annotations

from typing import Any

from remediate.domain.models import ActionResult, Diagnosis, Finding, Outcome, Plan, PlannedAction
from remediate.domain.settings import ConfigError, Settings, load_settings
from remediate.engine import targets
from remediate.engine.actions import recheck_restart, restart_action, restart_planned, wait_until_ok
from remediate.engine.incident import IncidentRun, runbook_flow
from remediate.tasks import containers, redis
from remediate.tasks.containers import ComposeService
from remediate.tasks.redis import Bucket, RedisTarget

RUNBOOK = "rate-limiter"
DELETE, EXPIRE = "delete-stuck-buckets", "re-expire-stuck-buckets"
RESTART = "restart-redis"
PREVENTION = (
    "set the TTL in the same command as the increment (SET … EX / a Lua script), never in a"
    " second call that a crash can skip; alert on rate-limit keys without a TTL"
)


def stuck_reason(bucket: Bucket, *, window_seconds: int, limit: int | None) -> str | None:
    if bucket.ttl == -2:
        return None
    if limit is not None and bucket.value is not None and bucket.value > limit:
        return f"counter {bucket.value} over the limit {limit}"
    if bucket.ttl == -1:
        return "no TTL: it never refills"
    if bucket.ttl > window_seconds:
        return f"TTL {bucket.ttl} s, longer than the {window_seconds} s window"
    return None


def plan_repair(
    buckets: list[Bucket], *, resource: str, pattern: str, window_seconds: int, limit: int | None
) -> Plan:
    stuck = [
        (b, r)
        for b in buckets
        if (r := stuck_reason(b, window_seconds=window_seconds, limit=limit))
    ]
    expire = [(b, r) for b, r in stuck if b.ttl == -1 and r.startswith("no TTL")]
    expiring = {b.key for b, _ in expire}  # a set: a plan can name thousands of buckets
    delete = [(b, r) for b, r in stuck if b.key not in expiring]
    actions = []
    for name, chosen, what in (
        (EXPIRE, expire, f"EXPIRE {{key}} {window_seconds}"),
        (DELETE, delete, "DEL {key}"),
    ):
        if not chosen:
            continue
        actions.append(
            PlannedAction(
                name=name,
                destructive=True,
                resource=resource,
                description=(
                    f"Give each bucket a {window_seconds} s TTL so it refills"
                    if name == EXPIRE
                    else "Delete each bucket: its user starts afresh"
                )
                + f"; only keys matching `{pattern}` that are still stuck when the step runs.",
                targets=[b.key for b, _ in chosen],
                details=[f"{b.key} ({b.type}): {r}" for b, r in chosen],
                statements=[what.format(key=b.key) for b, _ in chosen][:50],
            )
        )
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
        summary=f"repair {len(stuck)} stuck rate-limit bucket(s) matching {pattern}",
        actions=actions,
    )


def bucket_finding(
    buckets: list[Bucket],
    *,
    pattern: str,
    window_seconds: int,
    limit: int | None,
    check: str = "stuck-buckets",
) -> Finding:
    stuck = [b.key for b in buckets if stuck_reason(b, window_seconds=window_seconds, limit=limit)]
    return Finding(
        check=check,
        ok=not stuck,
        detail=f"{len(stuck)} of {len(buckets)} bucket(s) matching {pattern} are stuck"
        + (f": {', '.join(stuck[:5])}" if stuck else ""),
    )


def restart_redis(
    run: IncidentRun,
    settings: Settings,
    target: RedisTarget,
    *,
    auto_approve: bool,
    dry_run: bool,
    stop_timeout_seconds: int,
) -> Outcome:
    """Redis does not answer: restart its compose service's container (approval), then PING."""
    if not (settings.docker_host and settings.compose_project_name):
        return run.escalate(
            "Redis does not answer PING and no container engine is configured"
            " (DOCKER_HOST, COMPOSE_PROJECT_NAME) to restart it"
        )
    service = ComposeService(
        docker_host=settings.docker_host,
        project=settings.compose_project_name,
        service=settings.redis_service,
    )
    try:
        found = containers.find_service(service)
    except containers.EngineUnreachable as exc:
        return run.escalate(f"Redis does not answer PING; {exc}")
    run.diagnosed(
        Diagnosis(
            causes=["redis-down"],
            evidence=[
                Finding(
                    check="redis-container",
                    ok=c.status == "running",
                    detail=f"{c.name}: {c.status}, exit code {c.exit_code}",
                )
                for c in found
            ],
        )
    )
    if not found:
        return run.escalate(
            f"Redis does not answer PING and service {service.service} has no container"
        )
    plan = Plan(
        runbook=RUNBOOK,
        resource=target.resource,
        summary=f"restart the Redis service {service.service}",
        actions=[
            restart_action(
                RESTART,
                service,
                found,
                description="Redis does not answer PING: restart its container. Counters it did"
                " not persist are lost, so users start with fresh buckets.",
            )
        ],
    )
    run.planned(plan)
    if dry_run:
        return run.dry_run(plan)

    def act(current: Plan) -> list[ActionResult]:
        return [restart_planned(current.actions[0], service, stop_timeout=stop_timeout_seconds)]

    def verify() -> list[Finding]:
        def pong() -> Finding:
            after = redis.ping(target)
            return Finding(check="redis-ping-after", ok=after.ok, detail=after.detail)

        return [wait_until_ok(pong, timeout=30)]

    return run.carry_out(
        plan,
        auto_approve=auto_approve,
        recheck=lambda p: recheck_restart(
            p, service, still_broken=lambda: not redis.ping(target).ok
        ),
        act=act,
        verify=verify,
        prevention=PREVENTION,
    )


def preflight(settings: Settings, params: dict[str, Any]) -> None:
    targets.redis_target(settings)


@runbook_flow(RUNBOOK)
def rate_limiter(
    *,
    key_pattern: str = "ratelimit:*",
    window_seconds: int = 3600,
    limit: int | None = None,
    stop_timeout_seconds: int = 10,
    dry_run: bool = False,
    auto_approve: bool = False,
    requested_by: str | None = None,
) -> Outcome:
    """Seed 002 §4: stuck rate-limit buckets → re-expire or delete them (approval) → verify."""
    settings = load_settings()
    target = targets.redis_target(settings)
    if not key_pattern or key_pattern in {"*", "**"}:
        raise ConfigError(
            "key_pattern must name the rate limiter's keys (e.g. ratelimit:*), not every key"
        )

    # Detect: Redis answers; buckets that never refill.
    health = redis.ping(target)
    pinged = Finding(check="redis-ping", ok=health.ok, detail=health.detail)
    if not health.ok:
        run = IncidentRun.open(
            RUNBOOK,
            resource=target.resource,
            findings=[pinged],
            settings=settings,
            requester=requested_by,
            impact="every rate-limited request fails",
        )
        return restart_redis(
            run,
            settings,
            target,
            auto_approve=auto_approve,
            dry_run=dry_run,
            stop_timeout_seconds=stop_timeout_seconds,
        )
    buckets = redis.scan_buckets(target, pattern=key_pattern)
    stuck = bucket_finding(buckets, pattern=key_pattern, window_seconds=window_seconds, limit=limit)
    if stuck.ok:
        return IncidentRun.healthy(RUNBOOK, findings=[pinged, stuck])
    run = IncidentRun.open(
        RUNBOOK,
        resource=target.resource,
        findings=[pinged, stuck],
        settings=settings,
        requester=requested_by,
        impact="users get 'Too many requests' before their limit",
    )

    # Diagnose and plan: each stuck bucket by name.
    plan = plan_repair(
        buckets,
        resource=target.resource,
        pattern=key_pattern,
        window_seconds=window_seconds,
        limit=limit,
    )
    run.diagnosed(
        Diagnosis(
            causes=["buckets-without-ttl"]
            if any(a.name == EXPIRE for a in plan.actions)
            else ["buckets-over-limit"],
            evidence=[
                Finding(check="bucket", ok=False, detail=d)
                for a in plan.actions
                for d in a.details[:20]
            ],
        )
    )
    run.planned(plan)
    if dry_run:
        return run.dry_run(plan)

    def recheck(approved: Plan) -> Plan:
        return approved  # the repair script re-checks every key atomically

    def act(current: Plan) -> list[ActionResult]:
        named = {a.name: a.targets for a in current.actions}
        done = set(
            redis.fix_buckets(
                target,
                pattern=key_pattern,
                window_seconds=window_seconds,
                limit=limit,
                delete=named.get(DELETE, []),
                expire=named.get(EXPIRE, []),
            )
        )
        return [
            ActionResult(
                name=a.name,
                destructive=True,
                executed=any(k in done for k in a.targets),
                targets=[k for k in a.targets if k in done],
                detail=f"{sum(k in done for k in a.targets)} bucket(s)",
            )
            for a in current.actions
        ]

    def verify() -> list[Finding]:
        after = redis.ping(target)
        return [
            Finding(check="redis-ping-after", ok=after.ok, detail=after.detail),
            bucket_finding(
                redis.scan_buckets(target, pattern=key_pattern),
                pattern=key_pattern,
                window_seconds=window_seconds,
                limit=limit,
                check="stuck-buckets-after",
            ),
        ]

    return run.carry_out(
        plan,
        auto_approve=auto_approve,
        recheck=recheck,
        act=act,
        verify=verify,
        prevention=PREVENTION,
    )
