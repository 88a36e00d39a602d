"""The runbook catalogue: one entry per runbook id (RUNBOOKS.md), the only list of runbooks.

The product's own runbooks are the `Runbook(...)` lines below, each with its flow module in
`flows/` and its docs page. Runbooks installed beside the product join them through the entry
point group `remediate.runbooks` (`name = "module:Class"`, a `remediate.engine.runbook.Runbook`
subclass), read the first time the catalogue is used: the CLI, the deployments (`serve`,
`prefect.yaml`), the receiver's routes and the health sweep all read this one list. A plug-in
that cannot be loaded, or that takes a built-in's id, is left out with an error in the log.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any

from remediate.domain.models import Severity

if TYPE_CHECKING:
    from prefect import Flow

__all__ = ["CATALOGUE", "PLUGIN_GROUP", "Runbook", "UnknownRunbook", "get"]

PLUGIN_GROUP = "remediate.runbooks"
log = logging.getLogger("remediate.catalogue")


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

    # The module that holds its flow; the product's own: `remediate.flows.<id with _>`.
    module: str | None = None

    @property
    def flow_name(self) -> str:
        return self.id.replace("-", "_")

    @property
    def flow_module(self) -> str:
        return self.module or "remediate.flows." + self.flow_name

    @property
    def plugin(self) -> bool:
        return self.module is not None

    def _module(self) -> ModuleType:
        return importlib.import_module(self.flow_module)

    def load_flow(self) -> Flow[..., Any]:
        flow: Flow[..., Any] = getattr(self._module(), self.flow_name)
        return flow

    @property
    def prevention(self) -> str:
        """What stops it coming back (the module's PREVENTION)."""
        return str(getattr(self._module(), "PREVENTION", ""))

    def preflight(self, settings: Any, params: dict[str, Any]) -> None:
        """The module's `preflight(settings, params)`: a ConfigError naming the setting when the
        target cannot be checked at all."""
        check = getattr(self._module(), "preflight", None)
        if check is not None:
            check(settings, params)

    @property
    def sweep_preflight(self) -> bool:
        """False when its detector connects first anyway (the sweep skips the preflight)."""
        return bool(getattr(self._module(), "SWEEP_PREFLIGHT", True))

    def sweep_skip(self, settings: Any) -> str | None:
        """Why the sweep has nothing to watch here, or None."""
        skip = getattr(self._module(), "sweep_skip", None)
        return skip(settings) if skip is not None else None


BUILT_IN: dict[str, Runbook] = {
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


class _Catalogue(Mapping[str, Runbook]):
    """The built-in runbooks, then the installed plug-ins (loaded on first use)."""

    def __init__(self) -> None:
        self._all: dict[str, Runbook] | None = None
        self._lock = threading.RLock()

    def _entries(self) -> dict[str, Runbook]:
        if self._all is not None:
            return self._all
        with self._lock:
            if self._all is None:
                self._all = dict(BUILT_IN)  # while plug-ins load, they see the built-ins
                self._all = {**BUILT_IN, **plugins()}
            return self._all

    def reload(self) -> None:
        with self._lock:
            self._all = None

    def __getitem__(self, runbook_id: str) -> Runbook:
        return self._entries()[runbook_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


def plugins() -> dict[str, Runbook]:
    """The runbooks of the entry point group `remediate.runbooks`, each checked."""
    found: dict[str, Runbook] = {}
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            runbook = entry.load().entry()
        except Exception as exc:  # noqa: BLE001 - one broken plug-in stops no other runbook
            log.error(
                "runbook plug-in %s (%s) not loaded: %s: %s",
                entry.name,
                entry.value,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            continue
        if not isinstance(runbook, Runbook):
            log.error(
                "runbook plug-in %s (%s) is not a Runbook declaration", entry.name, entry.value
            )
        elif runbook.id in BUILT_IN or runbook.id in found:
            log.error(
                "runbook plug-in %s (%s): the id %s is taken", entry.name, entry.value, runbook.id
            )
        else:
            found[runbook.id] = runbook
    return found


CATALOGUE = _Catalogue()


def get(runbook_id: str) -> Runbook:
    try:
        return CATALOGUE[runbook_id]
    except KeyError:
        raise UnknownRunbook(runbook_id) from None
