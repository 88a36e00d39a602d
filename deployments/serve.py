"""Serve every runbook of the catalogue as a deployment from this process (no work pool needed).

Each deployment is named after its runbook id and takes the flow's typed parameters, so the
Prefect UI shows a form for manual runs. Ctrl-C stops serving.
"""

from __future__ import annotations

from typing import Any

from core import catalogue


def deployments() -> list[Any]:
    return [
        runbook.load_flow().to_deployment(
            name=runbook.id,
            tags=["runbook", runbook.severity],
            description=runbook.summary,
        )
        for runbook in catalogue.CATALOGUE.values()
    ]


def main() -> None:
    from prefect import serve

    serve(*deployments())


if __name__ == "__main__":
    main()
