"""The warm executor of `remediate serve`: alert-started runs execute in the serving process.

Prefect's runner starts a process per flow run (about 3 s here to spawn it and import Prefect and
the flows: bench/README.md). For a run an alert starts, `serve` skips that: the receiver creates
the run already Pending (so the runner, which polls Scheduled runs, never takes it) and hands it
to a few daemon threads of this process, where the runbook's modules are already imported.
When they are all busy the run is created Scheduled instead, for the runner. On shutdown, runs
still executing here are marked Crashed, so none is left Running with nothing behind it; their
incidents stay open in the store for the watchdog.

If the process is killed instead (SIGKILL, OOM, power), each run it took carries its owner's tag
(`warm:<host>:<pid>`): the next `serve` on this host sees the owner is gone and hands the run back
to the runner (`recover`), which runs it again from detection. Every runbook detects read-only and
re-reads its plan before acting, so a run again is safe where a run lost is not.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from typing import Any

__all__ = ["WarmExecutor"]

log = logging.getLogger(__name__)
OWNER_PREFIX = "warm:"


def owner_tag() -> str:
    """The tag naming this process as the executor of a run."""
    return f"{OWNER_PREFIX}{socket.gethostname()}:{os.getpid()}"


def _owner(tags: list[str]) -> str:
    """`gone` when the run's owner tag names a process of this host that no longer exists,
    `alive` when it names a live one, `unknown` otherwise (no tag, another host)."""
    for tag in tags:
        if not tag.startswith(OWNER_PREFIX):
            continue
        host, _, pid = tag[len(OWNER_PREFIX) :].rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return "unknown"
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:  # alive, another user's
            return "alive"
        return "alive"
    return "unknown"


class WarmExecutor:
    def __init__(self, *, workers: int = 4) -> None:
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._idle = threading.Semaphore(workers)
        self._active: dict[str, Any] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        for number in range(workers):
            threading.Thread(target=self._work, name=f"warm-run-{number}", daemon=True).start()

    def tag(self) -> str:
        return owner_tag()

    def reserve(self) -> bool:
        """Take a free worker for the next run (False: all busy, let the runner take it)."""
        return not self._stopping.is_set() and self._idle.acquire(blocking=False)

    def release(self) -> None:
        """Give back a worker `reserve()` took for a run that was not created."""
        self._idle.release()

    def submit(self, runbook_id: str, flow_run: Any) -> None:
        """Run `flow_run` (created Pending) of `runbook_id` on the worker `reserve()` took; a run
        handed over before (an idempotent repeat) gives the worker back instead."""
        with self._lock:
            repeat = str(flow_run.id) in self._seen
            self._seen.add(str(flow_run.id))
        if repeat:
            self._idle.release()
            return
        self._jobs.put((runbook_id, flow_run))

    def _work(self) -> None:
        while True:
            runbook_id, flow_run = self._jobs.get()
            with self._lock:
                self._active[str(flow_run.id)] = flow_run
            try:
                self._run(runbook_id, flow_run)
            except BaseException as exc:  # noqa: BLE001 - a run never takes the service down
                log.warning("flow run %s ended with %s", flow_run.id, type(exc).__name__)
            finally:
                with self._lock:
                    self._active.pop(str(flow_run.id), None)
                self._idle.release()

    @staticmethod
    def _run(runbook_id: str, flow_run: Any) -> None:
        from prefect.flow_engine import run_flow_sync

        from remediate.engine import catalogue
        from remediate.engine.prefect_api import run_settings

        flow = catalogue.get(runbook_id).load_flow()
        with run_settings():
            run_flow_sync(
                flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
            )

    @staticmethod
    def recover(deployment_ids: list[Any], *, older_than_seconds: float = 30.0) -> int:
        """Hand back to the runner the alert runs a killed `serve` left behind: they become
        Scheduled again, so every alert answered 202 still gets its run.

        - Pending (created, never executed) or Running (executing when it was killed) with the
          owner tag of a process of this host that is gone: at once;
        - Pending for over `older_than_seconds` with an owner that cannot be checked (another
          host, no tag): a live executor takes its runs within milliseconds, and another
          `serve` may own younger ones. A run recovered once is the runner's from then on.

        A run's owner tag is replaced by `recovered` as it is handed back.

        Returns how many were handed back."""
        from datetime import UTC, datetime, timedelta

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.states import Scheduled

        recovered = 0
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])
                    )
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)),
                limit=200,
            )
            cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
            for flow_run in runs:
                tags = list(flow_run.tags or [])
                if "alert" not in tags:
                    continue
                pending = flow_run.state_type == StateType.PENDING
                since = flow_run.state.timestamp if flow_run.state else flow_run.created
                owner = _owner(tags)
                orphaned = owner == "gone" or (
                    pending
                    and owner == "unknown"
                    and "recovered" not in tags
                    and since is not None
                    and since <= cutoff
                )
                if not orphaned:
                    continue
                # Without its owner's tag, so that the runner's own Pending is left alone.
                client.update_flow_run(
                    flow_run.id,
                    tags=[t for t in tags if not t.startswith(OWNER_PREFIX)] + ["recovered"],
                )
                client.set_flow_run_state(
                    flow_run.id,
                    Scheduled(
                        message="recovered: the serve that took it stopped before running it"
                        if pending
                        else "recovered: the serve running it was killed; runs again from detection"
                    ),
                    force=True,
                )
                recovered += 1
        return recovered

    def stop(self) -> None:
        """Mark the runs still executing here Crashed (the process is going away)."""
        self._stopping.set()
        with self._lock:
            active = list(self._active.values())
        if not active:
            return
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            for flow_run in active:
                try:
                    client.set_flow_run_state(
                        flow_run.id,
                        Crashed(message="remediate serve stopped while this run was executing"),
                        force=True,
                    )
                except Exception as exc:  # noqa: BLE001 - shutting down; say so and go on
                    log.warning("could not mark flow run %s crashed: %s", flow_run.id, exc)
