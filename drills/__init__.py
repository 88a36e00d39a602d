"""Fire drills: each runbook's incident, built for real in a disposable sandbox on local services.

`remediate.drills.worlds.DRILLS` maps every runbook id to a builder that takes a `Sandbox` (its own
database, Redis key prefix, containers, files; all removed afterwards), breaks it the way the
runbook's seed describes, and returns a `World`: what was broken, the flow's parameters, and the
checks of the sandbox's state once the runbook has run. `remediate.drills.runner.run_drill` runs
them
(`remediate drill ID`). `assets/` holds the small applications the sandboxes run (a backend, a
frontend, an alembic project, a PostgreSQL start script), which the tests use too.
"""

from pathlib import Path

from remediate.drills.sandbox import DrillUnavailable, Sandbox, World

ASSETS = Path(__file__).resolve().parent / "assets"

__all__ = ["ASSETS", "DrillUnavailable", "Sandbox", "World"]
