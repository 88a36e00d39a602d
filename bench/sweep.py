"""Benchmark: health-sweep over 1, 50 and 200 target databases (issue "Past one machine").

A Prefect server on PostgreSQL and the store (`bench/common.py`), and 199 extra databases on the
same PostgreSQL server; per size, `health-sweep` with its three database runbooks
(connection-pool-exhausted, database-connection-errors, rls-auth-failure) and no runs started,
medians of `--rounds` after a warm-up. While each sweep runs, a sampler reads pg_stat_activity
every few milliseconds and keeps the most connections the product held at once: to the target
databases (`remediate:postgres`) and to the store (`remediate:store`). Baseline in the same run:
the sweep of one database; the goals are 50 databases within 5 x that, 200 inside one sweep
interval, and connections to the server bounded by SWEEP_CONNECTIONS_PER_SERVER.

    .venv/bin/python bench/sweep.py [--rounds 5] [--sizes 1,50,200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid

from common import ADMIN, bench_environment, create_db, drop_db

import psycopg  # isort: skip

SWEPT = ["connection-pool-exhausted", "database-connection-errors", "rls-auth-failure"]

_HELD = """
SELECT count(*) FILTER (WHERE application_name = 'remediate:postgres'),
       count(*) FILTER (WHERE application_name = 'remediate:store')
FROM pg_stat_activity
"""


class Sampler:
    """The most product connections seen at once on the server while the block runs."""

    def __init__(self) -> None:
        self.targets = 0
        self.store = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(_HELD).fetchone()
                assert row is not None
                self.targets = max(self.targets, int(row[0]))
                self.store = max(self.store, int(row[1]))
                time.sleep(0.003)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def sweep(databases: list[str]) -> tuple[float, Sampler]:
    from remediate.flows.health_sweep import health_sweep

    with Sampler() as held:
        started = time.perf_counter()
        report = health_sweep(runbooks=SWEPT, databases=databases, start_runs=False)
        elapsed = time.perf_counter() - started
    statuses = {c.status for c in report.checks}
    assert len(report.checks) == len(SWEPT) * (len(databases) + 1), len(report.checks)
    assert statuses == {"healthy"}, [c for c in report.checks if c.status != "healthy"][:3]
    return elapsed, held


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="1,50,200")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    with bench_environment():
        from remediate.domain.settings import load_settings
        from remediate.engine.prefect_api import run_settings

        settings = load_settings()
        extra = [f"bench_sweep_{uuid.uuid4().hex[:6]}_{i}" for i in range(max(sizes) - 1)]
        for name in extra:
            create_db(name)
        results: dict[int, tuple[float, int, int]] = {}
        try:
            with run_settings():
                for n in sizes:
                    sweep(extra[: n - 1])  # warm-up
                    rounds = [sweep(extra[: n - 1]) for _ in range(args.rounds)]
                    seconds = statistics.median(r[0] for r in rounds)
                    results[n] = (
                        seconds,
                        max(r[1].targets for r in rounds),
                        max(r[1].store for r in rounds),
                    )
                    print(f"sweep of {n:3d} database(s): {seconds * 1000:8.0f} ms", flush=True)
        finally:
            for name in extra:
                drop_db(name)
    one = results[sizes[0]][0]
    print(
        f"\nhealth-sweep, {len(SWEPT)} database runbooks per database, medians of {args.rounds};"
        f" SWEEP_CONCURRENCY={settings.sweep_concurrency},"
        f" SWEEP_CONNECTIONS_PER_SERVER={settings.sweep_connections_per_server},"
        f" SWEEP_INTERVAL_SECONDS={settings.sweep_interval_seconds}"
    )
    print("  databases   checks    median   x one   most connections held: targets / store")
    for n, (seconds, targets, store) in results.items():
        print(
            f"  {n:9d} {n * len(SWEPT):8d} {seconds * 1000:7.0f} ms {seconds / one:6.1f} x"
            f"   {targets:3d} / {store}"
        )
    if 50 in results:
        print(f"  50 databases: {results[50][0] / one:.1f} x one (goal: within 5 x)")
    if 200 in results:
        share = results[200][0] / settings.sweep_interval_seconds
        print(f"  200 databases: {share:.1%} of one sweep interval (goal: inside it)")


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    main()
