"""Delivery to an external system: a few tries that never raise, and a thread per channel.

Every integration that tells people something (`slack`, `pagerduty`, `statuspage`, `github`) sends
through `_send` and never raises: it returns a `Delivery` saying what happened. `Notifier` sends
them from a thread per channel, so a failing endpoint delays neither the remediation nor the other
channels; `flush()` waits for what is queued and every attempt ends as a `notified` event in the
incident's timeline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

__all__ = ["Delivery", "Notifier"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Delivery:
    channel: str
    delivered: bool
    detail: str = ""
    url: str | None = None


def _send(
    method: str,
    url: str,
    *,
    attempts: int,
    json: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response | None, str]:
    """The response once it is not worth retrying (success or a 4xx), or None and why."""
    problem = "not attempted"
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.request(method, url, json=json, headers=headers, timeout=5.0)
            if response.status_code < 500 and response.status_code != 429:
                return response, f"HTTP {response.status_code}"
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt < attempts:
            time.sleep(0.5 * attempt)
    return None, problem


Record = Callable[[Delivery], None]


class Notifier:
    """Deliveries in the background, one thread per channel, each result recorded in order."""

    def __init__(self, record: Record) -> None:
        self._record = record
        self._queues: dict[str, queue.Queue[Callable[[], Delivery] | None]] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def send(self, channel: str, deliver: Callable[[], Delivery]) -> None:
        with self._lock:
            if channel not in self._queues:
                self._queues[channel] = queue.Queue()
                thread = threading.Thread(
                    target=self._work, args=(self._queues[channel],), daemon=True
                )
                thread.start()
                self._threads.append(thread)
            self._queues[channel].put(deliver)

    def _work(self, jobs: queue.Queue[Callable[[], Delivery] | None]) -> None:
        while True:
            job = jobs.get()
            try:
                if job is None:
                    return
                try:
                    result = job()
                except Exception as exc:  # noqa: BLE001 - a delivery never raises out
                    result = Delivery(channel="?", delivered=False, detail=type(exc).__name__)
                if not result.delivered:
                    log.warning("%s notification not delivered: %s", result.channel, result.detail)
                try:
                    self._record(result)
                except Exception as exc:  # noqa: BLE001 - the store may be down; keep going
                    log.warning("could not record a %s notification: %s", result.channel, exc)
            finally:
                jobs.task_done()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued delivery is done (True), or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        for jobs in list(self._queues.values()):
            while jobs.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.02)
        return all(not jobs.unfinished_tasks for jobs in self._queues.values())
