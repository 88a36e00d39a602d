"""Alert deduplication in the product's Redis: one run per incident, however often it is reported.

`claim(key)` is one round trip (a `SET NX EX` that returns what the key holds when it is taken):
the first alert of an incident takes the key and starts the run; later ones within the TTL find it
and are counted as duplicates (the key then holds the run's id). A claim left without a run for
`STALE_CLAIM_SECONDS` (its receiver was killed in between) is taken over by the next alert.
If Redis does not answer, every alert is let through (`degraded`): Prefect's idempotency key still
makes redeliveries of one occurrence start one run. After a failure Redis is left alone for a few
seconds, so a dead Redis costs one timeout, not one per alert.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis
from pydantic import SecretStr

__all__ = ["Claim", "Deduplicator"]

log = logging.getLogger(__name__)
PENDING = "pending"
# SET NX EX, or the value already there: one round trip on any Redis version. A claim whose run
# was never recorded (the receiver died between claiming and creating the run) goes stale after
# ARGV[2] ms and the next alert takes it over: a killed receiver loses no incident. Taking over a
# claim whose receiver is merely slow is harmless: both use one idempotency key, so one run.
CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mark = 'pending:' .. now
if redis.call('SET', KEYS[1], mark, 'NX', 'EX', ARGV[1]) then return false end
local held = redis.call('GET', KEYS[1])
if string.sub(held, 1, 8) == 'pending:' and now - tonumber(string.sub(held, 9)) > tonumber(ARGV[2])
then
  redis.call('SET', KEYS[1], mark, 'EX', ARGV[1])
  return false
end
return held
"""
# Replace the claim of an ended run with a new pending claim, if it still holds that run: of two
# requests that both saw the run end, one takes the claim over and starts the next run.
TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], 'pending:' .. now, 'EX', ARGV[2])
return 1
"""
STALE_CLAIM_SECONDS = 10.0
RETRY_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class Claim:
    new: bool
    flow_run_id: str | None = None
    degraded: bool = False


class Deduplicator:
    def __init__(self, url: SecretStr, *, prefix: str, ttl_seconds: int) -> None:
        self._client = redis.Redis.from_url(
            url.get_secret_value(),
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            decode_responses=True,
        )
        self._claim = self._client.register_script(CLAIM)
        self._take_over = self._client.register_script(TAKE_OVER)
        self._prefix = f"{prefix}alert:"
        self._ttl = ttl_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.degradations = 0

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            self.degradations += 1
        log.warning(
            "alert deduplication degraded: Redis did not answer (%s); relying on Prefect's"
            " idempotency keys",
            type(exc).__name__,
        )

    def claim(self, key: str) -> Claim:
        if not self._available():
            return Claim(new=True, degraded=True)
        try:
            held = self._claim(
                keys=[self._key(key)], args=[self._ttl, int(STALE_CLAIM_SECONDS * 1000)]
            )
        except redis.RedisError as exc:
            self._failed(exc)
            return Claim(new=True, degraded=True)
        if held is None:
            return Claim(new=True)
        run_id = str(held)
        return Claim(new=False, flow_run_id=None if run_id.startswith(PENDING) else run_id)

    def wait_for_run(self, key: str, *, timeout: float) -> str | None:
        """The run id a claim in progress gets within `timeout` (None: still none, or released)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                held = self._client.get(self._key(key))
            except redis.RedisError as exc:
                self._failed(exc)
                return None
            if held is None:
                return None
            if not str(held).startswith(PENDING):
                return str(held)
            time.sleep(0.02)
        return None

    def take_over(self, key: str, ended_run_id: str) -> bool:
        """Claim the incident again when its claim still names `ended_run_id` (a run that
        crashed, failed, was cancelled, or completed with its incident open)."""
        if not self._available():
            return True  # degraded: Prefect's idempotency key is the guard
        try:
            return bool(self._take_over(keys=[self._key(key)], args=[ended_run_id, self._ttl]))
        except redis.RedisError as exc:
            self._failed(exc)
            return True

    def remember(self, key: str, flow_run_id: str) -> None:
        if not self._available():
            return
        try:
            self._client.set(self._key(key), flow_run_id, xx=True, keepttl=True)
        except redis.RedisError as exc:
            self._failed(exc)

    def release(self, key: str) -> None:
        """Forget the incident (resolved, or its run could not be started)."""
        if not self._available():
            return
        try:
            self._client.delete(self._key(key))
        except redis.RedisError as exc:
            self._failed(exc)

    def close(self) -> None:
        self._client.close()
