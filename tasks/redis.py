r"""Redis tasks for the rate limiter (`TARGET_REDIS_URL`): health, buckets, and their repair.

Keys are found with `SCAN` (never `KEYS`, which blocks the server). The repair is one Lua script,
so each key is re-checked and changed atomically: a bucket that recovered since the plan, or a key
that does not match the pattern, is left alone.

A key is bytes, and any bytes: one that is not UTF-8, or holds NUL, is shown (in plans, the
timeline, chat) as `display_key` writes it, `\xHH` for such a byte and `\\` for a backslash, and
`raw_key` turns that back into the exact key, so the repair changes the key that was planned.
"""

from __future__ import annotations

import re
import time

import redis
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict, SecretStr

from remediate.domain.errors import ConfigError
from remediate.domain.redact import redact_url
from remediate.tasks.steps import task

__all__ = [
    "Bucket",
    "RedisHealth",
    "RedisTarget",
    "display_key",
    "fix_buckets",
    "ping",
    "raw_key",
    "scan_buckets",
]


def display_key(raw: bytes) -> str:
    """A key as text that can be stored, shown and sent anywhere, and read back by `raw_key`."""
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\x00":
            out.append("\\x00")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def raw_key(shown: str) -> bytes:
    """The exact key `display_key` showed."""
    out = bytearray()
    index = 0
    while index < len(shown):
        ch = shown[index]
        if ch == "\\" and shown[index + 1 : index + 2] == "\\":
            out += b"\\"
            index += 2
        elif ch == "\\" and shown[index + 1 : index + 2] == "x" and index + 4 <= len(shown):
            out.append(int(shown[index + 2 : index + 4], 16))
            index += 4
        else:
            out += ch.encode("utf-8")
            index += 1
    return bytes(out)


class RedisTarget(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: SecretStr

    @classmethod
    def of(cls, url: SecretStr | None) -> RedisTarget:
        """TARGET_REDIS_URL, checked."""
        if url is None:
            raise ConfigError("TARGET_REDIS_URL is not set (redis://host:port/db)")
        if not url.get_secret_value().startswith(("redis://", "rediss://")):
            raise ConfigError("TARGET_REDIS_URL must be a redis:// or rediss:// URL")
        return cls(url=url)

    @property
    def resource(self) -> str:
        return redact_url(self.url)

    def client(self, *, raw: bool = False) -> redis.Redis:
        """A client; `raw`: keys and values as bytes (keys may be any bytes)."""
        return redis.Redis.from_url(
            self.url.get_secret_value(),
            socket_timeout=5,
            socket_connect_timeout=5,
            decode_responses=not raw,
        )


class RedisHealth(BaseModel):
    ok: bool
    latency_ms: float
    detail: str
    stats: dict[str, int] = {}


class Bucket(BaseModel):
    key: str
    type: str
    ttl: int  # seconds; -1 none, -2 gone
    value: int | None


@task(
    name="redis-ping",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["redis", "read-only"],
)
def ping(target: RedisTarget) -> RedisHealth:
    """PING and INFO stats."""
    started = time.perf_counter()
    try:
        with target.client() as client:
            client.ping()
            info = client.info("stats")
    except redis.RedisError as exc:
        return RedisHealth(
            ok=False,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail=f"{target.resource}: {type(exc).__name__}: {str(exc)[:200]}",
        )
    latency = (time.perf_counter() - started) * 1000
    keep = (
        "total_commands_processed",
        "rejected_connections",
        "keyspace_hits",
        "keyspace_misses",
        "evicted_keys",
        "expired_keys",
    )
    stats = {k: int(info[k]) for k in keep if k in info}
    return RedisHealth(
        ok=True,
        latency_ms=latency,
        stats=stats,
        detail=f"PONG in {latency:.0f} ms; " + ", ".join(f"{k} {v}" for k, v in stats.items()),
    )


# A bucket's counter: a string's integer, a sorted set's size (sliding window), or a hash's
# `tokens` / `count` field (token bucket). The same function serves the scan and the repair.
_VALUE_OF = """
local function value_of(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'string' then return tonumber(redis.call('GET', key)) end
  if t == 'zset' then return redis.call('ZCARD', key) end
  if t == 'hash' then
    return tonumber(redis.call('HGET', key, 'tokens') or redis.call('HGET', key, 'count'))
  end
  return nil
end
"""
_VALUE = _VALUE_OF + "return value_of(KEYS[1])"


def glob_matches(pattern: str, key: bytes) -> bool:
    """Does `key` match `pattern` as Redis's own SCAN MATCH reads it (byte by byte: `*`, `?`,
    `[abc]`, `[a-z]`, `[^a]`, `\\` escapes)? Python's fnmatch reads `[^a]` differently."""
    return _glob(pattern).fullmatch(key.decode("latin-1")) is not None


def _glob(pattern: str) -> re.Pattern[str]:
    text = pattern.encode().decode("latin-1")  # one character per byte, as Redis compares
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < len(text):
            i += 1
            out.append(re.escape(text[i]))
        elif c == "[":
            i, klass = _glob_class(text, i + 1)
            out.append(klass)
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _glob_class(text: str, i: int) -> tuple[int, str]:
    """A `[...]` class starting after its `[`: (index of its `]`, the regex class)."""
    negate = i < len(text) and text[i] == "^"
    i += negate
    parts: list[str] = []
    while i < len(text) and text[i] != "]":
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
            parts.append(re.escape(text[i]))
        elif i + 2 < len(text) and text[i + 1] == "-" and text[i + 2] != "]":
            low, high = sorted((text[i], text[i + 2]))  # Redis swaps a reversed range
            parts.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 2
        else:
            parts.append(re.escape(text[i]))
        i += 1
    if not parts:
        return i, "." if negate else "(?!)"
    return i, ("[^" if negate else "[") + "".join(parts) + "]"


@task(name="scan-buckets", cache_policy=NONE, tags=["redis", "read-only"])
def scan_buckets(target: RedisTarget, *, pattern: str, max_keys: int = 100_000) -> list[Bucket]:
    """Every key matching `pattern` (SCAN), with its type, TTL and counter value."""
    buckets = []
    with target.client(raw=True) as client:
        value_of = client.register_script(_VALUE)
        keys = []
        for key in client.scan_iter(match=pattern, count=1000):
            keys.append(key)
            if len(keys) >= max_keys:
                break
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            with client.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.type(key)
                    pipe.ttl(key)
                    value_of(keys=[key], client=pipe)
                replies = pipe.execute()
            for index, key in enumerate(chunk):
                kind, ttl, value = replies[3 * index : 3 * index + 3]
                buckets.append(
                    Bucket(
                        key=display_key(key),
                        type=kind.decode() if isinstance(kind, bytes) else str(kind),
                        ttl=int(ttl),
                        value=int(value) if value is not None else None,
                    )
                )
    return sorted(buckets, key=lambda b: b.key)


# KEYS: the buckets. ARGV: pattern, window, limit (or -1), then one mode per key:
# "expire" (only if it still has no TTL) or "delete" (only if it is still stuck).
_FIX = (
    _VALUE_OF
    + """
local pattern, window, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local done = {}
for i, key in ipairs(KEYS) do
  local mode = ARGV[3 + i]
  local ttl = redis.call('TTL', key)
  local value = value_of(key)
  local over = limit >= 0 and value ~= nil and value > limit
  local stuck = ttl == -1 or ttl > window or over
  if ttl ~= -2 and stuck then
    if mode == 'expire' and ttl == -1 and not over then
      redis.call('EXPIRE', key, window)
      table.insert(done, key)
    elseif mode == 'delete' then
      redis.call('DEL', key)
      table.insert(done, key)
    end
  end
end
return done
"""
)


@task(name="fix-buckets", cache_policy=NONE, tags=["redis", "destructive"])
def fix_buckets(
    target: RedisTarget,
    *,
    pattern: str,
    window_seconds: int,
    limit: int | None,
    delete: list[str],
    expire: list[str],
) -> list[str]:
    """Delete or re-expire exactly the named buckets that are still stuck; the keys changed."""
    named = [(k, "delete") for k in delete] + [(k, "expire") for k in expire]
    outside = [k for k, _ in named if not glob_matches(pattern, raw_key(k))]
    if outside:
        raise ValueError(f"refusing keys outside {pattern!r}: {outside[:3]}")
    if not named:
        return []
    with target.client(raw=True) as client:
        done = client.eval(
            _FIX,
            len(named),
            *[raw_key(k) for k, _ in named],
            pattern,
            window_seconds,
            -1 if limit is None else limit,
            *[mode for _, mode in named],
        )
    return sorted(display_key(k) for k in done)
