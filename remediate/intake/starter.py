"""Starting a runbook's deployment on the Prefect server without waiting for it to run.

The deployment of runbook `ID` is `ID/ID` (flow name / deployment name), as `remediate serve` and
`prefect.yaml` declare it. A run is created with an idempotency key, so the same occurrence of an
alert starts at most one run even when deduplication in Redis is not available.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol
from uuid import UUID

__all__ = ["DeploymentStarter", "Executor", "StartFailed", "Starter"]


class StartFailed(Exception):
    """The run could not be created (server down, deployment missing); safe to show."""


class Starter(Protocol):
    def start(
        self, deployment: str, *, parameters: dict[str, Any], idempotency_key: str, tags: list[str]
    ) -> str: ...

    def run_state(self, flow_run_id: str) -> str | None:
        """The run's state type (`COMPLETED`, `CRASHED`…), `GONE` when the server has no such
        run, None when it cannot tell."""
        ...


class Executor(Protocol):
    """Runs created Pending in this process (the app's warm executor under `remediate serve`)."""

    def reserve(self) -> bool: ...
    def release(self) -> None: ...
    def submit(self, runbook_id: str, flow_run: Any) -> None: ...
    def tag(self) -> str:
        """The tag that marks a run as this process's to execute."""
        ...


class DeploymentStarter:
    """Creates flow runs through the Prefect API (`PREFECT_API_URL`).

    With a `WarmExecutor` (under `remediate serve`) a run is created Pending and executed in this
    process at once, while the executor has a free worker; otherwise it is created Scheduled for
    whatever serves the deployment (the runner, a worker).
    """

    def __init__(self, *, executor: Executor | None = None) -> None:
        from prefect.client.orchestration import get_client

        self._executor = executor

        self._client = get_client(sync_client=True)
        self._client.__enter__()
        self._deployments: dict[str, UUID] = {}
        self._lock = threading.Lock()

    def _deployment_id(self, name: str) -> UUID:
        from prefect.exceptions import ObjectNotFound

        with self._lock:
            if name in self._deployments:
                return self._deployments[name]
        try:
            found = self._client.read_deployment_by_name(f"{name}/{name}")
        except ObjectNotFound:
            raise StartFailed(
                f"no deployment {name}/{name} on the Prefect server (is `remediate serve`"
                " running, or were the deployments applied with `prefect deploy --all`?)"
            ) from None
        with self._lock:
            self._deployments[name] = found.id
        return found.id

    def start(
        self, deployment: str, *, parameters: dict[str, Any], idempotency_key: str, tags: list[str]
    ) -> str:
        import httpx
        from prefect.states import Pending

        warm = self._executor is not None and self._executor.reserve()
        owner = self._executor.tag() if self._executor is not None else ""
        try:
            run = self._client.create_flow_run_from_deployment(
                self._deployment_id(deployment),
                parameters=parameters,
                idempotency_key=idempotency_key,
                tags=[*tags, owner] if warm else tags,
                state=Pending() if warm else None,
            )
        except StartFailed:
            if warm:
                assert self._executor is not None
                self._executor.release()
            raise
        except (httpx.HTTPError, RuntimeError) as exc:
            if warm:
                assert self._executor is not None
                self._executor.release()
            raise StartFailed(
                f"the Prefect server did not take the run: {type(exc).__name__}"
            ) from None
        if warm:
            assert self._executor is not None
            if (
                run.state_type is not None
                and run.state_type.value == "PENDING"
                and owner in (run.tags or [])
            ):
                self._executor.submit(deployment, run)
            else:  # an idempotent repeat of a run that exists (another process's: it recovers)
                self._executor.release()
        return str(run.id)

    def run_state(self, flow_run_id: str) -> str | None:
        import httpx
        from prefect.exceptions import ObjectNotFound

        try:
            run = self._client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return "GONE"
        except (httpx.HTTPError, RuntimeError, ValueError):
            return None
        return run.state_type.value if run.state_type is not None else None

    def close(self) -> None:
        self._client.__exit__(None, None, None)
