"""What the app finds through entry points rather than imports: the drills and the demo ship in
the same wheel, but they use the product and the product never imports them (docs/architecture.md).

Group `remediate.tools`: `drill` (`run_drill(runbook, *, approve_as, interactive) -> int`) and
`demo` (a class whose instances add the demo's alert route and raise its incident under `serve`).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from remediate.domain.errors import ConfigError

__all__ = ["tool"]

GROUP = "remediate.tools"


def tool(name: str) -> Any:
    """The object the entry point `name` of group `remediate.tools` names."""
    for entry in entry_points(group=GROUP, name=name):
        return entry.load()
    raise ConfigError(
        f"{name}: not installed with this copy of remediate (entry point {GROUP}:{name});"
        " reinstall the product"
    )
