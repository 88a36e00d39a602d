"""Pure decisions of rate-limiter: what is stuck, and which repair each bucket gets."""

from __future__ import annotations

from remediate.flows.rate_limiter import plan_repair, stuck_reason
from remediate.tasks.redis import Bucket


def b(key: str, ttl: int, value: int | None = 1, kind: str = "string") -> Bucket:
    return Bucket(key=key, type=kind, ttl=ttl, value=value)


def test_stuck_reasons() -> None:
    assert stuck_reason(b("k", 30), window_seconds=60, limit=10) is None
    assert stuck_reason(b("k", -1), window_seconds=60, limit=10) == "no TTL: it never refills"
    assert "longer than" in stuck_reason(b("k", 600), window_seconds=60, limit=None)
    assert "over the limit" in stuck_reason(b("k", 30, 11), window_seconds=60, limit=10)
    assert stuck_reason(b("k", 30, 11), window_seconds=60, limit=None) is None
    assert stuck_reason(b("k", -2), window_seconds=60, limit=10) is None


def test_plan_re_expires_under_limit_and_deletes_the_rest() -> None:
    plan = plan_repair(
        [b("ok", 30), b("a", -1), b("c", -1, 99), b("d", 9999)],
        resource="redis://h:6379/0",
        pattern="*",
        window_seconds=60,
        limit=10,
    )
    by_name = {a.name: a.targets for a in plan.actions}
    assert by_name == {"re-expire-stuck-buckets": ["a"], "delete-stuck-buckets": ["c", "d"]}
    assert plan.actions[0].statements == ["EXPIRE a 60"]
