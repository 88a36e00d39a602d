"""`remediate worker`: Prefect's own process worker, stopped cleanly by SIGTERM.

`prefect worker start` answers SIGTERM by forwarding SIGINT to its runs and polling on, so a
service manager's stop ends in SIGKILL and a run waiting for its approval is lost
(PREFECT-NOTES.md). This runs the same `ProcessWorker` in-process and, on SIGTERM or Ctrl-C,
drains it:

1. it takes no new run at once (its capacity goes to zero; the pool's other workers take them);
2. the runs executing here get `--drain-seconds` to finish;
3. a run still executing then (typically one waiting for an approval) is handed back: its process
   is stopped, its incident is closed as `handed-back` (its lease released, so it is not declared
   lost), and the flow run is set Scheduled again, so another worker runs it from detection (read
   only) and asks for a fresh approval of a fresh plan;
4. the worker exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from remediate.domain.settings import Settings

__all__ = ["run_worker", "runs_under"]

log = logging.getLogger(__name__)


def _say(text: str) -> None:
    print(f"remediate worker: {text}", file=sys.stderr, flush=True)


def runs_under(me: int | None = None) -> dict[str, int]:
    """{flow run id: pid} of the flow-run processes under process `me` (this one by default),
    read from /proc: each has PREFECT__FLOW_RUN_ID in its environment."""
    me = me or os.getpid()
    children: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[int(entry.name)] = ppid

    def below_me(pid: int) -> bool:
        seen = 0
        while pid in children and seen < 64:
            pid, seen = children[pid], seen + 1
            if pid == me:
                return True
        return False

    found: dict[str, int] = {}
    for pid in children:
        if pid == me or not below_me(pid):
            continue
        try:
            environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"PREFECT__FLOW_RUN_ID="):
                run_id = item.split(b"=", 1)[1].decode()
                # The outermost process of a run (a run may start helpers of its own).
                if run_id not in found or not below_me(found[run_id]) or pid < found[run_id]:
                    found.setdefault(run_id, pid)
    return found


def _hand_back(settings: Settings, flow_run_id: str) -> None:
    """Close the stopped execution's incident as handed back and schedule the run again."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from remediate.store.database import Store, StoreUnavailable

    try:
        store = Store.open(settings.remediation_database_url)
        incident = store.incident_for_flow_run(flow_run_id)
        if incident is not None and incident.closed_at is None:
            store.record(
                incident.id,
                "handed-back",
                actor="remediate",
                detail="the worker executing this run was stopped (SIGTERM) before the run"
                " ended; nothing more is done under this incident: the run executes again on"
                " another worker, from detection, and asks again for any approval",
            )
            store.close_incident(incident.id, status="handed-back")
        store.release_run_leases(flow_run_id)  # stopped while detecting too: nothing lost
        store.close()
    except StoreUnavailable as exc:
        _say(f"the incident of flow run {flow_run_id} could not be closed: {exc}")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            UUID(flow_run_id),
            Scheduled(message="handed back: the worker executing it was stopped; runs again"),
            force=True,
        )


async def _drain(settings: Settings, worker: object, task: asyncio.Task[None], grace: float) -> int:
    limiter = getattr(worker, "_limiter", None)
    if limiter is not None:
        limiter.total_tokens = 0  # no new run from now on
    running = runs_under()
    _say(f"stopping: taking no new run; {len(running)} run(s) executing get {grace:g} s to finish")
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        running = runs_under()
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:  # a group of its own: its helpers go with it
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    ended = time.monotonic() + 10
    while runs_under() and time.monotonic() < ended:
        await asyncio.sleep(0.2)
    task.cancel()  # the worker's own loops; its last word on the runs comes before ours
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    for flow_run_id in running:
        try:
            await asyncio.to_thread(_hand_back, settings, flow_run_id)
            _say(f"flow run {flow_run_id} handed back to the pool")
        except Exception as exc:  # noqa: BLE001 - say which run needs a person
            _say(f"flow run {flow_run_id} could not be handed back: {exc}")
    return 0


async def _run(settings: Settings, *, pool: str, name: str | None, limit: int, drain: float) -> int:
    from prefect.workers.process import ProcessWorker

    worker = ProcessWorker(work_pool_name=pool, name=name, limit=limit)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    task = asyncio.create_task(worker.start(printer=_say))
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        stop.cancel()
        exc = task.exception()
        if exc is not None:
            _say(f"the worker stopped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            return 1
        return 0
    code = await _drain(settings, worker, task, drain)
    _say("stopped")
    return code


def run_worker(
    settings: Settings, *, pool: str, name: str | None, limit: int, drain_seconds: float
) -> int:
    return asyncio.run(_run(settings, pool=pool, name=name, limit=limit, drain=drain_seconds))
