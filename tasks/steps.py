"""The runbooks' Prefect tasks, which a health sweep calls as plain functions.

A runbook's run records each step as a Prefect task run (retries, tags, the UI's timeline). The
health sweep runs hundreds of runbook detectors at a time, read-only; there a task run per probe
costs more than the probe (the run's creation, a tag concurrency-limit call to the server, its
events), and the sweep's own table artifact is the record. Inside `plain_calls()` a step is its
function, called directly, without the task's retries: a probe that fails there is that check's
`error` (or `skipped`, for a target that does not answer) in this sweep, and the next sweep looks
again; a runbook's own run keeps its retries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from prefect import Task

__all__ = ["Step", "plain_calls", "task"]

P = ParamSpec("P")
R = TypeVar("R")

_PLAIN: ContextVar[bool] = ContextVar("remediate_plain_steps", default=False)


@contextmanager
def plain_calls() -> Iterator[None]:
    """Within this block (this thread, or a context copied from it), steps are plain calls."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


class Step(Task[P, R]):
    """A Prefect task that is a plain call inside `plain_calls()`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:  # type: ignore[override]
        if _PLAIN.get() and "return_state" not in kwargs and "wait_for" not in kwargs:
            return self.fn(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def task(**options: Any) -> Callable[[Callable[P, R]], Step[P, R]]:
    """`@prefect.task(**options)`, as a `Step`."""

    def decorate(fn: Callable[P, R]) -> Step[P, R]:
        return Step(fn=fn, **options)

    return decorate
