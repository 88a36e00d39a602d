"""The runbook catalogue: one entry per runbook id (RUNBOOKS.md), the only list of runbooks.

Adding a runbook is one `Runbook(...)` line here plus its flow module and docs page; the CLI, the
deployments and the docs check read this list.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remediate.domain.models import Severity

if TYPE_CHECKING:
    from prefect import Flow

__all__ = ["CATALOGUE", "Runbook", "UnknownRunbook", "get"]


class UnknownRunbook(KeyError):
    def __str__(self) -> str:
        known = ", ".join(sorted(CATALOGUE))
        return f"unknown runbook {self.args[0]!r} (known: {known})"


@dataclass(frozen=True, kw_only=True)
class Runbook:
    id: str
    seed: str
    severity: Severity
    component: str
    summary: str
    # Seed 002's quick-reference resolution target, in minutes.
    resolution_minutes: int
    eta: str

    @property
    def flow_module(self) -> str:
        return "remediate.flows." + self.id.replace("-", "_")

    def load_flow(self) -> Flow[..., Any]:
        module = importlib.import_module(self.flow_module)
        flow: Flow[..., Any] = getattr(module, self.id.replace("-", "_"))
        return flow


CATALOGUE: dict[str, Runbook] = {
    runbook.id: runbook
    for runbook in (
        Runbook(
            id="api-500-errors",
            seed="000",
            severity="P2",
            component="Backend API",
            summary="API answers 500: logs, database, migrations, recent deploy; roll it back",
            resolution_minutes=60,
            eta="1 hour",
        ),
        Runbook(
            id="app-not-starting",
            seed="000",
            severity="P1",
            component="Application (Docker Compose)",
            summary="services exited or crashing: diagnose, restart unless it is configuration",
            resolution_minutes=30,
            eta="30 minutes",
        ),
        Runbook(
            id="auth-failures",
            seed="000",
            severity="P2",
            component="Authentication",
            summary="logins rejected: say which setting is wrong, restart after a fix",
            resolution_minutes=60,
            eta="1 hour",
        ),
        Runbook(
            id="auth-server-health",
            seed="002 §5",
            severity="P2",
            component="Authentication server",
            summary="/health failing or slow, 503 on login: restart the application container",
            resolution_minutes=60,
            eta="1 hour",
        ),
        Runbook(
            id="connection-pool-exhausted",
            seed="002 §2",
            severity="P1",
            component="Postgres Database",
            summary="connections near max_connections: terminate idle sessions (approval first)",
            resolution_minutes=30,
            eta="15 minutes",
        ),
        Runbook(
            id="database-connection-errors",
            seed="000",
            severity="P1",
            component="Postgres Database",
            summary="the database does not answer: restart its stopped container",
            resolution_minutes=30,
            eta="15 minutes",
        ),
        Runbook(
            id="rls-auth-failure",
            seed="002 §1",
            severity="P1",
            component="Authentication / Row Level Security",
            summary="RLS policies differ from the known-good snapshot: roll them back",
            resolution_minutes=15,
            eta="15 minutes",
        ),
        Runbook(
            id="email-delivery",
            seed="000 and 002 §3",
            severity="P2",
            component="Email delivery",
            summary="emails not sent: SMTP and SendGrid checks, unbounce a named address",
            resolution_minutes=240,
            eta="4 hours",
        ),
        Runbook(
            id="frontend-404",
            seed="000",
            severity="P3",
            component="Frontend (SPA)",
            summary="deep links return 404: check dist/ and the fallback, restart after redeploy",
            resolution_minutes=240,
            eta="4 hours",
        ),
        Runbook(
            id="rate-limiter",
            seed="002 §4",
            severity="P2",
            component="Rate limiter (Redis)",
            summary="rate-limit buckets that never refill: re-expire or delete them",
            resolution_minutes=60,
            eta="1 hour",
        ),
        Runbook(
            id="tables-missing-after-migration",
            seed="000",
            severity="P1",
            component="Database schema (Alembic)",
            summary="alembic_version ahead of the tables: reset it, upgrade head, re-enable RLS",
            resolution_minutes=30,
            eta="30 minutes",
        ),
    )
}


def get(runbook_id: str) -> Runbook:
    try:
        return CATALOGUE[runbook_id]
    except KeyError:
        raise UnknownRunbook(runbook_id) from None
