"""The connection-pool incident a test sets up (the `incident_world` fixture of tests/e2e), as a
type; and what `remediate serve`'s routes file is written from (tests/e2e/test_serve.py
`write_routes`, `start_serve`): a world's parameters, an incident behind them or not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from remediate.store.database import Store

__all__ = ["IncidentWorld", "ParamsOnly", "WithParams"]


class WithParams(Protocol):
    @property
    def params(self) -> dict[str, Any]:
        """connection-pool-exhausted's parameters (a route takes its usage_threshold)."""
        ...


@dataclass(frozen=True)
class IncidentWorld:
    """Idle sessions to terminate on `database`, and sessions that must survive every run."""

    database: str
    idle: set[int]  # backend pids the fix terminates
    survivors: set[int]  # backend pids no run may touch
    params: dict[str, Any]  # connection-pool-exhausted's parameters for this world
    store: Store  # the incident store the runs write to


@dataclass(frozen=True)
class ParamsOnly:
    """Parameters with no incident behind them: a `serve` whose connection-pool route is not
    what the test is about."""

    params: dict[str, Any]
