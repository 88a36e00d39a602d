"""Every deployment of the product: one per runbook of the catalogue, `health-sweep` and the
`incident-watchdog`.

Each runbook deployment is named after its runbook id and takes the flow's typed parameters, so
the Prefect UI shows a form for manual runs; `health-sweep` runs every SWEEP_INTERVAL_SECONDS.
`python -m remediate.deployments.serve` serves them from one process without a work pool;
`remediate serve`
does the same beside the alert receiver. Ctrl-C stops serving.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from remediate.engine import catalogue

SWEEP = "health-sweep"
DEFAULT_SWEEP_INTERVAL = 300
SWEEP_DESCRIPTION = "Every runbook's detector, read-only; starts the runbook for each finding"
WATCHDOG = "incident-watchdog"
WATCHDOG_DESCRIPTION = "Escalates open incidents past their resolution target (orphaned runs too)"
DEFAULT_WATCHDOG_INTERVAL = 60


def deployments(
    *,
    sweep_interval_seconds: int = DEFAULT_SWEEP_INTERVAL,
    watchdog_interval_seconds: int = DEFAULT_WATCHDOG_INTERVAL,
) -> list[Any]:
    from remediate.flows.health_sweep import health_sweep
    from remediate.flows.incident_watchdog import incident_watchdog

    runbooks = [
        runbook.load_flow().to_deployment(
            name=runbook.id,
            tags=["runbook", runbook.severity],
            description=runbook.summary,
        )
        for runbook in catalogue.CATALOGUE.values()
    ]
    sweep = health_sweep.to_deployment(
        name=SWEEP,
        tags=["sweep"],
        description=SWEEP_DESCRIPTION,
        interval=timedelta(seconds=sweep_interval_seconds),
    )
    watchdog = incident_watchdog.to_deployment(
        name=WATCHDOG,
        tags=["watchdog"],
        description=WATCHDOG_DESCRIPTION,
        interval=timedelta(seconds=watchdog_interval_seconds),
    )
    return [*runbooks, sweep, watchdog]


def pooled(names: list[str]) -> dict[str, str]:
    """{"flow/deployment": work pool} of the deployments among `names` that `prefect deploy`
    registered into a work pool on the configured server (serving them would take them from
    the pool's workers)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))
        )
        return {
            f"{client.read_flow(d.flow_id).name}/{d.name}": d.work_pool_name
            for d in found
            if d.work_pool_name
        }


def main() -> None:
    from prefect import serve

    from remediate.domain.settings import load_settings

    settings = load_settings()
    serve(
        *deployments(
            sweep_interval_seconds=settings.sweep_interval_seconds,
            watchdog_interval_seconds=settings.watchdog_interval_seconds,
        )
    )


if __name__ == "__main__":
    main()
