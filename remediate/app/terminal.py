"""What a person at a terminal sees: a run's progress, its plan and a y/N question, and the
incident store as tables and a timeline (rich).

Only for a terminal: `--json` and output to a pipe or a file stay plain lines (CONTRACT.md), and
a run started without a terminal waits for `remediate approve` or the Prefect UI as before.
"""

from __future__ import annotations

import select
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from remediate.domain.models import Incident, Outcome, TimelineEvent

__all__ = [
    "ask_approval",
    "incident_view",
    "incidents_table",
    "interactive",
    "paused_run_named",
    "run_with_prompt",
    "start_named",
]

STATUS_STYLE = {
    "resolved": "green",
    "healthy": "green",
    "closed": "green",
    "open": "yellow",
    "acting": "yellow",
    "planned": "cyan",
    "escalated": "bold red",
    "failed": "bold red",
    "declined": "magenta",
    "timed-out": "magenta",
}
SEVERITY_STYLE = {"P1": "bold red", "P2": "yellow", "P3": "cyan", "P4": "dim"}


def interactive() -> bool:
    """A person is at this terminal (stdin and stdout both a terminal)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _styled(value: str, styles: dict[str, str]) -> Text:
    return Text(value, style=styles.get(value, ""))


def incidents_table(rows: Sequence[Incident]) -> Table:
    table = Table(title=f"{len(rows)} incident(s), newest first", title_justify="left")
    for column in ("id", "opened (UTC)", "sev", "status", "runbook", "resource"):
        table.add_column(column, no_wrap=column in {"id", "opened (UTC)"})
    for i in rows:
        table.add_row(
            i.id,
            f"{i.opened_at:%Y-%m-%d %H:%M:%S}",
            _styled(i.severity, SEVERITY_STYLE),
            _styled(i.status, STATUS_STYLE),
            i.runbook,
            i.resource,
        )
    return table


def incident_view(incident: Incident, events: Sequence[TimelineEvent]) -> Table:
    """The incident's timeline, each event with its time and the seconds since the first."""
    title = Text.assemble(
        (incident.severity, SEVERITY_STYLE.get(incident.severity, "")),
        " ",
        (incident.status, STATUS_STYLE.get(incident.status, "")),
        f"  {incident.runbook} on {incident.resource}  ({incident.id})",
    )
    table = Table(title=title, title_justify="left")
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("+s", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("by", no_wrap=True)
    table.add_column("detail")
    start = events[0].at if events else None
    for e in events:
        since = (e.at - start).total_seconds() if start else 0.0
        table.add_row(f"{e.at:%H:%M:%S.%f}"[:-3], f"{since:.1f}", e.kind, e.actor or "", e.detail)
    return table


def paused_run_named(name: str, future: Future[Any], timeout: float = 600) -> str | None:
    """The id of the flow run called `name` once it waits for an approval; None when it ended
    (or never asked within `timeout`)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and not future.done():
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[name]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                )
            )
            if runs:
                return str(runs[0].id)
            time.sleep(0.3)
    return None


def ask_approval(future: Future[Any], *, out: Callable[[str], None]) -> bool | None:
    """y/N at the terminal; an answer given elsewhere (the UI, `remediate approve`) that ends the
    run ends the question too (None)."""
    out("Approve this plan? [y/N]  (or answer from another terminal / the Prefect UI)")
    while not future.done():
        ready, _, _ = select.select([sys.stdin], [], [], 0.5)
        if ready:
            return sys.stdin.readline().strip().lower() in {"y", "yes"}
    return None


def plan_of(run_id: str) -> tuple[str, str | None]:
    """The plan `run_id` asks about now (the digest its paused form carries), as the run recorded
    it in the store: its markdown and digest; a placeholder and None when it cannot be shown."""
    from remediate.domain.models import Plan
    from remediate.domain.settings import load_settings
    from remediate.engine.approval import NotWaiting, pending_approval_digest
    from remediate.store.database import Store

    try:
        digest = pending_approval_digest(run_id)
    except NotWaiting as exc:
        return f"({exc})", None
    store = Store.open(load_settings().remediation_database_url)
    incident = store.incident_for_flow_run(run_id)
    for event in reversed(store.timeline(incident.id) if incident else []):
        if event.kind == "approval-asked" and event.data.get("plan_digest") == digest:
            return Plan(**event.data["plan"]).to_markdown(), digest
    return "(the plan this run asks about is not in the incident store)", None


def printable(text: str) -> str:
    """`text` without control characters but newlines and tabs: nothing from a plan (a policy
    name, a function body, an alert's label) can move the cursor or hide a line at a terminal."""
    return "".join(ch if ch in "\n\t" or ch.isprintable() else "?" for ch in text)


def _flush_typed_ahead() -> None:
    """Keys pressed while the run was diagnosing do not answer a question not yet shown."""
    import termios

    with suppress(termios.error, OSError):
        termios.tcflush(sys.stdin, termios.TCIFLUSH)


def start_named(flow: Any, name: str, params: dict[str, Any]) -> Future[Any]:
    """`flow(**params)` as a flow run called `name`, in a thread: its outcome (or exception)
    arrives in the returned future while this thread shows and asks."""
    from remediate.engine.prefect_api import run_settings

    future: Future[Any] = Future()

    def work() -> None:
        try:
            with run_settings():
                future.set_result(flow.with_options(flow_run_name=name)(**params))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            future.set_exception(exc)

    threading.Thread(target=work, daemon=True).start()
    return future


def run_with_prompt(
    flow: Any, params: dict[str, Any], *, approver: str, label: str
) -> tuple[Outcome, str | None]:
    """Run `flow` with a progress line on stderr; when it pauses for an approval, show its plan
    and ask y/N here. Returns the outcome and the answer given here ("approved"/"declined", None
    when it was answered elsewhere or never asked)."""
    from remediate.engine.approval import answer_run

    console = Console(stderr=True)
    name = f"{label}-{uuid.uuid4().hex[:8]}"  # finds this run's pause, no other's
    future = start_named(flow, name, params)
    answered: str | None = None
    with console.status(f"{label}: detecting and diagnosing…"):
        run_id = paused_run_named(name, future)
    if run_id is not None:
        console.print()
        shown, digest = plan_of(run_id)
        console.print(printable(shown), markup=False, highlight=False)
        console.print(
            f"\nThe run {run_id} waits for an approval; elsewhere: "
            f"`remediate approve {run_id}` (--deny to decline).",
            markup=False,
            highlight=False,
        )
        answer = None
        if digest is None:  # never approve a plan the person was not shown
            console.print("Answer it with `remediate approve` or in the Prefect UI.", markup=False)
        else:
            _flush_typed_ahead()
            answer = ask_approval(future, out=lambda line: console.print(line, markup=False))
        if answer is not None:
            with suppress(Exception):  # answered elsewhere meanwhile: the run says so
                answer_run(
                    run_id, approve=answer, approver=approver, note="remediate run", digest=digest
                )
                answered = "approved" if answer else "declined"
    doing = "acting and verifying" if answered == "approved" else "ending"
    with console.status(f"{label}: {doing}…"):
        outcome = future.result()
    return outcome, answered
