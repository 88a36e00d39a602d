"""What every benchmark sets up: a Prefect server on PostgreSQL, the incident store and a target
database of its own, removed afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def url(db: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + f"/{db}"


def create_db(name: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_db(name: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median_of(rounds: int, measure: Callable[[], float]) -> float:
    import statistics

    measure()  # warm-up
    return statistics.median(measure() for _ in range(rounds))


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def expire_unbounded(r: Any, pattern: str, seconds: int) -> None:
    """The bare rate-limiter fix, as an engineer would type it: SCAN the buckets, read their TTLs
    in one pipeline, EXPIRE those without one in another."""
    keys = list(r.scan_iter(match=pattern, count=1000))
    with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.ttl(key)
        ttls = pipe.execute()
    with r.pipeline(transaction=False) as pipe:
        for key, ttl in zip(keys, ttls, strict=True):
            if ttl == -1:
                pipe.expire(key, seconds)
        pipe.execute()


def parallel(n: int, call: Callable[[int], Any], workers: int = 8) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(call, range(n)))


# A multi-worker Prefect server (`--workers N`) needs Redis for its messaging, event ordering and
# lease storage (prefect-redis); the benchmark gives it a Redis database of its own, empty first.
SERVER_REDIS_DB = 9


def server_redis_env() -> dict[str, str]:
    import redis

    r = redis.Redis(host="127.0.0.1", port=6379, db=SERVER_REDIS_DB)
    if r.dbsize():
        sys.exit(f"Redis database {SERVER_REDIS_DB} is not empty: the benchmark uses it alone")
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
        "PREFECT_REDIS_MESSAGING_PORT": "6379",
        "PREFECT_REDIS_MESSAGING_DB": str(SERVER_REDIS_DB),
        # Several workers starting at once race on the schema and the block types: migrate
        # first (below), and register no blocks (the benchmark uses none).
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    }


def start_multi_worker_server(
    port: int, workers: int, home: str, database_url: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **server_redis_env(),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url.replace(
            "postgresql://", "postgresql+asyncpg://", 1
        ),
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    subprocess.run(
        [prefect, "server", "database", "upgrade", "-y"], env=env, check=True, capture_output=True
    )
    command = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=env,
        stdout=(Path(home) / "server.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def drop_server_redis() -> None:
    """Empty the Redis database the multi-worker server used (it was empty before)."""
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=SERVER_REDIS_DB).flushdb()


@contextmanager
def bench_environment(server_workers: int = 1, **env: str) -> Iterator[dict[str, str]]:
    """A Prefect server on PostgreSQL (`server_workers` processes) and the store, both in databases
    of their own; `env` and PREFECT_API_URL set for this process. Yields the names: server, store,
    target."""
    from remediate.engine.prefect_api import start_server, wait_healthy

    home = tempfile.mkdtemp(prefix="bench-")
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"bench_{k}_{suffix}" for k in ("prefect", "store", "target")}
    for name in names.values():
        create_db(name)
    os.environ.update(
        {
            "PREFECT_HOME": home,
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "REMEDIATION_COOLDOWN_SECONDS": "0",
            "REMEDIATION_BUDGET_MAX": "100000",
            "REMEDIATION_DATABASE_URL": url(names["store"]),
            "TARGET_DATABASE_URL": url(names["target"]),
            **env,
        }
    )
    if server_workers > 1:
        server = start_multi_worker_server(port, server_workers, home, url(names["prefect"]))
    else:
        server = start_server(
            port=port,
            log_path=Path(home) / "server.log",
            database_url=url(names["prefect"]),
            ui=False,
        )
    try:
        if not wait_healthy(os.environ["PREFECT_API_URL"], timeout=120, process=server):
            sys.exit("the Prefect server did not start")
        yield {**names, "home": home}
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server_workers > 1:
            drop_server_redis()
        for name in names.values():
            drop_db(name)
