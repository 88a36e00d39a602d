"""rate-limiter on the real Redis (seed 002 §4): stuck buckets repaired, healthy ones untouched.

Each test works under a key prefix of its own and deletes it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from remediate.flows.rate_limiter import rate_limiter
from tests.conftest import REDIS_URL
from tests.e2e.conftest import answer, paused_run_where, start

pytestmark = pytest.mark.usefixtures("prefect_server")


@dataclass(frozen=True)
class Limiter:
    client: redis.Redis  # decoding responses
    prefix: str  # this test's keys
    pattern: str  # the rate-limit keys under it


@pytest.fixture
def limiter(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Limiter]:
    prefix = f"rt:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    monkeypatch.setenv("TARGET_REDIS_URL", REDIS_URL)
    yield Limiter(client=client, prefix=prefix, pattern=f"{prefix}:ratelimit:*")
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()


def seed(limiter: Limiter) -> dict[str, str]:
    r, p = limiter.client, limiter.prefix
    keys = {
        "healthy": f"{p}:ratelimit:alice@example.com",
        "healthy_zset": f"{p}:ratelimit:api:carol",
        "no_ttl": f"{p}:ratelimit:bob@example.com",
        "no_ttl_over": f"{p}:ratelimit:dave@example.com",
        "long_ttl": f"{p}:ratelimit:erin@example.com",
        "outside": f"{p}:session:bob",
    }
    r.set(keys["healthy"], 3, ex=60)
    r.zadd(keys["healthy_zset"], {"t1": 1, "t2": 2})
    r.expire(keys["healthy_zset"], 60)
    r.set(keys["no_ttl"], 4)
    r.set(keys["no_ttl_over"], 500)
    r.set(keys["long_ttl"], 2, ex=86400 * 30)
    r.set(keys["outside"], "x")  # no TTL, but not a rate-limit key: never touched
    return keys


def keys_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_keys", {}).get("calls", 0))


def test_stuck_buckets_are_repaired_and_nothing_else_is_touched(limiter: Limiter) -> None:
    r, keys = limiter.client, seed(limiter)
    keys_before = keys_calls(r)

    outcome = rate_limiter(
        key_pattern=limiter.pattern, window_seconds=3600, limit=100, auto_approve=True
    )

    assert outcome.status == "resolved", outcome.summary
    by_name = {a.name: set(a.targets) for a in outcome.actions}
    assert by_name == {
        "re-expire-stuck-buckets": {keys["no_ttl"]},
        "delete-stuck-buckets": {keys["no_ttl_over"], keys["long_ttl"]},
    }
    assert 0 < r.ttl(keys["no_ttl"]) <= 3600 and r.get(keys["no_ttl"]) == "4"
    assert not r.exists(keys["no_ttl_over"]) and not r.exists(keys["long_ttl"])
    assert r.get(keys["healthy"]) == "3" and 0 < r.ttl(keys["healthy"]) <= 60
    assert r.zcard(keys["healthy_zset"]) == 2
    assert r.get(keys["outside"]) == "x" and r.ttl(keys["outside"]) == -1
    assert keys_calls(r) == keys_before, "KEYS was called: SCAN only"


def test_dry_run_and_declined_change_no_key(limiter: Limiter) -> None:
    r, keys = limiter.client, seed(limiter)
    snapshot = {k: (r.type(k), r.ttl(k) == -1) for k in keys.values()}
    planned = rate_limiter(key_pattern=limiter.pattern, dry_run=True)
    assert planned.status == "planned"
    assert keys["outside"] not in {t for a in planned.actions for t in a.targets}

    future = start(flow=rate_limiter, key_pattern=limiter.pattern)
    answer(paused_run_where("key_pattern", limiter.pattern), approve=False, approver="lee")
    assert future.result(timeout=60).status == "declined"
    assert {k: (r.type(k), r.ttl(k) == -1) for k in keys.values()} == snapshot


def test_a_bucket_that_recovered_after_the_plan_is_left_alone(limiter: Limiter) -> None:
    r, keys = limiter.client, seed(limiter)
    future = start(flow=rate_limiter, key_pattern=limiter.pattern, limit=100)
    run_id = paused_run_where("key_pattern", limiter.pattern)
    r.expire(keys["no_ttl"], 30)  # the app fixed this one itself while we waited
    answer(run_id, approve=True, approver="max")
    outcome = future.result(timeout=60)
    assert outcome.status == "resolved"
    assert 0 < r.ttl(keys["no_ttl"]) <= 30  # not re-expired to the window: untouched
    assert keys["no_ttl"] not in {t for a in outcome.actions for t in a.targets}


def test_pattern_for_every_key_is_refused(limiter: Limiter) -> None:
    from remediate.domain.settings import ConfigError

    with pytest.raises(ConfigError, match="key_pattern must name"):
        rate_limiter(key_pattern="*", auto_approve=True)


def test_redis_down_without_an_engine_is_escalated(
    limiter: Limiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TARGET_REDIS_URL", "redis://:redis-canary@127.0.0.1:1/0")
    outcome = rate_limiter(key_pattern=limiter.pattern)
    assert outcome.status == "escalated" and not outcome.findings[0].ok
    assert "no container engine is configured" in outcome.summary
    assert "redis-canary" not in outcome.model_dump_json()


@dataclass(frozen=True)
class RedisContainer:
    container: Any
    url: str


@pytest.fixture
def redis_container(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RedisContainer]:
    """A real Redis server in a container of the local engine, from this machine's binary."""
    import socket
    import time

    import docker

    from tests.e2e.conftest import DOCKER_HOST

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    project = f"rt-{uuid.uuid4().hex[:8]}"
    mounts = ["/usr/bin/redis-server", "/usr/lib/x86_64-linux-gnu", "/lib64"]
    container = engine.containers.run(
        "localhost/remediate-test:3",
        [
            "/usr/bin/redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            "/data",
        ],
        detach=True,
        network_mode="host",
        volumes={m: {"bind": m, "mode": "ro"} for m in mounts},
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": "redis",
            "remediate.test": "1",
        },
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.RedisError:
            assert time.monotonic() < deadline, container.logs()[-2000:]
            time.sleep(0.2)
    for name, value in {
        "TARGET_REDIS_URL": url,
        "DOCKER_HOST": DOCKER_HOST,
        "COMPOSE_PROJECT_NAME": project,
    }.items():
        monkeypatch.setenv(name, value)
    yield RedisContainer(container=container, url=url)
    container.remove(force=True)
    engine.close()


def test_redis_that_does_not_answer_is_restarted(redis_container: RedisContainer) -> None:
    redis_container.container.stop(timeout=1)
    outcome = rate_limiter(auto_approve=True, stop_timeout_seconds=1)
    assert outcome.status == "resolved", outcome.summary
    assert outcome.actions[0].name == "restart-redis"
    assert redis.Redis.from_url(redis_container.url).ping()


def test_redis_restart_dry_run_changes_nothing(redis_container: RedisContainer) -> None:
    redis_container.container.stop(timeout=1)
    assert rate_limiter(dry_run=True).status == "planned"
    redis_container.container.reload()
    assert redis_container.container.status == "exited"


def test_timed_out_approval_changes_no_key(
    limiter: Limiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, keys = limiter.client, seed(limiter)
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert rate_limiter(key_pattern=limiter.pattern).status == "timed-out"
    assert r.ttl(keys["no_ttl"]) == -1 and r.exists(keys["no_ttl_over"])


def test_keys_that_are_not_text_are_repaired_exactly_and_shown_safely(
    limiter: Limiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis keys are bytes: invalid UTF-8, NUL, and mention/link markup in a key neither break
    the run (the store, Prefect, Slack) nor reach anyone as markup; the repair changes exactly
    the raw keys that were planned."""
    from tests.support.httpcapture import CaptureServer

    raw = redis.Redis.from_url(REDIS_URL)  # bytes in, bytes out
    p = limiter.prefix.encode()
    stuck = [
        p + b":ratelimit:\xff\xfe-latin1-user",
        p + b":ratelimit:nul\x00user",
        p + b":ratelimit:<!channel>[click](https://evil.example)",
    ]
    healthy = p + b":ratelimit:\xe9t\xe9-healthy"
    slack = CaptureServer()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/T0/B0/X")
    try:
        for key in stuck:
            raw.set(key, 3)
        raw.set(healthy, 1, ex=600)
        outcome = rate_limiter(key_pattern=limiter.pattern, window_seconds=900, auto_approve=True)
        assert outcome.status == "resolved", outcome.summary
        assert all(0 < raw.ttl(key) <= 900 for key in stuck)
        assert raw.get(healthy) == b"1" and 0 < raw.ttl(healthy) <= 600
        [repaired] = outcome.actions
        assert f"{limiter.prefix}:ratelimit:\\xff\\xfe-latin1-user" in repaired.targets
        assert f"{limiter.prefix}:ratelimit:nul\\x00user" in repaired.targets
        texts = " ".join(m.json()["text"] for m in slack.received)
        assert "<!channel>" not in texts and "<https://" not in texts
        outcome.model_dump_json()  # the outcome prints as JSON
    finally:
        for key in [*stuck, healthy]:
            raw.delete(key)
        raw.close()
        slack.close()


def test_a_run_declared_lost_while_it_detected_opens_nothing_and_changes_nothing(
    limiter: Limiter, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue "Past one machine": a run whose lease (held from its first step) was declared lost
    while it detected has had its flow run marked Crashed and its alert's claim freed for a new
    run; if its process is in fact still alive, it stops where it would open an incident."""
    from pydantic import SecretStr

    from remediate.engine.liveness import ExecutorLost, Lease
    from remediate.store.database import Store

    keys = seed(limiter)
    monkeypatch.setattr(Lease, "lost_now", lambda self: True)
    state = rate_limiter(
        key_pattern=limiter.pattern, window_seconds=60, auto_approve=True, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ExecutorLost):
        state.result()
    assert limiter.client.ttl(keys["no_ttl"]) == -1  # nothing changed
    store = Store.open(SecretStr(env["REMEDIATION_DATABASE_URL"]))
    assert store.incident_for_flow_run(str(state.state_details.flow_run_id)) is None
    store.close()
