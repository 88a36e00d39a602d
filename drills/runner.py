"""`remediate drill ID`: a fire drill in a disposable sandbox on the local services.

Every runbook has one (`drills.DRILLS`): the drill builds the runbook's incident for real in a
sandbox of its own (a database, a Redis key prefix, containers, files), runs the runbook against
it through the approval gate, prints the plan, the outcome and the state of the sandbox after, and
removes the sandbox. While it runs, every setting that points at a real system (targets, chat,
pagers) is cleared, so a drill never touches anything but its sandbox.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg

from remediate.app import terminal
from remediate.domain.settings import ConfigError
from remediate.engine.catalogue import Runbook

__all__ = ["run_drill", "threshold_below"]

ADMIN_URL = os.environ.get("DRILL_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Settings that point at real systems: cleared for the drill, whatever the shell or .env says.
REAL_SYSTEMS = (
    "TARGET_DATABASE_URL",
    "TARGET_REDIS_URL",
    "DOCKER_HOST",
    "COMPOSE_PROJECT_NAME",
    "POOLER_SERVICE",
    "DATABASE_SERVICE",
    "APP_SERVICE",
    "FRONTEND_SERVICE",
    "REDIS_SERVICE",
    "APP_URL",
    "FRONTEND_URL",
    "LOGIN_PROBE_EMAIL",
    "LOGIN_PROBE_PASSWORD",
    "ALEMBIC_CONFIG",
    "MIGRATIONS_DIR",
    "APP_REPO",
    "SENTRY_API_URL",
    "SENTRY_AUTH_TOKEN",
    "SENTRY_ORG",
    "SENTRY_PROJECT",
    "SLACK_WEBHOOK_URL",
    "PAGERDUTY_ROUTING_KEY",
    "PAGERDUTY_EVENTS_URL",
    "STATUSPAGE_URL",
    "STATUSPAGE_API_KEY",
    "STATUSPAGE_COMPONENTS",
    "GITHUB_REPO",
    "GITHUB_TOKEN",
    "GITHUB_API_URL",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USER",
    "SMTP_PASSWORD",
    "SMTP_TLS",
    "SMTP_SSL",
    "EMAILS_FROM_EMAIL",
    "SENDGRID_API_KEY",
    "SENDGRID_API_URL",
    "AUTO_APPROVE",
    "REMEDIATION_KILL_SWITCH",
)


def _say(text: str = "") -> None:
    print(text, flush=True)


@contextmanager
def _drill_environment() -> Iterator[None]:
    """Only the sandbox's settings for the run; the shell's environment and cwd come back after.

    The working directory moves to an empty folder so that no `.env` is read either.
    """
    saved, cwd = dict(os.environ), os.getcwd()
    for name in REAL_SYSTEMS:
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="remediate-drill-cwd-") as empty:
        os.chdir(empty)
        try:
            yield
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(saved)


def threshold_below(idle_sessions: int, *, admin_url: str = ADMIN_URL) -> float:
    """A usage threshold the server is over now, and under once `idle_sessions` are gone.

    It sits halfway, so that connections others open or close meanwhile do not flip the result.
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
            " current_setting('max_connections')::int"
        ).fetchone()
    assert row is not None
    used, limit = row
    return round(float(used - idle_sessions / 2) / float(limit), 4)


def _person() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "drill"


def run_drill(runbook: Runbook, *, approve_as: str | None, interactive: bool) -> int:
    from remediate.drills import Sandbox
    from remediate.drills.worlds import DRILLS

    build = DRILLS.get(runbook.id)
    if build is None:
        raise ConfigError(f"no drill for {runbook.id}")
    from remediate.engine.prefect_api import ensure_api

    ensure_api()
    from remediate.engine.approval import answer_run

    _say(f"== Drill: {runbook.id} ({runbook.severity}, seed {runbook.seed}) ==")
    with _drill_environment(), Sandbox() as sandbox:
        world = build(sandbox)
        for line in world.story:
            _say(line)
        requested_by = f"drill-{sandbox.id}"
        future = terminal.start_named(
            runbook.load_flow(), requested_by, {**world.params, "requested_by": requested_by}
        )
        run_id = terminal.paused_run_named(requested_by, future, timeout=120)
        if run_id is not None:
            shown, digest = terminal.plan_of(run_id)
            _say("\n" + terminal.printable(shown))
            _say(f"The run {run_id} is waiting for an approval.")
            _say(f"  remediate approve {run_id}            (approve)")
            _say(f"  remediate approve {run_id} --deny     (decline)\n")
            if approve_as:
                _say(f"approving as {approve_as} (--approve-as)")
                answer_run(run_id, approve=True, approver=approve_as, note="drill", digest=digest)
            elif interactive and digest is not None:  # only a plan that was shown
                answer = terminal.ask_approval(future, out=_say)
                if answer is not None:
                    with suppress(Exception):
                        answer_run(
                            run_id,
                            approve=answer,
                            approver=_person(),
                            note="drill",
                            digest=digest,
                        )
            else:
                _say("waiting for an answer from another terminal or the Prefect UI…")
        outcome = future.result()
        _say(f"\noutcome: {outcome.status}; {outcome.summary}")
        for action in outcome.actions:
            _say(
                f"  {action.name}: {'executed' if action.executed else 'not executed'},"
                f" {len(action.targets)} target(s), approved by {action.approved_by}"
            )
        checks = world.check()
        _say("the sandbox after the run:")
        for ok, line in checks:
            _say(f"  [{'ok' if ok else 'FAIL'}] {line}")
        if outcome.incident_id:
            _say(f"timeline: remediate incident {outcome.incident_id}")
    _say("sandbox removed: " + (", ".join(sandbox.removed) or "nothing was made"))
    return 0 if outcome.status == "resolved" and all(ok for ok, _ in checks) else 1
