"""A runbook declares; the engine runs it (docs/architecture.md, "Writing a runbook").

A runbook is a `Runbook` subclass: its metadata (id, seed section, severity…), its typed
`Parameters`, and its phases as plain methods: `detect`, `diagnose`, `plan`, `recheck`, `act` and
`verify`. Defining the class builds its Prefect flow (`build_flow`) and puts it in the class's
module under the runbook id (`disk-almost-full` → `disk_almost_full`), where the catalogue, the
deployments (`prefect.yaml`, `serve`), the receiver and the sweep find every runbook. The engine
owns the shape: each phase a named task; the incident opened only once detection fails; dry-run
stopping at the plan; the approval bound to the plan; the safety envelope (locks, cooldown,
budget, kill switch); the re-check before acting; verification; the journal, the notifications
and the outcome. A runbook installed from outside this repository is the same class, found
through the entry point group `remediate.runbooks` (`catalogue.py`).

One instance serves one run: what `detect` learns (a target, the probes it made) stays on `self`
for the later phases, as a flow's local variables would.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict, ValidationError

from remediate.domain.errors import ConfigError
from remediate.domain.models import ActionResult, Diagnosis, Finding, Outcome, Plan, Severity
from remediate.domain.settings import Settings, load_settings
from remediate.engine import catalogue
from remediate.engine.incident import IncidentRun, runbook_flow
from remediate.tasks.steps import task

__all__ = ["Detection", "Escalate", "Runbook", "RunbookParameters", "build_flow"]

# What every runbook flow takes besides its own parameters (CONTRACT.md, "Flows").
RUN_FLAGS = (
    inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool),
    inspect.Parameter(
        "auto_approve", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool
    ),
    inspect.Parameter(
        "requested_by", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None
    ),
)


class RunbookParameters(BaseModel):
    """A runbook's own parameters: the Prefect UI's form, `remediate run ID --param k=v`, an
    alert's labels. Unknown names are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Detection:
    """What `detect` saw. `resource` names the target in locks, the store and the timeline."""

    resource: str
    findings: list[Finding]
    # A probe that does not fit the target (a wrong route): a configuration problem to report,
    # not an incident; nothing is opened.
    misconfigured: str | None = None
    impact: str | None = None  # this incident's, when it differs from the runbook's
    # The incident is open but cannot even be diagnosed (every connection slot taken…): the
    # engine opens it and escalates with this at once.
    escalate: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.misconfigured is None and all(f.ok for f in self.findings)


class Escalate(Exception):
    """Raised by `diagnose` or `plan` when nothing can be done safely: a person must look. The
    message is what the escalation says; `plan`, when there is one, is recorded first (the
    approver sees what was refused)."""

    def __init__(self, reason: str, *, plan: Plan | None = None) -> None:
        super().__init__(reason)
        self.plan = plan


class Runbook:
    """Subclass with the metadata below and the phases; see the module's docstring."""

    id: ClassVar[str]
    seed: ClassVar[str]
    severity: ClassVar[Severity]
    component: ClassVar[str]
    summary: ClassVar[str]
    resolution_minutes: ClassVar[int]
    eta: ClassVar[str]
    impact: ClassVar[str]  # who is hurt and how, for the declaration
    prevention: ClassVar[str] = ""
    Parameters: ClassVar[type[RunbookParameters]] = RunbookParameters
    # False when `detect` connects to the target first anyway: the sweep then skips `preflight`.
    sweep_preflight: ClassVar[bool] = True
    flow: ClassVar[Any]

    def __init__(self, settings: Settings, params: RunbookParameters) -> None:
        self.settings = settings
        self.params = params
        # The run's flags (CONTRACT.md): who asked, and whether it only plans.
        self.requested_by: str | None = None
        self.dry_run = False

    # The phases. Only `detect`, `plan`, `act` and `verify` must be written.
    def preflight(self) -> None:
        """Before a run (`remediate run`, the sweep's check unless `sweep_preflight` is False):
        raise `ConfigError` naming the setting when the target cannot be checked at all. The run
        itself does not call it: a `detect` that must fail the same way calls it first."""

    def sweep_skip(self) -> str | None:
        """Why the health sweep has nothing to watch here (None: it checks)."""
        return None

    def detect(self) -> Detection:
        raise NotImplementedError

    def diagnose(self, detection: Detection) -> Diagnosis:
        return Diagnosis(causes=[], evidence=[])

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        raise NotImplementedError

    def recheck(self, plan: Plan) -> Plan:
        """After the approval, before acting: the plan as the world now stands (targets gone
        since are dropped); the engine asks again when it grew."""
        return plan

    def act(self, plan: Plan) -> list[ActionResult]:
        raise NotImplementedError

    def verify(self) -> list[Finding]:
        raise NotImplementedError

    # The engine's side.
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "id" not in cls.__dict__:
            return  # an abstract intermediate class
        listed = catalogue.BUILT_IN.get(cls.id)
        if listed is not None and cls.__module__ == listed.flow_module:
            for name in ("seed", "severity", "component", "summary", "resolution_minutes", "eta"):
                setattr(cls, name, getattr(listed, name))  # a built-in's: its catalogue line
        cls.flow = build_flow(cls)
        module = sys.modules[cls.__module__]
        name = flow_name(cls.id)
        # The module-level names the catalogue, the CLI, the sweep and `prefect.yaml` read.
        setattr(module, name, cls.flow)
        module.PREVENTION = cls.prevention  # type: ignore[attr-defined]
        module.SWEEP_PREFLIGHT = cls.sweep_preflight  # type: ignore[attr-defined]
        module.preflight = lambda settings, params: cls.of(settings, params).preflight()  # type: ignore[attr-defined]
        module.sweep_skip = lambda settings: cls.of(settings, {}).sweep_skip()  # type: ignore[attr-defined]

    @classmethod
    def of(cls, settings: Settings, params: dict[str, Any]) -> Runbook:
        """An instance for a preflight or a sweep skip: the run's flags are left out; a value of
        the wrong type is a ConfigError naming the parameter (the sweep reports that check and
        goes on; `remediate run` exits 2)."""
        own = {k: v for k, v in params.items() if k in cls.Parameters.model_fields}
        return cls(settings, parameters(cls, own))

    @classmethod
    def entry(cls) -> catalogue.Runbook:
        """Its line of the catalogue."""
        return catalogue.Runbook(
            id=cls.id,
            seed=cls.seed,
            severity=cls.severity,
            component=cls.component,
            summary=cls.summary,
            resolution_minutes=cls.resolution_minutes,
            eta=cls.eta,
            module=cls.__module__,
        )


def parameters(cls: type[Runbook], values: dict[str, Any]) -> RunbookParameters:
    try:
        return cls.Parameters(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"{cls.id}: bad parameter: {problems}") from None


def flow_name(runbook_id: str) -> str:
    return runbook_id.replace("-", "_")


def build_flow(cls: type[Runbook]) -> Any:
    """The Prefect flow of a declared runbook: its parameters as the flow's keyword arguments
    (typed, so the UI shows a form), the phases in the engine's order."""
    detect = _phase("detect", lambda rb: rb.detect(), escalates=False)
    diagnose = _phase("diagnose", lambda rb, detection: rb.diagnose(detection))
    plan_it = _phase("plan", lambda rb, detection, diagnosis: rb.plan(detection, diagnosis))

    def body(**kwargs: Any) -> Outcome:
        dry_run = bool(kwargs.pop("dry_run", False))
        auto_approve = bool(kwargs.pop("auto_approve", False))
        requested_by = kwargs.pop("requested_by", None)
        settings = load_settings()
        rb = cls(settings, parameters(cls, kwargs))
        rb.requested_by, rb.dry_run = requested_by, dry_run
        detection: Detection = detect(rb)
        if detection.misconfigured is not None:
            return IncidentRun.misconfigured(
                cls.id, findings=detection.findings, problem=detection.misconfigured
            )
        if detection.healthy:
            return IncidentRun.healthy(cls.id, findings=detection.findings)
        run = IncidentRun.open(
            cls.id,
            resource=detection.resource,
            findings=detection.findings,
            settings=settings,
            requester=requested_by,
            impact=detection.impact or cls.impact,
        )
        if detection.escalate is not None:
            return run.escalate(detection.escalate)
        diagnosis = diagnose(rb, detection)
        if isinstance(diagnosis, Escalate):
            return run.escalate(str(diagnosis))
        run.diagnosed(diagnosis)
        plan = plan_it(rb, detection, diagnosis)
        if isinstance(plan, Escalate):
            if plan.plan is not None:
                run.planned(plan.plan)
            return run.escalate(str(plan))
        run.planned(plan)
        if dry_run:
            return run.dry_run(plan)
        return run.carry_out(
            plan,
            auto_approve=auto_approve,
            recheck=rb.recheck,
            act=rb.act,
            verify=rb.verify,
            prevention=cls.prevention,
        )

    own = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=info.get_default(call_default_factory=True),
            annotation=info.annotation,
        )
        for name, info in cls.Parameters.model_fields.items()
    ]
    body.__signature__ = inspect.Signature([*own, *RUN_FLAGS], return_annotation=Outcome)  # type: ignore[attr-defined]
    body.__name__ = body.__qualname__ = flow_name(cls.id)
    body.__module__ = cls.__module__
    body.__doc__ = (cls.__doc__ or cls.summary).strip().splitlines()[0]
    return runbook_flow(cls.id)(_keep_signature(body))


def _phase(name: str, fn: Callable[..., Any], *, escalates: bool = True) -> Callable[..., Any]:
    """A phase as a named Prefect task (a plain call in the sweep); an `Escalate` raised after
    the incident opened is the phase's result, not a failed task run."""

    def phase(*args: Any) -> Any:
        try:
            return fn(*args)
        except Escalate as reason:
            if not escalates:
                raise
            return reason

    phase.__name__ = phase.__qualname__ = name
    return task(name=name, cache_policy=NONE)(phase)


def _keep_signature(fn: Callable[..., Outcome]) -> Callable[..., Outcome]:
    """`runbook_flow` wraps with functools.wraps, which keeps `__signature__` via `__wrapped__`."""
    fn.__annotations__ = {
        p.name: p.annotation for p in inspect.signature(fn).parameters.values()
    } | {"return": Outcome}
    return fn
