"""Pieces several runbooks share: restarting a compose service's containers, and waiting for a
check to pass after an action."""

from __future__ import annotations

import time
from collections.abc import Callable

from remediate.domain.models import ActionResult, Finding, Plan, PlannedAction
from remediate.engine.runbook import Runbook
from remediate.tasks import containers
from remediate.tasks.containers import ComposeService, ContainerInfo

__all__ = [
    "RestartsOneService",
    "narrowed_restarts",
    "recheck_restart",
    "restart_action",
    "restart_planned",
    "wait_until_ok",
]


def restart_action(
    name: str, service: ComposeService, found: list[ContainerInfo], *, description: str
) -> PlannedAction:
    """A destructive action that restarts exactly these containers of the service."""
    return PlannedAction(
        name=name,
        destructive=True,
        resource=service.resource,
        description=description,
        targets=[f"container {c.name}" for c in found],
        details=[
            f"container {c.name} ({c.id[:12]}): {c.status}"
            + (f", exit code {c.exit_code}" if c.status == "exited" else "")
            for c in found
        ],
        params={"container_ids": [c.id for c in found]},
    )


def restart_planned(
    action: PlannedAction, service: ComposeService, *, stop_timeout: int
) -> ActionResult:
    """Carry out a `restart_action` (only containers still labelled as the service)."""
    restarted = containers.restart_containers(
        service, container_ids=action.params["container_ids"], stop_timeout=stop_timeout
    )
    return ActionResult(
        name=action.name,
        destructive=True,
        executed=bool(restarted),
        targets=[f"container {c.name}" for c in restarted],
        detail=f"{len(restarted)} container(s) restarted",
    )


def narrowed_restarts(approved: Plan, service: ComposeService) -> Plan:
    """The approved plan with each restart narrowed to the containers still there (a container
    recreated meanwhile is a new one, which nobody approved restarting)."""
    present = {c.id for c in containers.find_service(service)}
    actions = []
    for action in approved.actions:
        ids = list(action.params.get("container_ids", []))
        if not ids:
            actions.append(action)
            continue
        named = [t for t in action.targets if t.startswith("container ")]
        others = [t for t in action.targets if not t.startswith("container ")]
        kept = [(i, n) for i, n in zip(ids, named, strict=False) if i in present]
        actions.append(
            action.model_copy(
                update={
                    "targets": others + [n for _, n in kept],
                    "params": {**action.params, "container_ids": [i for i, _ in kept]},
                }
            )
        )
    return approved.model_copy(update={"actions": actions})


def recheck_restart(
    approved: Plan, service: ComposeService, *, still_broken: Callable[[], bool]
) -> Plan:
    """The world read again after the approval: nothing to do when the problem went away while
    the approver read the plan, else the restart narrowed to the containers still there."""
    if not still_broken():
        return approved.model_copy(update={"actions": []})
    return narrowed_restarts(approved, service)


def wait_until_ok(
    check: Callable[[], Finding], *, timeout: float, interval: float = 0.5
) -> Finding:
    """Run `check` until it passes or `timeout` seconds went by; its last finding."""
    deadline = time.monotonic() + timeout
    while True:
        finding = check()
        if finding.ok or time.monotonic() >= deadline:
            return finding
        time.sleep(interval)


class RestartsOneService(Runbook):
    """A runbook whose fix is restarting the containers of the one compose service its plan
    names (`restart_action`): its phases set `service`; `act` restarts exactly the planned
    containers, with the runbook's `stop_timeout_seconds`."""

    service: ComposeService | None = None

    def act(self, plan: Plan) -> list[ActionResult]:
        assert self.service is not None
        stop = int(getattr(self.params, "stop_timeout_seconds", 10))
        return [restart_planned(plan.actions[0], self.service, stop_timeout=stop)]
