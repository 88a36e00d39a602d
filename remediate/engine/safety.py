"""The safety envelope around every destructive action, alike for webhook, schedule and manual runs.

- kill switch: `REMEDIATION_KILL_SWITCH=true` or `remediate kill-switch on` stops every action;
- blast-radius cap: an action naming more objects than `REMEDIATION_MAX_BLAST_RADIUS` is refused;
- budget: after `REMEDIATION_BUDGET_MAX` automatic actions on one resource within the window, stop
  and escalate (no remediation loops);
- cooldown: no automatic action on a resource within `REMEDIATION_COOLDOWN_SECONDS` of the last.
  Budget and cooldown bound what runs without a person; a person's explicit approval, given with
  the plan in front of them, is not held back by them (the approval form lists recent actions);
- lock: one run at a time acts on a resource (a PostgreSQL advisory lock in the store, so it holds
  across processes and machines and is released if a process dies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from remediate.domain.models import Plan
from remediate.domain.settings import Settings
from remediate.store.database import Store

__all__ = ["SafetyPolicy", "changed_objects", "guard", "kill_switch_refusal", "refusal"]


@dataclass(frozen=True, kw_only=True)
class SafetyPolicy:
    kill_switch: bool = False
    cooldown_seconds: int = 60
    budget_max: int = 3
    budget_window_seconds: int = 3600
    max_blast_radius: int = 500
    lock_timeout_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SafetyPolicy:
        return cls(
            kill_switch=settings.remediation_kill_switch,
            cooldown_seconds=settings.remediation_cooldown_seconds,
            budget_max=settings.remediation_budget_max,
            budget_window_seconds=settings.remediation_budget_window_seconds,
            max_blast_radius=settings.remediation_max_blast_radius,
            lock_timeout_seconds=settings.remediation_lock_timeout_seconds,
        )


def refusal(
    plan: Plan, *, policy: SafetyPolicy, store: Store, automatic: bool = True
) -> str | None:
    """Why the envelope will not let `plan` run now (None when it may).

    `automatic`: the plan runs without a person's approval (auto-approve flag or policy).
    """
    switched = kill_switch_refusal(policy, store=store)
    if switched is not None:
        return switched
    for action in plan.actions:
        if action.destructive and action.blast_radius > policy.max_blast_radius:
            return (
                f"{action.name} would touch {action.blast_radius} objects, over the blast-radius"
                f" cap of {policy.max_blast_radius} (REMEDIATION_MAX_BLAST_RADIUS)"
            )
    if not automatic:
        return None
    window = max(policy.budget_window_seconds, policy.cooldown_seconds)
    for resource in changed_objects(plan):
        why = _budget_refusal(resource, policy=policy, store=store, window=window)
        if why is not None:
            return why
    return None


def _budget_refusal(
    resource: str, *, policy: SafetyPolicy, store: Store, window: float
) -> str | None:
    history = store.executed_actions(resource, within_seconds=window)
    now = store.now()
    in_budget_window = [
        at for at in history if (now - at).total_seconds() <= policy.budget_window_seconds
    ]
    if len(in_budget_window) >= policy.budget_max:
        return (
            f"remediation budget spent: {len(in_budget_window)} automatic actions on"
            f" {resource} in the last {policy.budget_window_seconds} s"
            f" (REMEDIATION_BUDGET_MAX={policy.budget_max})"
        )
    if history:
        since = (now - history[0]).total_seconds()
        if since < policy.cooldown_seconds:
            return (
                f"cooldown: the last automatic action on {resource} was {since:.0f} s ago"
                f" (REMEDIATION_COOLDOWN_SECONDS={policy.cooldown_seconds})"
            )
    return None


def kill_switch_refusal(policy: SafetyPolicy, *, store: Store) -> str | None:
    """The kill switch, read now (before a plan and again before each of its steps)."""
    if policy.kill_switch:
        return "the kill switch is on (REMEDIATION_KILL_SWITCH)"
    if store.kill_switch():
        return "the kill switch is on (remediate kill-switch off to lift it)"
    return None


def changed_objects(plan: Plan) -> list[str]:
    """What the plan's destructive actions change (a container, a database, a repository),
    sorted: the keys of its locks, cooldowns and budgets, shared by every runbook that changes
    the same object (a backend restarted by app-not-starting or by api-500-errors is one)."""
    return sorted({a.resource for a in plan.actions if a.destructive}) or [plan.resource]


@contextmanager
def guard(
    resources: str | list[str], *, policy: SafetyPolicy, store: Store
) -> Iterator[Callable[[], bool]]:
    """Hold the lock of every resource (in sorted order, so two runs never deadlock); yields a
    check that all are still held. Raises `remediate.store.database.LockTimeout` if another run
    keeps one."""
    names = [resources] if isinstance(resources, str) else sorted(set(resources))
    with ExitStack() as stack:
        checks = [
            stack.enter_context(store.resource_lock(name, timeout=policy.lock_timeout_seconds))
            for name in names
        ]
        yield lambda: all(check() for check in checks)
