"""Seed 002 §4, "Rate Limiter Issues" (P2): users limited too early, buckets that never refill.

Detect: Redis answers `PING`; buckets matching `key_pattern` (found with `SCAN`, never `KEYS`)
with no TTL (they never refill), a TTL longer than the window, or a counter over `limit`.
Diagnose: `INFO stats`, the stuck buckets one by one. Remediate (approval): re-expire the stuck
buckets still under their limit, delete the others, exactly the keys named in the plan, each
re-checked atomically. Verify: `PING` answers and no stuck bucket is left.
"""

from __future__ import annotations

from remediate.domain.errors import ConfigError
from remediate.domain.models import ActionResult, Diagnosis, Finding, Plan, PlannedAction
from remediate.engine import targets
from remediate.engine.actions import recheck_restart, restart_action, restart_planned, wait_until_ok
from remediate.engine.runbook import Detection, Escalate, Runbook, RunbookParameters
from remediate.tasks import containers, redis
from remediate.tasks.containers import ComposeService, ContainerInfo
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


def plan_restart(found: list[ContainerInfo], service: ComposeService, *, resource: str) -> Plan:
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
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


class RateLimiter(Runbook):
    """Seed 002 §4: stuck rate-limit buckets → re-expire or delete them (approval) → verify."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "users get 'Too many requests' before their limit"
    prevention = PREVENTION

    class Parameters(RunbookParameters):
        key_pattern: str = "ratelimit:*"
        window_seconds: int = 3600
        limit: int | None = None
        stop_timeout_seconds: int = 10

    params: Parameters
    target: RedisTarget
    # Redis does not answer PING: the run restarts its container instead of repairing buckets.
    down = False
    buckets: list[Bucket]
    repair: Plan
    service: ComposeService
    found: list[ContainerInfo]

    def preflight(self) -> None:
        """TARGET_REDIS_URL, and a key pattern that names the rate limiter's keys (the run
        checks both first too)."""
        self.target = targets.redis_target(self.settings)
        if not self.params.key_pattern or self.params.key_pattern in {"*", "**"}:
            raise ConfigError(
                "key_pattern must name the rate limiter's keys (e.g. ratelimit:*), not every key"
            )

    def stuck(self, buckets: list[Bucket], check: str = "stuck-buckets") -> Finding:
        return bucket_finding(
            buckets,
            pattern=self.params.key_pattern,
            window_seconds=self.params.window_seconds,
            limit=self.params.limit,
            check=check,
        )

    def detect(self) -> Detection:
        """Redis answers; buckets that never refill."""
        self.preflight()
        health = redis.ping(self.target)
        pinged = Finding(check="redis-ping", ok=health.ok, detail=health.detail)
        if not health.ok:
            self.down = True
            return Detection(
                resource=self.target.resource,
                findings=[pinged],
                impact="every rate-limited request fails",
            )
        self.buckets = redis.scan_buckets(self.target, pattern=self.params.key_pattern)
        return Detection(resource=self.target.resource, findings=[pinged, self.stuck(self.buckets)])

    def diagnose(self, detection: Detection) -> Diagnosis:
        """Each stuck bucket by name (Redis down: its container)."""
        if self.down:
            return self.diagnose_down()
        self.repair = plan_repair(
            self.buckets,
            resource=detection.resource,
            pattern=self.params.key_pattern,
            window_seconds=self.params.window_seconds,
            limit=self.params.limit,
        )
        return Diagnosis(
            causes=["buckets-without-ttl"]
            if any(a.name == EXPIRE for a in self.repair.actions)
            else ["buckets-over-limit"],
            evidence=[
                Finding(check="bucket", ok=False, detail=d)
                for a in self.repair.actions
                for d in a.details[:20]
            ],
        )

    def diagnose_down(self) -> Diagnosis:
        """Redis does not answer: its compose service's container."""
        settings = self.settings
        if not (settings.docker_host and settings.compose_project_name):
            raise Escalate(
                "Redis does not answer PING and no container engine is configured"
                " (DOCKER_HOST, COMPOSE_PROJECT_NAME) to restart it"
            )
        self.service = ComposeService(
            docker_host=settings.docker_host,
            project=settings.compose_project_name,
            service=settings.redis_service,
        )
        try:
            self.found = containers.find_service(self.service)
        except containers.EngineUnreachable as exc:
            raise Escalate(f"Redis does not answer PING; {exc}") from exc
        return Diagnosis(
            causes=["redis-down"],
            evidence=[
                Finding(
                    check="redis-container",
                    ok=c.status == "running",
                    detail=f"{c.name}: {c.status}, exit code {c.exit_code}",
                )
                for c in self.found
            ],
        )

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """The stuck buckets by name; Redis down: restart its container."""
        if not self.down:
            return self.repair
        if not self.found:
            raise Escalate(
                f"Redis does not answer PING and service {self.service.service} has no container"
            )
        return plan_restart(self.found, self.service, resource=detection.resource)

    def recheck(self, plan: Plan) -> Plan:
        if self.down:
            return recheck_restart(
                plan, self.service, still_broken=lambda: not redis.ping(self.target).ok
            )
        return plan  # the repair script re-checks every key atomically

    def act(self, plan: Plan) -> list[ActionResult]:
        if self.down:
            action = plan.actions[0]
            stop_timeout = self.params.stop_timeout_seconds
            return [restart_planned(action, self.service, stop_timeout=stop_timeout)]
        named = {a.name: a.targets for a in plan.actions}
        done = set(
            redis.fix_buckets(
                self.target,
                pattern=self.params.key_pattern,
                window_seconds=self.params.window_seconds,
                limit=self.params.limit,
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
            for a in plan.actions
        ]

    def verify(self) -> list[Finding]:
        """PING answers and no stuck bucket is left (Redis restarted: PING answers)."""

        def pong() -> Finding:
            after = redis.ping(self.target)
            return Finding(check="redis-ping-after", ok=after.ok, detail=after.detail)

        if self.down:
            return [wait_until_ok(pong, timeout=30)]
        pinged = pong()
        buckets = redis.scan_buckets(self.target, pattern=self.params.key_pattern)
        return [pinged, self.stuck(buckets, check="stuck-buckets-after")]
