"""tasks/redis.py against the real Redis: health, the bucket scan, and a repair that changes exactly
the named, still-stuck keys (raw bytes included) and nothing else.

Every key lives under a prefix of its own test (`rt:<hex>:`) and is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from pydantic import SecretStr

from remediate.domain.errors import ConfigError
from remediate.tasks.redis import (
    RedisTarget,
    display_key,
    fix_buckets,
    ping,
    raw_key,
    scan_buckets,
)
from tests.conftest import REDIS_URL
from tests.support.ports import free_port

WINDOW = 600


@dataclass
class Space:
    """A test's own corner of Redis: a raw (bytes) client and the key prefix."""

    r: redis.Redis
    prefix: str

    def key(self, rest: str) -> str:
        return f"{self.prefix}:{rest}"

    @property
    def pattern(self) -> str:
        return f"{self.prefix}:ratelimit:*"


@pytest.fixture
def space() -> Iterator[Space]:
    client = redis.Redis.from_url(REDIS_URL)  # bytes in, bytes out: keys may be any bytes
    prefix = f"rt:{uuid.uuid4().hex[:8]}"
    try:
        yield Space(client, prefix)
    finally:
        for key in client.scan_iter(match=prefix.encode() + b":*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def target() -> RedisTarget:
    return RedisTarget.of(SecretStr(REDIS_URL))


def command_calls(r: redis.Redis, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


# The target and its health.


def test_target_requires_a_redis_url_and_shows_it_without_the_password() -> None:
    with pytest.raises(ConfigError, match="TARGET_REDIS_URL is not set"):
        RedisTarget.of(None)
    with pytest.raises(ConfigError, match="must be a redis:// or rediss:// URL"):
        RedisTarget.of(SecretStr("http://127.0.0.1:6379/0"))
    shown = RedisTarget.of(SecretStr("rediss://app:pw-canary-91@cache.internal:6380/2")).resource
    assert shown == "rediss://app@cache.internal:6380/2"


def test_ping_answers_with_latency_and_the_stats(target: RedisTarget) -> None:
    health = ping.fn(target)

    assert health.ok is True
    assert set(health.stats) == {
        "total_commands_processed",
        "rejected_connections",
        "keyspace_hits",
        "keyspace_misses",
        "evicted_keys",
        "expired_keys",
    }
    assert health.stats["total_commands_processed"] > 0
    assert all(value >= 0 for value in health.stats.values())
    assert health.latency_ms > 0
    assert health.detail.startswith("PONG in ")
    assert f"total_commands_processed {health.stats['total_commands_processed']}" in health.detail


def test_ping_of_a_redis_that_does_not_answer_is_not_ok_and_keeps_the_password_out() -> None:
    port = free_port()  # nothing listens there
    down = RedisTarget.of(SecretStr(f"redis://:pw-canary-7c2@127.0.0.1:{port}/0"))

    health = ping.fn(down)

    assert health.ok is False
    assert health.stats == {}
    assert health.detail.startswith(f"redis://127.0.0.1:{port}/0: ConnectionError: ")
    assert "pw-canary-7c2" not in health.model_dump_json()


# Keys shown as text, and back.


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"ratelimit:alice@example.com", "ratelimit:alice@example.com"),
        ("ratelimit:été".encode(), "ratelimit:été"),
        (b"ratelimit:\xff\xfe-latin1", "ratelimit:\\xff\\xfe-latin1"),
        (b"ratelimit:nul\x00user", "ratelimit:nul\\x00user"),
        (b"ratelimit:a\\b", "ratelimit:a\\\\b"),
        (b"ratelimit:\\xff", "ratelimit:\\\\xff"),  # the four characters, not the byte
        (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # an encoded surrogate is not UTF-8
    ],
)
def test_display_key_is_exact_and_raw_key_reads_it_back(raw: bytes, shown: str) -> None:
    assert display_key(raw) == shown
    assert raw_key(shown) == raw


def test_every_byte_survives_display_and_back_and_is_shown_as_utf8_without_nul() -> None:
    samples = [bytes([b]) for b in range(256)]
    samples += [bytes([a, b]) for a in (0x00, 0x5C, 0x78, 0xC3, 0xE9, 0xFF) for b in range(256)]
    samples += [b"\\x00", b"\\\\x", b"x\\", b"\\", "🚦".encode(), "🚦".encode()[:3]]
    for raw in samples:
        shown = display_key(raw)
        assert raw_key(shown) == raw, raw
        assert "\x00" not in shown, raw
        shown.encode("utf-8")  # strict: no lone surrogate reaches the store or chat


# The scan.


def test_scan_reads_each_matching_bucket_with_type_ttl_and_counter(
    space: Space, target: RedisTarget
) -> None:
    r, k = space.r, space.key
    r.set(k("ratelimit:str"), 7, ex=60)
    r.set(k("ratelimit:str-no-ttl"), 12)
    r.set(k("ratelimit:str-text"), "not-a-number", ex=60)
    r.zadd(k("ratelimit:zset"), {"t1": 1, "t2": 2, "t3": 3})
    r.hset(k("ratelimit:hash-tokens"), mapping={"tokens": 9, "count": 99})
    r.expire(k("ratelimit:hash-tokens"), 3600)
    r.hset(k("ratelimit:hash-count"), mapping={"count": 41})
    r.hset(k("ratelimit:hash-other"), mapping={"other": 1})
    r.rpush(k("ratelimit:list"), "a", "b")
    r.set(k("session:outside"), 5)  # not a bucket
    keys_before, scans_before = command_calls(r, "keys"), command_calls(r, "scan")

    buckets = scan_buckets.fn(target, pattern=space.pattern)

    assert [b.key for b in buckets] == sorted(b.key for b in buckets)
    by_key = {b.key: b for b in buckets}
    ttl_of = {key: b.ttl for key, b in by_key.items()}
    assert set(by_key) == {
        k(f"ratelimit:{name}")
        for name in (
            "str",
            "str-no-ttl",
            "str-text",
            "zset",
            "hash-tokens",
            "hash-count",
            "hash-other",
            "list",
        )
    }
    assert {key: (b.type, b.value) for key, b in by_key.items()} == {
        k("ratelimit:str"): ("string", 7),
        k("ratelimit:str-no-ttl"): ("string", 12),
        k("ratelimit:str-text"): ("string", None),
        k("ratelimit:zset"): ("zset", 3),
        k("ratelimit:hash-tokens"): ("hash", 9),
        k("ratelimit:hash-count"): ("hash", 41),
        k("ratelimit:hash-other"): ("hash", None),
        k("ratelimit:list"): ("list", None),
    }
    assert 0 < ttl_of.pop(k("ratelimit:str")) <= 60
    assert 0 < ttl_of.pop(k("ratelimit:str-text")) <= 60
    assert 60 < ttl_of.pop(k("ratelimit:hash-tokens")) <= 3600
    assert set(ttl_of.values()) == {-1}
    # Read-only, and with SCAN: KEYS would block the server.
    assert command_calls(r, "keys") == keys_before
    assert command_calls(r, "scan") > scans_before
    assert r.get(k("session:outside")) == b"5" and r.ttl(k("session:outside")) == -1
    assert r.ttl(k("ratelimit:str-no-ttl")) == -1


def test_scan_stops_at_max_keys_and_finds_nothing_where_nothing_matches(
    space: Space, target: RedisTarget
) -> None:
    for index in range(5):
        space.r.set(space.key(f"ratelimit:user{index}"), index)

    capped = scan_buckets.fn(target, pattern=space.pattern, max_keys=3)

    assert len(capped) == 3
    assert {b.key for b in capped} < {space.key(f"ratelimit:user{i}") for i in range(5)}
    assert scan_buckets.fn(target, pattern=space.key("nothing:*")) == []


def test_scan_shows_binary_keys_so_that_they_read_back_to_the_exact_key(
    space: Space, target: RedisTarget
) -> None:
    p = space.prefix.encode()
    raws = [
        p + b":ratelimit:\xff\xfe-latin1-user",
        p + b":ratelimit:nul\x00user",
        p + b":ratelimit:\\xff",
        p + b":ratelimit:" + "été".encode(),
    ]
    for value, raw in enumerate(raws):
        space.r.set(raw, value)

    buckets = scan_buckets.fn(target, pattern=space.pattern)

    assert sorted(b.key for b in buckets) == sorted(
        [
            f"{space.prefix}:ratelimit:\\xff\\xfe-latin1-user",
            f"{space.prefix}:ratelimit:nul\\x00user",
            f"{space.prefix}:ratelimit:\\\\xff",
            f"{space.prefix}:ratelimit:été",
        ]
    )
    assert {raw_key(b.key): b.value for b in buckets} == {raw: v for v, raw in enumerate(raws)}


# The repair.


def test_repair_changes_exactly_the_named_buckets_that_are_still_stuck(
    space: Space, target: RedisTarget
) -> None:
    r, k = space.r, space.key
    r.set(k("ratelimit:no-ttl"), 4)  # expire -> re-expired
    r.set(k("ratelimit:no-ttl-over"), 500)  # expire, but over the limit -> left for delete
    r.set(k("ratelimit:no-ttl-over-del"), 500)  # delete -> deleted
    r.set(k("ratelimit:long-ttl"), 2, ex=86400)  # delete -> deleted (TTL beyond the window)
    r.set(k("ratelimit:long-ttl-exp"), 2, ex=86400)  # expire: has a TTL -> untouched
    r.set(k("ratelimit:over-with-ttl"), 500, ex=60)  # delete -> deleted (over the limit)
    r.hset(k("ratelimit:hash-over"), mapping={"tokens": 150})  # delete -> deleted
    r.expire(k("ratelimit:hash-over"), 60)
    r.set(k("ratelimit:recovered"), 3, ex=60)  # delete, but healthy now -> untouched
    r.set(k("ratelimit:recovered-exp"), 3, ex=60)  # expire, healthy now -> untouched
    r.set(k("ratelimit:not-named"), 9)  # stuck, but not named -> untouched
    r.set(k("session:bob"), "x")  # outside the pattern -> untouched

    done = fix_buckets.fn(
        target,
        pattern=space.pattern,
        window_seconds=WINDOW,
        limit=100,
        delete=[
            k("ratelimit:no-ttl-over-del"),
            k("ratelimit:long-ttl"),
            k("ratelimit:over-with-ttl"),
            k("ratelimit:hash-over"),
            k("ratelimit:recovered"),
            k("ratelimit:gone"),  # never existed: not created, not reported
        ],
        expire=[
            k("ratelimit:no-ttl"),
            k("ratelimit:no-ttl-over"),
            k("ratelimit:long-ttl-exp"),
            k("ratelimit:recovered-exp"),
        ],
    )

    assert done == sorted(
        [
            k("ratelimit:no-ttl"),
            k("ratelimit:no-ttl-over-del"),
            k("ratelimit:long-ttl"),
            k("ratelimit:over-with-ttl"),
            k("ratelimit:hash-over"),
        ]
    )
    assert r.get(k("ratelimit:no-ttl")) == b"4" and 0 < r.ttl(k("ratelimit:no-ttl")) <= WINDOW
    for deleted in ("no-ttl-over-del", "long-ttl", "over-with-ttl", "hash-over", "gone"):
        assert not r.exists(k(f"ratelimit:{deleted}")), deleted
    assert r.get(k("ratelimit:no-ttl-over")) == b"500" and r.ttl(k("ratelimit:no-ttl-over")) == -1
    assert r.ttl(k("ratelimit:long-ttl-exp")) > WINDOW
    assert r.get(k("ratelimit:recovered")) == b"3" and 0 < r.ttl(k("ratelimit:recovered")) <= 60
    assert 0 < r.ttl(k("ratelimit:recovered-exp")) <= 60
    assert r.get(k("ratelimit:not-named")) == b"9" and r.ttl(k("ratelimit:not-named")) == -1
    assert r.get(k("session:bob")) == b"x" and r.ttl(k("session:bob")) == -1


def test_repair_without_a_limit_judges_by_ttl_alone(space: Space, target: RedisTarget) -> None:
    r, k = space.r, space.key
    r.set(k("ratelimit:big-no-ttl"), 10_000)
    r.set(k("ratelimit:big-with-ttl"), 10_000, ex=60)

    done = fix_buckets.fn(
        target,
        pattern=space.pattern,
        window_seconds=WINDOW,
        limit=None,
        delete=[k("ratelimit:big-with-ttl")],
        expire=[k("ratelimit:big-no-ttl")],
    )

    assert done == [k("ratelimit:big-no-ttl")]
    assert 0 < r.ttl(k("ratelimit:big-no-ttl")) <= WINDOW
    assert r.get(k("ratelimit:big-with-ttl")) == b"10000"


def test_repair_naming_a_key_outside_the_pattern_refuses_and_changes_nothing(
    space: Space, target: RedisTarget
) -> None:
    r, k = space.r, space.key
    r.set(k("ratelimit:stuck"), 4)
    r.set(k("session:bob"), "x")

    with pytest.raises(ValueError, match="refusing keys outside"):
        fix_buckets.fn(
            target,
            pattern=space.pattern,
            window_seconds=WINDOW,
            limit=None,
            delete=[k("session:bob")],
            expire=[k("ratelimit:stuck")],
        )

    assert r.get(k("session:bob")) == b"x" and r.ttl(k("session:bob")) == -1
    assert r.get(k("ratelimit:stuck")) == b"4" and r.ttl(k("ratelimit:stuck")) == -1


def test_repair_of_no_key_changes_nothing(space: Space, target: RedisTarget) -> None:
    space.r.set(space.key("ratelimit:stuck"), 4)

    assert (
        fix_buckets.fn(
            target, pattern=space.pattern, window_seconds=WINDOW, limit=None, delete=[], expire=[]
        )
        == []
    )
    assert space.r.ttl(space.key("ratelimit:stuck")) == -1


def test_repair_uses_redis_glob_rules_for_the_pattern(space: Space, target: RedisTarget) -> None:
    r, k = space.r, space.key
    pattern = k("ratelimit:[^a]*")
    r.set(k("ratelimit:alice"), 4)
    r.set(k("ratelimit:bob"), 4)
    assert [b.key for b in scan_buckets.fn(target, pattern=pattern)] == [k("ratelimit:bob")]

    with contextlib.suppress(ValueError):  # refusing is right too
        fix_buckets.fn(
            target,
            pattern=pattern,
            window_seconds=WINDOW,
            limit=None,
            delete=[k("ratelimit:alice")],
            expire=[],
        )
    assert r.get(k("ratelimit:alice")) == b"4" and r.ttl(k("ratelimit:alice")) == -1


def test_repair_of_binary_keys_changes_the_exact_raw_key(space: Space, target: RedisTarget) -> None:
    r, p = space.r, space.prefix.encode()
    latin1 = p + b":ratelimit:\xff\xfe-user"
    latin1_sibling = p + b":ratelimit:\xff\xfd-user"  # differs in one byte
    nul = p + b":ratelimit:nul\x00user"
    nul_prefix = p + b":ratelimit:nul"  # what a C string would have made of it
    literal = p + b":ratelimit:\\xff\\xfe-user"  # the characters `\xff\xfe`, no such bytes
    for raw in (latin1, latin1_sibling, nul, nul_prefix, literal):
        r.set(raw, 3)
    shown = {b.key: b for b in scan_buckets.fn(target, pattern=space.pattern)}
    to_expire = [display_key(latin1), display_key(nul)]
    to_delete = [display_key(literal)]
    assert set(to_expire + to_delete) <= set(shown)

    done = fix_buckets.fn(
        target,
        pattern=space.pattern,
        window_seconds=WINDOW,
        limit=None,
        delete=to_delete,
        expire=to_expire,
    )

    assert done == sorted(to_expire + to_delete)
    assert 0 < r.ttl(latin1) <= WINDOW and r.get(latin1) == b"3"
    assert 0 < r.ttl(nul) <= WINDOW and r.get(nul) == b"3"
    assert not r.exists(literal)
    assert r.ttl(latin1_sibling) == -1 and r.ttl(nul_prefix) == -1
    after = scan_buckets.fn(target, pattern=space.pattern)
    assert [(b.key, b.type, b.value, b.ttl == -1) for b in after] == sorted(
        [
            (display_key(latin1), "string", 3, False),
            (display_key(latin1_sibling), "string", 3, True),
            (display_key(nul), "string", 3, False),
            (display_key(nul_prefix), "string", 3, True),
        ]
    )
