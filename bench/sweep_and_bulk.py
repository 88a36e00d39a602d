"""Benchmarks: bulk remediation plans (thousands of stuck rate-limit buckets; every idle session
the shared server allows, and hundreds on a PostgreSQL server of its own in a container) against
the bare commands, each floor measured in the same run. The health sweep's scaling is
`bench/sweep.py`.

    .venv/bin/python bench/sweep_and_bulk.py [--rounds 3] [--buckets 5000] [--sessions 400]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from common import (
    ADMIN,
    bench_environment,
    expire_unbounded,
    median_of,
    url,
)

import psycopg  # isort: skip
import redis  # isort: skip


def bulk_buckets(n: int, rounds: int) -> tuple[float, float]:
    """rate-limiter repairing `n` stuck buckets in one plan, against SCAN + EXPIRE by hand."""
    from remediate.engine.prefect_api import run_settings
    from remediate.flows.rate_limiter import rate_limiter

    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"bench-bulk-{uuid.uuid4().hex[:6]}:"

    def stuck() -> None:
        with r.pipeline(transaction=False) as pipe:
            for i in range(n):
                pipe.set(f"{prefix}ratelimit:u{i}", 9)
            pipe.execute()

    def bare() -> float:
        stuck()
        started = time.perf_counter()
        expire_unbounded(r, f"{prefix}ratelimit:*", 60)
        return time.perf_counter() - started

    def flow() -> float:
        stuck()
        started = time.perf_counter()
        with run_settings():
            outcome = rate_limiter(
                key_pattern=f"{prefix}ratelimit:*", window_seconds=60, auto_approve=True
            )
        elapsed = time.perf_counter() - started
        assert outcome.status == "resolved", outcome.summary
        assert sum(len(a.targets) for a in outcome.actions) == n
        return elapsed

    try:
        return median_of(rounds, bare), median_of(rounds, flow)
    finally:
        for key in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(key)
        r.close()


def bulk_sessions(admin: str, target_url: str, n: int, rounds: int) -> tuple[float, float]:
    """connection-pool-exhausted terminating `n` idle sessions of `target_url`'s database, against
    one `pg_terminate_backend` over the same pids."""
    from remediate.drills.runner import threshold_below
    from remediate.engine.prefect_api import run_settings
    from remediate.flows.connection_pool_exhausted import connection_pool_exhausted

    database = target_url.rsplit("/", 1)[1]
    os.environ["TARGET_DATABASE_URL"] = target_url

    def open_idle() -> list[psycopg.Connection]:
        conns = [psycopg.connect(target_url, autocommit=True) for _ in range(n)]
        time.sleep(0.1)
        return conns

    def bare() -> float:
        conns = open_idle()
        started = time.perf_counter()
        with psycopg.connect(target_url, autocommit=True) as conn:
            pids = [
                r[0]
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'idle'"
                    " AND pid <> pg_backend_pid()",
                    (database,),
                )
            ]
            conn.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) p", (pids,))
        elapsed = time.perf_counter() - started
        for c in conns:
            c.close()
        return elapsed

    def flow() -> float:
        conns = open_idle()
        limit = threshold_below(n, admin_url=admin)
        started = time.perf_counter()
        with run_settings():
            outcome = connection_pool_exhausted(
                usage_threshold=limit, idle_minutes=0, auto_approve=True, requested_by="bench"
            )
        elapsed = time.perf_counter() - started
        assert outcome.status == "resolved", outcome.summary
        assert len(outcome.actions[0].targets) == n, outcome.actions[0].targets
        for c in conns:
            c.close()
        return elapsed

    return median_of(rounds, bare), median_of(rounds, flow)


def room_for_sessions() -> int:
    """Idle sessions the shared server has room for, leaving some for the server, store, flow."""
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int - (SELECT count(*) FROM"
            " pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    return max(10, int(row[0]) - 15) if row else 50


@contextmanager
def big_server(max_connections: int) -> Iterator[str]:
    """A PostgreSQL server of its own, in a container (`remediate.drills.sandbox.postgres_server`),
    with
    room for hundreds of sessions; yields its admin URL."""
    import docker

    from remediate.drills.sandbox import DOCKER_HOST, IMAGE, free_port, postgres_server, reachable

    engine = docker.DockerClient(base_url=DOCKER_HOST)
    port = free_port()
    server = postgres_server(port, max_connections=max_connections)
    container = engine.containers.run(
        IMAGE, server.pop("command"), detach=True, network_mode="host", **server
    )
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 60
        while not reachable(admin):
            if time.monotonic() > deadline:
                raise SystemExit(f"the container server did not start: {container.logs()[-500:]}")
            time.sleep(0.3)
        yield admin
    finally:
        container.remove(force=True)
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--buckets", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=400)
    args = parser.parse_args()
    env = {
        "REMEDIATION_MAX_BLAST_RADIUS": str(args.buckets * 2),
        "TARGET_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    with bench_environment(**env) as names:
        bare_b, flow_b = bulk_buckets(args.buckets, args.rounds)
        n = room_for_sessions()
        bare_s, flow_s = bulk_sessions(ADMIN, url(names["target"]), n, args.rounds)
        with big_server(args.sessions + 60) as admin:
            big_bare, big_flow = bulk_sessions(admin, admin, args.sessions, args.rounds)
    print(f"\nbulk plans, medians of {args.rounds}")
    print(
        f"  {args.buckets} stuck buckets: bare {bare_b * 1000:8.0f} ms, rate-limiter"
        f" {flow_b * 1000:8.0f} ms ({flow_b / bare_b:.1f} x)"
    )
    for count, b, f in ((n, bare_s, flow_s), (args.sessions, big_bare, big_flow)):
        print(
            f"  {count} idle sessions: bare {b * 1000:8.0f} ms, connection-pool-exhausted"
            f" {f * 1000:8.0f} ms ({f / b:.1f} x)"
        )


if __name__ == "__main__":
    main()
