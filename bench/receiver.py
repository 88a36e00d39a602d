"""Benchmark: the alert receiver's throughput and alert-to-verified-fix latency, each against its
floor measured in the same run.

- storm: N identical Alertmanager alerts from C client threads to a receiver process (real Redis,
  store, Prefect server on PostgreSQL) against the bare Redis `SET NX` the deduplication does;
- distinct: M alerts for M different databases, each starting a run, against bare
  `create_flow_run_from_deployment` calls (what starting a run costs on this Prefect server);
- latency: `remediate serve` with an auto-approve rule for rate-limiter; per round a key prefix of
  its own fills with rate-limit buckets without a TTL, an Alertmanager alert is POSTed, and the
  clock stops when the store says the incident is resolved (verified). Against the bare Redis
  commands of the same fix (SCAN, TTL, EXPIRE, SCAN again).

    .venv/bin/python bench/receiver.py [--storm 2000] [--distinct 200] [--rounds 5]
    .venv/bin/python bench/receiver.py --workers   # the latency through the production layout
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import redis  # noqa: E402
from common import bench_environment, expire_unbounded, free_port  # noqa: E402

TOKEN = "bench-token-0123456789"
ALERT = json.loads((ROOT / "tests" / "fixtures" / "alerts" / "alertmanager.json").read_text())
THREADS = 32


def alert(database: str, *, status: str = "firing", starts_at: str | None = None) -> bytes:
    payload = json.loads(json.dumps(ALERT))
    payload["status"] = payload["alerts"][0]["status"] = status
    payload["alerts"][0]["labels"]["datname"] = database
    if starts_at:
        payload["alerts"][0]["startsAt"] = starts_at
    return json.dumps(payload).encode()


def wait_http(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{address}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    sys.exit(f"{address} did not start:\n{log.read_text()[-2000:]}")


def rate(n: int, call: Callable[[int], object]) -> float:
    """Calls per second of `call(i)` for i < n from THREADS threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(call, range(n)))
    return n / (time.perf_counter() - started)


def storm_with_wrk(address: str, body: bytes, home: str) -> dict[str, float]:
    """Identical alerts for 10 s from wrk (C, 2 threads, 32 connections), which costs the two
    cores far less than Python clients: requests, rate, and the runs they started (must be 1)."""
    import re
    import shutil

    if shutil.which("wrk") is None:
        print("wrk not found (Debian package `wrk`): the wrk storm is skipped", flush=True)
        return {}
    (Path(home) / "body.json").write_bytes(body)
    script = Path(home) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{Path(home) / "body.json"}", "r")\n'
        "wrk.body = f:read('*a')\nf:close()\n"
    )
    before = httpx.get(f"{address}/metrics").text
    out = subprocess.run(
        ["wrk", "-t2", "-c32", "-d10s", "-s", str(script), f"{address}/alerts/alertmanager"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = httpx.get(f"{address}/metrics").text

    def counter(text: str, name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "wrk_requests": requests,
        "wrk_rate": float(re.search(r"Requests/sec:\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "wrk_runs": counter(after, "remediate_runs_started_total")
        - counter(before, "remediate_runs_started_total"),
        "wrk_non_2xx": float(m.group(1)) if (m := re.search(r"Non-2xx.*?(\d+)", out)) else 0.0,
    }


def receiver_process(
    home: str, port: int, name: str = "receiver"
) -> tuple[subprocess.Popen[bytes], Path]:
    """The receiver alone (uvicorn, one process), as `remediate serve` runs it."""
    code = (
        "import uvicorn; from remediate.domain.settings import load_settings;"
        " from remediate.receiver import create_app;"
        f" uvicorn.run(create_app(load_settings()), host='127.0.0.1', port={port},"
        " log_level='warning')"
    )
    log = Path(home) / f"{name}.log"
    # The benchmark's databases exist nowhere: a route of its own names them as targets (an
    # alert may only name configured ones).
    routes = Path(home) / "bench-routes.yaml"
    routes.write_text(
        json.dumps(
            {
                "routes": [
                    {
                        "runbook": "connection-pool-exhausted",
                        "match": {"name": "PostgresqlTooManyConnections"},
                        "parameters": {"database": "$labels.datname"},
                        "targets": ["~bench_.*"],
                    }
                ]
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "ALERT_ROUTES_FILE": str(routes)},
    )
    return process, log


def throughput(args: argparse.Namespace, home: str, prefix: str) -> dict[str, float]:
    from prefect.client.orchestration import get_client

    from remediate.engine import catalogue

    deployment = (
        catalogue.get("connection-pool-exhausted")
        .load_flow()
        .to_deployment(name="connection-pool-exhausted")
        .apply()
    )
    port = free_port()
    process, log = receiver_process(home, port)
    address = f"http://127.0.0.1:{port}"
    try:
        wait_http(address, process, log)
        client = httpx.Client(
            base_url=address,
            headers={"Authorization": f"Bearer {TOKEN}"},
            limits=httpx.Limits(max_connections=THREADS),
        )
        # Warm up: imports, the deployment lookup, the store's connection.
        client.post("/alerts/alertmanager", content=alert("bench_warm"))

        storm_body = alert("bench_storm")
        answers: list[dict[str, Any]] = []
        lock = threading.Lock()

        def post_storm(_: int) -> None:
            answer = client.post("/alerts/alertmanager", content=storm_body).json()
            with lock:
                answers.append(answer)

        storm = rate(args.storm, post_storm)
        runs = sum(a["accepted"] for a in answers)
        assert runs == 1 and sum(a["deduplicated"] for a in answers) == args.storm - 1, answers[:3]

        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")

        def set_nx(i: int) -> None:
            r.set(f"{prefix}floor:{i % 7}", "x", nx=True, ex=60)

        floor_storm = rate(args.storm, set_nx)
        wrk_storm = storm_with_wrk(address, alert("bench_wrk_storm"), home)

        def post_distinct(i: int) -> None:
            answer = client.post(
                "/alerts/alertmanager", content=alert(f"bench_d{i}_{uuid.uuid4().hex[:6]}")
            ).json()
            assert answer["accepted"] == 1, answer

        distinct = rate(args.distinct, post_distinct)

        with get_client(sync_client=True) as prefect:

            def create_run(i: int) -> None:
                prefect.create_flow_run_from_deployment(
                    deployment, parameters={"database": f"bench_floor_{i}"}
                )

            floor_distinct = rate(args.distinct, create_run)
            while runs := prefect.read_flow_runs(limit=200):
                for run in runs:  # nothing of this part is left for the runner
                    prefect.delete_flow_run(run.id)
        client.close()
        r.close()
    finally:
        process.terminate()
        process.wait(timeout=20)
    return {
        **wrk_storm,
        "storm": storm,
        "floor_storm": floor_storm,
        "distinct": distinct,
        "floor_distinct": floor_distinct,
    }


def runs_of(deployment: UUID) -> list[str]:
    """The `database` parameter of every flow run of `deployment` on the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    chosen = DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
    found: list[str] = []
    with get_client(sync_client=True) as prefect:
        while page := prefect.read_flow_runs(
            deployment_filter=chosen, limit=200, offset=len(found)
        ):
            found += [str(run.parameters.get("database")) for run in page]
    return found


def delete_runs(deployment: UUID) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    chosen = DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
    with get_client(sync_client=True) as prefect:
        while page := prefect.read_flow_runs(deployment_filter=chosen, limit=200):
            for run in page:
                prefect.delete_flow_run(run.id)


def storm_client(address: str) -> httpx.Client:
    return httpx.Client(
        base_url=address,
        headers={"Authorization": f"Bearer {TOKEN}"},
        limits=httpx.Limits(max_connections=THREADS),
        timeout=60,
    )


def post_until_taken(client: httpx.Client, content: bytes) -> int:
    """Post an alert, retrying a 503 as Alertmanager would; how many retries it took."""
    for retried in range(50):
        answer = client.post("/alerts/alertmanager", content=content)
        if answer.status_code == 202:
            assert answer.json()["accepted"] == 1, answer.text
            return retried
        assert answer.status_code == 503, answer.text
        time.sleep(0.2)
    raise AssertionError("an alert refused 50 times")


def runs_storm(args: argparse.Namespace, home: str) -> dict[str, Any]:
    """`--distinct` alerts for as many databases at once (every one a new incident), through one
    receiver and through two (alternating), against bare `create_flow_run_from_deployment` calls
    on the same server before and after. A 503 is retried as Alertmanager would; afterwards the
    server must hold exactly one run per database: none lost, none twice."""
    from prefect.client.orchestration import get_client

    from remediate.engine import catalogue

    deployment = (
        catalogue.get("connection-pool-exhausted")
        .load_flow()
        .to_deployment(name="connection-pool-exhausted")
        .apply()
    )
    ports = [free_port(), free_port()]
    started = [receiver_process(home, port, f"receiver-{i}") for i, port in enumerate(ports)]
    addresses = [f"http://127.0.0.1:{port}" for port in ports]
    clients = [storm_client(address) for address in addresses]
    results: dict[str, Any] = {"retried": 0}
    lock = threading.Lock()

    def floor(label: str) -> None:
        with get_client(sync_client=True) as prefect:

            def create_run(i: int) -> None:
                prefect.create_flow_run_from_deployment(
                    deployment, parameters={"database": f"bench_floor_{label}_{i}"}
                )

            results[f"floor_{label}"] = rate(args.distinct, create_run)
        delete_runs(deployment)

    def through(label: str, chosen: list[httpx.Client]) -> None:
        tag = uuid.uuid4().hex[:6]
        databases = [f"bench_s{tag}_{i}" for i in range(args.distinct)]

        def post(i: int) -> None:
            retried = post_until_taken(chosen[i % len(chosen)], alert(databases[i]))
            with lock:
                results["retried"] += retried

        results[label] = rate(args.distinct, post)
        created = runs_of(deployment)
        lost = set(databases) - set(created)
        twice = len(created) - len(set(created))
        assert not lost and not twice, f"{label}: {len(lost)} lost, {twice} twice"
        results[f"{label}_runs"] = len(created)
        delete_runs(deployment)

    try:
        for (process, log), address, client in zip(started, addresses, clients, strict=True):
            wait_http(address, process, log)
            client.post("/alerts/alertmanager", content=alert(f"bench_warm_{address[-5:]}"))
        delete_runs(deployment)
        floor("before")
        through("one", clients[:1])
        through("two", clients)
        floor("after")
    finally:
        for client in clients:
            client.close()
        for process, _ in started:
            process.terminate()
            process.wait(timeout=20)
    return results


def report_runs_storm(args: argparse.Namespace, s: dict[str, Any]) -> None:
    print(
        f"\n{args.distinct} distinct alerts at once (a new incident each), {THREADS} client"
        f" threads, a Prefect server of {args.server_workers} process(es)"
    )
    names = {
        "floor_before": "bare create_flow_run, before",
        "one": "through one receiver",
        "two": "through two receivers",
        "floor_after": "bare create_flow_run, after",
    }
    for label, name in names.items():
        runs = f"   {s[label + '_runs']} runs, none lost or twice" if label + "_runs" in s else ""
        print(f"  {name:32s} {s[label]:7.1f} runs/s{runs}")
    floor = (s["floor_before"] + s["floor_after"]) / 2
    print(
        f"  receivers / floor: one {s['one'] / floor:.2f}, two {s['two'] / floor:.2f};"
        f" 503s retried: {s['retried']}"
    )


def stuck_buckets(r: redis.Redis, prefix: str, n: int) -> None:
    """The incident of seed 002 §4: rate-limit counters written without a TTL."""
    with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.set(f"{prefix}ratelimit:user:{i}", 7)
        pipe.execute()


def bare_fix(r: redis.Redis, prefix: str, window: int) -> float:
    """What an engineer would type: SCAN the buckets, EXPIRE those without a TTL, SCAN again."""
    started = time.perf_counter()
    expire_unbounded(r, f"{prefix}ratelimit:*", window)
    left = [k for k in r.scan_iter(match=f"{prefix}ratelimit:*", count=1000) if r.ttl(k) == -1]
    assert not left
    return time.perf_counter() - started


def rate_limiter_routes(home: Path, prefix: str) -> Path:
    """A routes file sending the stuck-bucket alert to rate-limiter on this run's keys."""
    routes = home / "routes.yaml"
    rule = {
        "runbook": "rate-limiter",
        "match": {"name": "RedisRateLimitStuck"},
        "parameters": {"key_pattern": f"{prefix}ratelimit:*", "window_seconds": 60},
    }
    routes.write_text(json.dumps({"routes": [rule]}))
    return routes


def closed_incident(store: Any, run_id: str, *, what: str, log: Path) -> Any:
    """The incident of `run_id` once its run closed it (exits after 120 s)."""
    deadline = time.monotonic() + 120
    while True:
        incident = store.incident_for_flow_run(run_id)
        if incident is not None and incident.closed_at is not None:
            return incident
        if time.monotonic() > deadline:
            sys.exit(f"{what}: no verified fix in 120 s; see {log}")
        time.sleep(0.01)


def latency(args: argparse.Namespace, home: str, prefix: str) -> tuple[list[float], list[float]]:
    """rate-limiter, auto-approved, through `remediate serve`: alert to verified fix."""
    from pydantic import SecretStr

    from remediate.store.database import Store

    routes = rate_limiter_routes(Path(home), prefix)
    env = {
        **os.environ,
        "ALERT_ROUTES_FILE": str(routes),
        "AUTO_APPROVE": "rate-limiter:*:*",
        "TARGET_REDIS_URL": "redis://127.0.0.1:6379/0",
        "SWEEP_INTERVAL_SECONDS": "3600",
        "REMEDIATE_HOME": home,
    }
    processes, address, log = (start_workers if args.workers else start_serve)(env, home)
    store = Store.open(SecretStr(os.environ["REMEDIATION_DATABASE_URL"]))
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    flow_times: list[float] = []
    bare_times: list[float] = []
    phases: list[dict[str, float]] = []
    try:
        wait_http(address, processes[-1], log)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        body = json.loads(json.dumps(ALERT))
        body["alerts"][0]["labels"] = {"alertname": "RedisRateLimitStuck", "severity": "warning"}
        for round_ in range(args.rounds + 1):  # round 0 warms the runner and the server
            stuck_buckets(r, prefix, args.buckets)
            bare_times.append(bare_fix(r, prefix, 60))
            for key in r.scan_iter(match=f"{prefix}ratelimit:*", count=1000):
                r.delete(key)
            stuck_buckets(r, prefix, args.buckets)
            body["status"] = body["alerts"][0]["status"] = "firing"
            body["alerts"][0]["startsAt"] = f"2026-01-01T00:00:{round_:02d}Z"
            started = time.perf_counter()
            answer = httpx.post(
                f"{address}/alerts/alertmanager", content=json.dumps(body), headers=headers
            ).json()
            [run_id] = answer["flow_run_ids"]
            incident = closed_incident(store, run_id, what=f"round {round_}", log=log)
            flow_times.append(time.perf_counter() - started)
            assert incident.status == "resolved", incident.status
            if args.workers:
                phases.append(run_phases(run_id, incident.opened_at, incident.closed_at))
            assert not [k for k in r.scan_iter(match=f"{prefix}ratelimit:*") if r.ttl(k) == -1]
            body["status"] = body["alerts"][0]["status"] = "resolved"
            httpx.post(f"{address}/alerts/alertmanager", content=json.dumps(body), headers=headers)
            for key in r.scan_iter(match=f"{prefix}ratelimit:*", count=1000):
                r.delete(key)
            print(
                f"round {round_}: bare {bare_times[-1] * 1000:7.1f} ms   alert to verified fix"
                f" {flow_times[-1] * 1000:7.1f} ms",
                flush=True,
            )
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        r.close()
    if phases:
        print("\nwhere the time goes through a worker, p50 of the rounds (warm-up excluded):")
        for name in phases[0]:
            print(f"  {name:48s} {statistics.median(p[name] for p in phases[1:]) * 1000:8.0f} ms")
    return bare_times[1:], flow_times[1:]


def run_phases(run_id: str, opened: datetime, closed: datetime | None) -> dict[str, float]:
    """The run's way through a worker, from its Prefect states and its incident's times."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        states = prefect.read_flow_run_states(UUID(run_id))
    first = {}
    for state in sorted(states, key=lambda st: st.timestamp):
        first.setdefault(state.type.value, state.timestamp)
    created, pending, running = first["SCHEDULED"], first["PENDING"], first["RUNNING"]
    assert closed is not None
    return {
        "created -> taken by the worker (its poll)": (pending - created).total_seconds(),
        "taken -> running (a process, its imports)": (running - pending).total_seconds(),
        "running -> incident detected (imports, detection)": (opened - running).total_seconds(),
        "detected -> verified fix": (closed - opened).total_seconds(),
    }


REMEDIATE = str(Path(sys.executable).with_name("remediate"))


def start_serve(env: dict[str, str], home: str) -> tuple[list[subprocess.Popen[bytes]], str, Path]:
    """`remediate serve`: runs executed by its warm executor."""
    port = free_port()
    log = Path(home) / "serve.log"
    process = subprocess.Popen(
        [REMEDIATE, "serve", "--port", str(port)],
        env=env,
        cwd=home,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    return [process], f"http://127.0.0.1:{port}", log


def start_workers(
    env: dict[str, str], home: str
) -> tuple[list[subprocess.Popen[bytes]], str, Path]:
    """The production layout: `remediate deploy` into a process pool, one `remediate worker`
    polling every second, one `remediate receive`."""
    pool = f"bench-{uuid.uuid4().hex[:6]}"
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    prefect = str(Path(sys.executable).with_name("prefect"))
    for command in (
        [prefect, "work-pool", "create", pool, "--type", "process"],
        [REMEDIATE, "deploy", "--pool", pool],
    ):
        subprocess.run(command, env=env, cwd=home, check=True, capture_output=True)
    port = free_port()
    log = Path(home) / "receive.log"
    worker = subprocess.Popen(
        [REMEDIATE, "worker", "--pool", pool],
        env=env,
        cwd=home,
        stdout=(Path(home) / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    receiver = subprocess.Popen(
        [REMEDIATE, "receive", "--port", str(port)],
        env={**env, "RECEIVER_PUBLIC_URL": f"http://127.0.0.1:{port}"},
        cwd=home,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    return [worker, receiver], f"http://127.0.0.1:{port}", log


def run(args: argparse.Namespace, home: str, prefix: str) -> None:
    if args.runs_storm:
        report_runs_storm(args, runs_storm(args, home))
        return
    if args.workers:
        b, f = latency(args, home, prefix)
        print(
            f"\nalert to verified fix through one worker, {args.rounds} rounds (warm-up excluded)"
        )
        print(f"  bare commands of the fix   p50 {statistics.median(b) * 1000:8.1f} ms")
        print(
            f"  through remediate worker   p50 {statistics.median(f) * 1000:8.1f} ms"
            f"   max {max(f) * 1000:.1f} ms (PREFECT_WORKER_QUERY_SECONDS=1)"
        )
        return
    t = throughput(args, home, prefix)
    print(f"throughput: {t}", flush=True)
    b, f = latency(args, home, prefix)
    print(f"\nreceiver on this machine ({THREADS} client threads; figures in alerts per second)")
    print(
        f"  storm of {args.storm} identical alerts   {t['storm']:8.0f}/s  -> 1 run"
        f"   (bare Redis SET NX {t['floor_storm']:8.0f}/s; ratio"
        f" {t['floor_storm'] / t['storm']:.1f} x)"
    )
    if "wrk_rate" in t:
        print(
            f"  wrk, 10 s of identical alerts: {t['wrk_requests']:.0f} requests,"
            f" {t['wrk_rate']:.0f}/s, {t['wrk_runs']:.0f} run(s) started,"
            f" {t['wrk_non_2xx']:.0f} non-2xx"
        )
    print(
        f"  {args.distinct} distinct alerts, a run each  {t['distinct']:8.0f}/s"
        f"   (bare create_flow_run {t['floor_distinct']:8.0f}/s; ratio"
        f" {t['floor_distinct'] / t['distinct']:.1f} x)"
    )
    p50_f, p50_b = statistics.median(f), statistics.median(b)
    print(
        f"\nalert to verified fix: rate-limiter, {args.buckets} stuck buckets, {args.rounds}"
        " rounds"
        " (warm-up excluded)"
    )
    print(f"  bare commands of the fix   p50 {p50_b * 1000:8.1f} ms")
    print(f"  through remediate serve    p50 {p50_f * 1000:8.1f} ms   max {max(f) * 1000:.1f} ms")
    print(f"  orchestration share        {(p50_f - p50_b) / p50_f:8.0%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storm", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--buckets", type=int, default=200)
    parser.add_argument(
        "--workers", action="store_true", help="only the latency, through a worker and a receiver"
    )
    parser.add_argument(
        "--runs-storm",
        action="store_true",
        help="only the storm of distinct alerts, through one and two receivers",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="processes of the Prefect server (more than 1 needs Redis messaging: prefect-redis)",
    )
    args = parser.parse_args()

    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with bench_environment(
        args.server_workers, ALERT_WEBHOOK_TOKEN=TOKEN, REMEDIATION_REDIS_PREFIX=prefix
    ) as names:
        try:
            run(args, names["home"], prefix)
        finally:
            r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
            for key in r.scan_iter(match=f"{prefix}*"):
                r.delete(key)


if __name__ == "__main__":
    main()
