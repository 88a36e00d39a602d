"""Benchmark: connection-pool-exhausted end to end against the bare SQL it runs, in one run.

For each round a sandbox database gets N idle sessions; then
- bare: the same detection, termination and verification as plain psycopg calls (the floor);
- flow: the runbook, auto-approved, on a PostgreSQL-backed Prefect server started here, with the
  incident store, the safety envelope and the timeline it always keeps.
Prints medians, the flow/bare ratio, the orchestration overhead and the overhead per task.

    .venv/bin/python bench/connection_pool.py [--rounds 7] [--sessions 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import ADMIN, bench_environment, url

import psycopg  # isort: skip

TASKS_PER_RUN = 5  # read-activity x3 (detect, re-check, verify), terminate, probe


def open_idle(db: str, n: int) -> list[psycopg.Connection]:
    conns = [
        psycopg.connect(url(db), autocommit=True, application_name="bench-pool") for _ in range(n)
    ]
    time.sleep(0.05)
    return conns


def bare(db: str) -> float:
    """What an engineer would type: read, terminate the idle ones, wait, re-read, probe."""
    started = time.perf_counter()
    with psycopg.connect(url(db), autocommit=True) as conn:
        conn.execute("SELECT current_setting('max_connections')::int").fetchone()
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'idle'"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (db,),
        ).fetchall()
        pids = [r[0] for r in rows]
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchone()[0]:
            time.sleep(0.02)
        conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
    with psycopg.connect(url(db), autocommit=True) as probe:
        probe.execute("SELECT 1").fetchone()
    return time.perf_counter() - started


def task_overhead(n: int = 20, rounds: int = 5) -> float:
    """Seconds one sync task adds to a flow: (flow with n no-op tasks - empty flow) / n."""
    from prefect import flow, task
    from prefect.cache_policies import NONE

    @task(cache_policy=NONE)
    def noop() -> None:
        return None

    @flow
    def empty() -> None:
        return None

    @flow
    def tasks() -> None:
        for _ in range(n):
            noop()

    def timed(f: object) -> float:
        started = time.perf_counter()
        f()  # type: ignore[operator]
        return time.perf_counter() - started

    timed(empty), timed(tasks)  # warm-up
    with_tasks = statistics.median(timed(tasks) for _ in range(rounds))
    without = statistics.median(timed(empty) for _ in range(rounds))
    return (with_tasks - without) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()

    with bench_environment() as names:
        target_db = names["target"]
        from remediate.drills.runner import threshold_below
        from remediate.engine.prefect_api import run_settings

        settings = run_settings()  # once per process, as `remediate run` does
        settings.__enter__()
        from remediate.flows.connection_pool_exhausted import connection_pool_exhausted

        bare_times, flow_times = [], []
        for round_ in range(args.rounds + 1):  # round 0 warms imports, store and server
            conns = open_idle(target_db, args.sessions)
            bare_times.append(bare(target_db))
            for c in conns:
                c.close()
            conns = open_idle(target_db, args.sessions)
            limit = threshold_below(args.sessions, admin_url=ADMIN)
            started = time.perf_counter()
            with run_settings():
                outcome = connection_pool_exhausted(
                    usage_threshold=limit, idle_minutes=0, auto_approve=True, requested_by="bench"
                )
            flow_times.append(time.perf_counter() - started)
            terminated = len(outcome.actions[0].targets) if outcome.actions else 0
            assert outcome.status == "resolved" and terminated == args.sessions, outcome.summary
            for c in conns:
                c.close()
            print(
                f"round {round_}: bare {bare_times[-1] * 1000:7.1f} ms   "
                f"flow {flow_times[-1] * 1000:7.1f} ms",
                flush=True,
            )
        b = statistics.median(bare_times[1:])
        f = statistics.median(flow_times[1:])
        print(
            f"\nconnection-pool-exhausted, {args.sessions} idle sessions, {args.rounds} rounds"
            " (medians, warm-up excluded)"
        )
        print(f"  bare SQL                 {b * 1000:8.1f} ms")
        print(f"  flow (auto-approved)     {f * 1000:8.1f} ms")
        print(f"  ratio flow/bare          {f / b:8.1f} x")
        print(f"  orchestration overhead   {(f - b) * 1000:8.1f} ms  (goal < 500 ms)")
        per_task = task_overhead()
        print(f"  per task (no-op task)    {per_task * 1000:8.1f} ms  (goal < 15 ms)")
        print(
            f"  {TASKS_PER_RUN} tasks of the runbook   {per_task * TASKS_PER_RUN * 1000:8.1f} ms;"
            " the rest: flow run, plan artifact, store writes"
        )


if __name__ == "__main__":
    main()
