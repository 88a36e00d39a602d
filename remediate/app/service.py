"""`remediate serve`: the whole product in one process on one machine.

- a Prefect server: `PREFECT_API_URL` when the user has one, else a local one on 127.0.0.1:4200
  (embedded SQLite), started as this process's child and stopped with it;
- every deployment served from this process (runbooks on demand, `health-sweep` and the
  `incident-watchdog` on their schedules), each run a subprocess of the runner; a run an alert
  starts executes at once in this process instead (`remediate/app/warm.py`), while a worker is free;
- the alert receiver (uvicorn) on `--host`/`--port`.

Ctrl-C (or SIGTERM) stops the receiver, then the runner, then the server it started. When no
`ALERT_WEBHOOK_TOKEN` is set, a random one is made once and kept in `~/.remediate/` (mode 0600);
likewise the key that signs approval links. Neither is ever printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from remediate.domain.settings import ConfigError, Settings, load_settings

__all__ = ["local_secret", "serve"]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def local_secret(name: str) -> str:
    """A random secret kept in the product's state folder, made the first time it is asked for."""
    from remediate.engine.prefect_api import STATE_DIR, private_dir

    private_dir(STATE_DIR)
    path = STATE_DIR / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _prepare_environment(host: str, port: int) -> Path | None:
    """Settings the runs (subprocesses) share with the receiver; the token file's path if made."""
    from remediate.engine.prefect_api import STATE_DIR

    made = None
    if not os.environ.get("ALERT_WEBHOOK_TOKEN") and not os.environ.get("SENTRY_CLIENT_SECRET"):
        os.environ["ALERT_WEBHOOK_TOKEN"] = local_secret("alert-webhook-token")
        made = STATE_DIR / "alert-webhook-token"
    if not os.environ.get("APPROVAL_LINK_SECRET"):
        os.environ["APPROVAL_LINK_SECRET"] = local_secret("approval-link-secret")
    shown_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
    os.environ.setdefault("RECEIVER_PUBLIC_URL", f"http://{shown_host}:{port}")
    # A run starts within about a second of an alert instead of the runner's default 10 s.
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "")
    if not os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]:
        del os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]
    return made


def _own_server() -> subprocess.Popen[bytes] | None:
    """The configured Prefect server (None), or the local one: started here and owned by this
    process (it stops with it, SIGKILL included), or that of another `serve` of this
    installation still running."""
    from remediate.engine.prefect_api import configured_api_url, local_server, require_api

    if configured_api_url():
        require_api()
        return None
    return local_server(owner="remediate serve")


async def _serve(
    settings: Settings, served: list[Any], *, host: str, port: int, demo: bool
) -> None:
    import uvicorn
    from prefect.runner import Runner

    from remediate.app.warm import WarmExecutor
    from remediate.intake.starter import DeploymentStarter
    from remediate.receiver import create_app

    runner = Runner(name="remediate", query_seconds=1, pause_on_shutdown=False)
    deployment_ids = [
        await runner.add_deployment(deployment)  # type: ignore[misc]
        for deployment in served
    ]

    incident = None
    if demo:
        from remediate.app.tools import tool

        incident = tool("demo")()
    # WARM_WORKERS=0: only Prefect's own runner executes runs (each in a fresh process, picked
    # up within its poll, about a second here), as under `prefect worker`.
    warm = WarmExecutor(workers=settings.warm_workers) if settings.warm_workers else None
    app = create_app(
        settings,
        starter=DeploymentStarter(executor=warm),
        extra_routes=[incident.route] if incident else [],
        watch_leases=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    # Our own signal handling: uvicorn's would re-raise Ctrl-C after its shutdown.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    config = server.config
    config.load()
    server.lifespan = config.lifespan_class(config)
    try:
        await server.startup()
    except SystemExit:
        raise ConfigError(f"the receiver could not listen on {host}:{port}") from None
    recovery_task = asyncio.create_task(_recover_orphans(deployment_ids))
    runner_task = asyncio.create_task(runner.start())
    _say(
        f"remediate: serving {len(served)} deployments (health-sweep every"
        f" {settings.sweep_interval_seconds} s); alert receiver on http://{host}:{port}"
        " (POST /alerts/alertmanager, /docs, /metrics). Ctrl-C stops."
    )
    if incident is not None:
        incident.start(os.environ["RECEIVER_PUBLIC_URL"])
    try:
        await server.main_loop()
    finally:
        _say("remediate: stopping")
        if warm is not None:
            warm.stop()
        if incident is not None:
            incident.close()
        await server.shutdown()
        for task in (recovery_task, runner_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


RECOVERY_INTERVAL_SECONDS = 10.0


async def _recover_orphans(deployment_ids: list[Any]) -> None:
    """Now and every few seconds: alert runs a killed `serve` created Pending and never ran go to
    the runner. Checked again after start-up because a serve restarted at once finds them too
    young to take (they might still belong to a live serve) until they age."""
    from remediate.app.warm import WarmExecutor

    while True:
        try:
            recovered = await asyncio.to_thread(WarmExecutor.recover, deployment_ids)
        except Exception as exc:  # noqa: BLE001 - Prefect briefly away: try again next round
            _say(f"remediate: recovering pending alert runs failed, retrying: {exc}")
        else:
            if recovered:
                _say(
                    f"remediate: {recovered} alert run(s) a stopped serve left behind go back to"
                    " the runner"
                )
        await asyncio.sleep(RECOVERY_INTERVAL_SECONDS)


def _refuse_pooled(names: list[str]) -> None:
    """`prefect deploy` owns these deployments on this server (the production layout): serving
    them here would re-register them with this process's entrypoints (files of this checkout,
    which a worker elsewhere cannot import) and race the pool's workers for every run. One line
    and exit 2 instead."""
    from remediate.deployments.serve import pooled

    taken = pooled(names)
    if taken:
        first, pool = next(iter(sorted(taken.items())))
        raise ConfigError(
            f"{len(taken)} deployment(s) on this Prefect server belong to work pool {pool!r}"
            f" ({first}, registered by `prefect deploy`): serving them here would take them from"
            " its workers. There, run `remediate receive` beside the workers; or point serve at"
            " another Prefect server"
        )


def serve(*, host: str, port: int, demo: bool = False) -> int:
    made = _prepare_environment(host, port)
    settings = load_settings()
    process = _own_server()
    if made is not None:
        _say(f"alert webhook token: in {made} (send it as `Authorization: Bearer …`)")
    try:
        from remediate.deployments.serve import deployments

        # Built outside the event loop: Prefect's to_deployment turns async inside one.
        served = deployments(
            sweep_interval_seconds=settings.sweep_interval_seconds,
            watchdog_interval_seconds=settings.watchdog_interval_seconds,
        )
        _refuse_pooled([d.name for d in served])
        asyncio.run(_serve(settings, served, host=host, port=port, demo=demo))
    finally:
        if process is not None:
            _say("stopping the local Prefect server")
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    _say("remediate stopped")
    return 0
