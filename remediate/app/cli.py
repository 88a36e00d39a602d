"""`remediate`: the command line of CONTRACT.md.

Exit codes of `run`: 0 healthy or resolved; 1 not resolved; 2 bad usage or configuration, with one
line naming what is wrong. Prefect is imported only by the commands that need it, after the API
URL is settled, so `remediate list` is instant and no command shows a traceback for a bad setting.
"""

from __future__ import annotations

import getpass
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from remediate.domain.settings import ConfigError, load_settings
from remediate.engine import catalogue

app = typer.Typer(
    no_args_is_help=True,
    help="Runbooks that fix incidents themselves, asking a person before anything destructive.",
)

__all__ = ["app", "main"]


ANSWER_WAIT_SECONDS = 15.0  # how long `remediate approve` waits for the run to read its answer


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"remediate {version('remediate')}")
        except PackageNotFoundError:  # a checkout run without installing it
            typer.echo("remediate (not installed)")
        raise typer.Exit(0)


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Runbooks that fix incidents themselves, asking a person before anything destructive."""


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"remediate: {message}", err=True)
    raise typer.Exit(code)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _runbook(runbook_id: str) -> catalogue.Runbook:
    try:
        return catalogue.get(runbook_id)
    except catalogue.UnknownRunbook as exc:
        _fail(str(exc))


def _parse_sets(values: list[str], *, runbook: catalogue.Runbook) -> dict[str, Any]:
    flow = runbook.load_flow()
    allowed = {
        name
        for name in inspect.signature(flow.fn).parameters
        if name not in {"dry_run", "auto_approve", "requested_by"}
    }
    params: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            _fail(f"--set {item!r}: expected NAME=VALUE")
        if name not in allowed:
            _fail(
                f"--set {name}: not a parameter of {runbook.id}"
                f" (parameters: {', '.join(sorted(allowed))})"
            )
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    from prefect.exceptions import ParameterTypeError

    flows_log = logging.getLogger("prefect.flows")
    level = flows_log.level
    flows_log.setLevel(logging.CRITICAL)  # its own error log would repeat ours at length
    try:
        flow.validate_parameters(params)
    except ParameterTypeError as exc:
        reasons = [line.strip(" -") for line in str(exc).splitlines()[1:] if line.strip()]
        _fail(f"bad parameter for {runbook.id}: " + "; ".join(reasons))
    finally:
        flows_log.setLevel(level)
    return params


@app.command("list")
def list_runbooks() -> None:
    """One line per runbook id with its severity and summary."""
    for runbook in catalogue.CATALOGUE.values():
        typer.echo(f"{runbook.id:<32} {runbook.severity}  {runbook.summary}")


@app.command()
def run(
    runbook_id: Annotated[
        str, typer.Argument(metavar="ID", help="A runbook id from `remediate list`.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; change nothing.")] = False,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Approve the plan without asking a person.")
    ] = False,
    sets: Annotated[
        list[str] | None, typer.Option("--set", metavar="NAME=VALUE", help="A flow parameter.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Run one runbook now against the configured targets."""
    runbook = _runbook(runbook_id)
    try:
        settings = load_settings()
        params = _parse_sets(sets or [], runbook=runbook)
        _preflight(runbook, settings, params)
        from remediate.engine.prefect_api import ensure_api

        ensure_api()
    except ConfigError as exc:
        _fail(str(exc))

    from remediate.app import terminal
    from remediate.domain.models import Outcome
    from remediate.engine.prefect_api import run_settings

    flow = runbook.load_flow()
    ask_here = terminal.interactive() and not (as_json or dry_run or auto_approve)
    arguments = {**params, "dry_run": dry_run, "auto_approve": auto_approve}
    outcome: Outcome
    try:
        if ask_here:  # a person at this terminal: progress, the plan and a y/N question here
            outcome, _ = terminal.run_with_prompt(
                flow, {**arguments, "requested_by": _user()}, approver=_user(), label=runbook.id
            )
        else:
            with run_settings():
                outcome = flow(**arguments, requested_by=_user())
    except ConfigError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the run failed: one line, and the outcome says so
        from remediate.engine import monitoring

        monitoring.capture_exception(exc)
        outcome = Outcome(
            runbook=runbook.id,
            status="failed",
            severity=runbook.severity,
            summary=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
        typer.echo(f"remediate: {runbook.id} failed: {outcome.summary}", err=True)
    _print_outcome(outcome, as_json=as_json)
    raise typer.Exit(outcome.exit_code)


def _sweep_parameters(values: list[str]) -> dict[str, dict[str, Any]]:
    """`--set ID.NAME=VALUE`… → {runbook id: its parameters}, each checked as `run --set` is."""
    per: dict[str, list[str]] = {}
    for item in values:
        runbook_id, dot, rest = item.partition(".")
        if not dot or "=" not in rest:
            _fail(f"--set {item!r}: expected ID.NAME=VALUE")
        per.setdefault(runbook_id.strip(), []).append(rest)
    return {rid: _parse_sets(items, runbook=_runbook(rid)) for rid, items in per.items()}


def _preflight(runbook: catalogue.Runbook, settings: Any, params: dict[str, Any]) -> None:
    """Fail fast, with exit 2, on what would make the run useless: the store, then the runbook's
    own `preflight(settings, params)` (an unreachable target, a missing ALEMBIC_CONFIG…)."""
    from remediate.store.database import Store

    Store.open(settings.remediation_database_url)
    runbook.preflight(settings, params)


def _print_outcome(outcome: Any, *, as_json: bool) -> None:
    if as_json:
        typer.echo(outcome.model_dump_json())
        return
    typer.echo(f"{outcome.runbook}: {outcome.status} ({outcome.severity})")
    if outcome.summary:
        typer.echo(f"  {outcome.summary}")
    for finding in outcome.findings:
        mark = "ok  " if finding.ok else "FAIL"
        typer.echo(f"  [{mark}] {finding.check}: {finding.detail}")
    for action in outcome.actions:
        state = "executed" if action.executed else "not executed"
        by = f", approved by {action.approved_by}" if action.approved_by else ""
        typer.echo(f"  action {action.name}: {state}{by}; {len(action.targets)} target(s)")
    if outcome.incident_id:
        typer.echo(f"  incident {outcome.incident_id}")


@app.command()
def approve(
    flow_run_id: Annotated[str, typer.Argument(metavar="FLOW_RUN_ID")],
    deny: Annotated[bool, typer.Option("--deny", help="Decline the plan.")] = False,
    as_name: Annotated[
        str | None, typer.Option("--as", metavar="NAME", help="Approver name.")
    ] = None,
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="Kept in the timeline.")] = "",
    wait: Annotated[
        float,
        typer.Option(
            "--wait", metavar="SECONDS", min=0.5, help="How long to wait for the run to read it."
        ),
    ] = ANSWER_WAIT_SECONDS,
) -> None:
    """Answer a run that waits for an approval; exit 1 unless the run took the answer."""
    from uuid import UUID

    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        _fail(f"{flow_run_id!r} is not a flow run id")
    try:
        from remediate.engine.prefect_api import require_api

        require_api()
    except ConfigError as exc:
        _fail(str(exc))
    from remediate.engine.approval import NotWaiting, answer_run

    approver = as_name or _user()
    try:
        pending = answer_run(
            str(run_id), approve=not deny, approver=approver, note=note, channel="cli"
        )
    except NotWaiting as exc:
        _fail(str(exc) + _lost(str(run_id)), code=1)
    except Exception as exc:  # noqa: BLE001 - the server refused; say why in one line
        _fail(f"could not answer flow run {flow_run_id}: {str(exc).splitlines()[0]}", code=1)
    verdict = "declined" if deny else "approved"
    took = _wait_until_taken(str(run_id), pending.key, timeout=wait)
    if took is None:
        _fail(
            f"{verdict} flow run {flow_run_id} as {approver}, but the run has not read the answer"
            f" within {wait:.0f} s: its process may be gone, and the plan stays"
            " unapproved (a recovered run asks again)",
            code=1,
        )
    kind, detail = took
    if kind == "unknown":
        _fail(
            f"{verdict} flow run {flow_run_id} as {approver}, but whether the run read the answer"
            f" cannot be confirmed ({detail})",
            code=1,
        )
    if kind == "approval-refused":
        _fail(f"flow run {flow_run_id} refused the answer: {detail}", code=1)
    typer.echo(f"{verdict} flow run {flow_run_id} as {approver} (plan {pending.plan_digest[:12]})")


def _lost(flow_run_id: str) -> str:
    """`: its executor was lost …` when the store says so (the answer is not carried out)."""
    from remediate.store.database import Store

    try:
        store = Store.open(load_settings().remediation_database_url)
        incident = store.incident_for_flow_run(flow_run_id)
        events = store.timeline(incident.id) if incident is not None else []
    except ConfigError:
        return ""
    lost = [e for e in events if e.kind == "executor-lost"]
    if not lost or incident is None:
        return ""
    return (
        f": its executor was lost at {lost[-1].at:%H:%M:%S %Z} and incident {incident.id} was"
        " escalated; nothing was approved or changed"
    )


def _wait_until_taken(flow_run_id: str, key: str, *, timeout: float) -> tuple[str, str] | None:
    """What the run made of the answer, read from the store's timeline: None when it has not read
    it in time; `("unknown", why)` when the store cannot tell."""
    import time

    from remediate.engine.approval import taken
    from remediate.store.database import Store

    try:
        store = Store.open(load_settings().remediation_database_url)
    except ConfigError as exc:
        return "unknown", str(exc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = taken(store, flow_run_id, key)
        except ConfigError as exc:
            return "unknown", str(exc)
        if found is not None:
            return found
        time.sleep(0.25)
    return None


@app.command()
def sweep(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    no_start: Annotated[
        bool, typer.Option("--no-start", help="Only report; start no runbook for a finding.")
    ] = False,
    runbooks: Annotated[
        list[str] | None,
        typer.Option("--runbook", metavar="ID", help="Only this runbook (repeatable)."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="ID.NAME=VALUE",
            help="A runbook's parameter for its check and the run it starts (a threshold…).",
        ),
    ] = None,
) -> None:
    """Run `health-sweep` once: every runbook's detector, read-only, on every configured target."""
    chosen = [_runbook(r).id for r in runbooks or []] or None
    parameters = _sweep_parameters(sets or [])
    try:
        load_settings()
        from remediate.engine.prefect_api import ensure_api

        ensure_api()
    except ConfigError as exc:
        _fail(str(exc))
    from remediate.engine.prefect_api import run_settings
    from remediate.flows.health_sweep import SweepReport, health_sweep

    try:
        with run_settings():
            report: SweepReport = health_sweep(
                runbooks=chosen, parameters=parameters, start_runs=not no_start
            )
    except ConfigError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "status": "findings" if report.findings else "healthy",
                    "checks": [c.model_dump(mode="json") for c in report.checks],
                }
            )
        )
    else:
        for check in report.checks:
            target = check.parameters.get("database", "")
            run = f" -> run {check.flow_run_id}" if check.flow_run_id else ""
            typer.echo(
                f"{check.status:<8} {check.runbook} {target}".rstrip() + f": {check.detail}{run}"
            )
    raise typer.Exit(report.exit_code)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address the alert receiver listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the alert receiver.")] = 8080,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Also raise a local demo incident (rate-limiter) and fix it end to end."
        ),
    ] = False,
) -> None:
    """The long-running service: every deployment (schedules included) and the alert receiver."""
    from remediate.app import service

    try:
        code = service.serve(host=host, port=port, demo=demo)
    except ConfigError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _fail(f"serve stopped: {type(exc).__name__}: {first}", code=1)
    raise typer.Exit(code)


@app.command()
def receive(
    host: Annotated[str, typer.Option(help="Address the alert receiver listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the alert receiver.")] = 8080,
) -> None:
    """The alert receiver alone: runs are created on the shared Prefect server (PREFECT_API_URL)
    and executed by workers; several receivers may run side by side."""
    try:
        from remediate.receiver.asgi import build

        built = build()
    except ConfigError as exc:
        _fail(str(exc))
    import uvicorn

    typer.echo(f"remediate receive: alerts on http://{host}:{port}", err=True)
    uvicorn.run(built, host=host, port=port, log_level="warning")


@app.command()
def worker(
    pool: Annotated[str, typer.Option("--pool", "-p", help="The process work pool.")] = "remediate",
    name: Annotated[str | None, typer.Option(help="The worker's name.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="At most this many runs at once on this worker.")
    ] = 8,
    drain_seconds: Annotated[
        float,
        typer.Option(
            min=0, help="On SIGTERM: how long running runs get to finish before handed back."
        ),
    ] = 30.0,
) -> None:
    """Prefect's process worker for the pool, stopped cleanly by SIGTERM: no new run, the current
    ones finish or are handed back to the pool (docs/service.md)."""
    try:
        settings = load_settings()
        from remediate.engine.prefect_api import configured_api_url, require_api

        if not configured_api_url():
            raise ConfigError(
                "PREFECT_API_URL is not set: a worker polls the shared Prefect server's work pool"
            )
        require_api()
    except ConfigError as exc:
        _fail(str(exc))
    from remediate.app.worker import run_worker

    raise typer.Exit(
        run_worker(settings, pool=pool, name=name, limit=limit, drain_seconds=drain_seconds)
    )


@app.command()
def deploy(
    pool: Annotated[str, typer.Option("--pool", "-p", help="The process work pool.")] = "remediate",
) -> None:
    """Register every deployment on the shared Prefect server with `prefect deploy`, the health
    sweep and the watchdog every SWEEP_INTERVAL_SECONDS and WATCHDOG_INTERVAL_SECONDS."""
    import subprocess
    import tempfile

    try:
        settings = load_settings()
        from remediate.engine.prefect_api import configured_api_url, require_api

        if not configured_api_url():
            raise ConfigError(
                "PREFECT_API_URL is not set: deployments go to the shared Prefect server"
                " the workers poll"
            )
        require_api()
    except ConfigError as exc:
        _fail(str(exc))
    from remediate.deployments.prefect_yaml import render

    text = render(
        sweep_interval_seconds=settings.sweep_interval_seconds,
        watchdog_interval_seconds=settings.watchdog_interval_seconds,
        pool=pool,
    )
    prefect = Path(sys.executable).with_name("prefect")
    with tempfile.TemporaryDirectory(prefix="remediate-deploy-") as folder:
        (Path(folder) / "prefect.yaml").write_text(text, encoding="utf-8")
        done = subprocess.run(
            [str(prefect), "--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml"],
            cwd=folder,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        _fail(f"prefect deploy failed: {lines[-1] if lines else done.returncode}", code=1)
    typer.echo(
        f"deployed {text.count('- name: ')} deployments to work pool {pool!r} (health-sweep"
        f" every {settings.sweep_interval_seconds} s, incident-watchdog every"
        f" {settings.watchdog_interval_seconds} s)"
    )


@app.command("check-migrations")
def check_migrations(
    paths: Annotated[
        list[Path] | None, typer.Argument(metavar="[PATH]...", help="Migration folders or files.")
    ] = None,
) -> None:
    """The migration safety checker (seed 000): exit 1 with one line per problem."""
    from remediate.lint.migration_safety import check_path
    from remediate.store.database import MIGRATIONS

    targets = paths or [MIGRATIONS / "versions"]
    problems = []
    for target in targets:
        if not target.exists():
            _fail(f"{target}: no such file or folder")
        problems += check_path(target)
    for problem in problems:
        typer.echo(str(problem))
    raise typer.Exit(1 if problems else 0)


@app.command("kill-switch")
def kill_switch(
    state: Annotated[str, typer.Argument(metavar="on|off|status")] = "status",
) -> None:
    """Stop (on) or allow (off) every destructive action of every run sharing this store."""
    if state not in {"on", "off", "status"}:
        _fail("expected on, off or status")
    try:
        from remediate.store.database import Store

        settings = load_settings()
        store = Store.open(settings.remediation_database_url)
    except ConfigError as exc:
        _fail(str(exc))
    if state != "status":
        store.set_kill_switch(state == "on", by=_user())
    on = store.kill_switch() or settings.remediation_kill_switch
    typer.echo(f"kill switch is {'ON: no destructive action will run' if on else 'off'}")


@app.command()
def incidents(
    open_only: Annotated[bool, typer.Option("--open", help="Only open incidents.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Incidents in the store, newest first."""
    store = _store()
    rows = store.incidents(open_only=open_only)
    if as_json:
        typer.echo(json.dumps([i.model_dump(mode="json") for i in rows]))
        return
    from remediate.app import terminal

    if terminal.interactive():
        from rich.console import Console

        Console().print(terminal.incidents_table(rows))
        return
    for i in rows:
        typer.echo(
            f"{i.id}  {i.opened_at:%Y-%m-%d %H:%M:%S}  {i.severity}  {i.status:<10}"
            f" {i.runbook}  {i.resource}"
        )


@app.command()
def incident(
    incident_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    postmortem: Annotated[
        bool, typer.Option("--postmortem", help="Print the post-mortem draft (P1/P2).")
    ] = False,
) -> None:
    """One incident and its timeline (or its post-mortem draft)."""
    store = _store()
    found = store.incident(incident_id)
    if found is None:
        _fail(f"no incident {incident_id}", code=1)
    if postmortem:
        draft = store.postmortem(incident_id)
        if draft is None:
            _fail(f"incident {incident_id} has no post-mortem draft (P1/P2, once the run ends)", 1)
        typer.echo(draft, nl=False)
        return
    events = store.timeline(incident_id)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    **found.model_dump(mode="json"),
                    "timeline": [e.model_dump(mode="json") for e in events],
                }
            )
        )
        return
    from remediate.app import terminal

    if terminal.interactive():
        from rich.console import Console

        Console().print(terminal.incident_view(found, events))
        return
    typer.echo(f"{found.id}  {found.severity}  {found.status}  {found.runbook}  {found.resource}")
    for e in events:
        actor = f" [{e.actor}]" if e.actor else ""
        typer.echo(f"  {e.at:%H:%M:%S.%f}"[:-3] + f"  {e.kind:<20}{actor} {e.detail}")


def _store() -> Any:
    """The store, with what runs kept on disk while it was unreachable written to it first."""
    try:
        from remediate.engine.journal import replay_spool
        from remediate.store.database import Store

        settings = load_settings()
        store = Store.open(settings.remediation_database_url)
        replay_spool(settings, store=store)
        return store
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def drill(
    runbook_id: Annotated[str, typer.Argument(metavar="ID")],
    approve_as: Annotated[
        str | None,
        typer.Option("--approve-as", help="Answer the approval as NAME instead of asking."),
    ] = None,
) -> None:
    """Reproduce the runbook's incident in a disposable sandbox and run the runbook against it."""
    runbook = _runbook(runbook_id)
    from remediate.app.tools import tool

    try:
        run_drill = tool("drill")
        code = run_drill(runbook, approve_as=approve_as, interactive=sys.stdin.isatty())
    except ConfigError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Reach every configured part once (store, Redis, Prefect, container engine, targets,
    notifications): one line each; exit 1 when a configured part does not answer."""
    from remediate.app import doctor as checkup

    report = checkup.examine()
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        for line in checkup.lines(report, style=typer.style):
            typer.echo(line)
        failed = [p.setting for p in report.parts if p.status == "FAIL"]
        if failed:
            typer.echo(f"remediate: not ready; look at {', '.join(failed)}", err=True)
    raise typer.Exit(0 if report.ok else 1)


def main() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    try:  # the product reports its own errors when SENTRY_DSN is set
        from remediate.engine import monitoring

        monitoring.init(load_settings())
    except ConfigError:
        pass  # the command itself names the bad setting
    app()


if __name__ == "__main__":
    main()
