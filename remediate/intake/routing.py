"""Routing rules: which runbook an alert starts, and on which target (its flow parameters).

Rules are configuration (`ALERT_ROUTES_FILE`, YAML; the embedded `routes.yaml` otherwise), read and
checked once at start: every rule names a known runbook and only parameters its flow takes. The
first rule that matches wins. Before any rule, an alert that names a runbook itself (the generic
form's `runbook`, a `runbook` label, or an alert name equal to a runbook id) goes to that runbook,
on the database its `database` (or `datname`) label names, for the runbooks that take one.

A parameter value `$labels.NAME` takes that label's value. Values taken from an alert must look
like an identifier (letters, digits, `_ . -`, at most 63 characters): an alert never puts quotes,
paths or URLs into a run's parameters. An alert chooses only among the targets the operator
configured: a database it names must be TARGET_DATABASE_URL's, one of SWEEP_DATABASES, or on the
route's own `targets` list (exact names, or `~regex`); any other is refused (recorded, no run).
A label never overrides a route's own parameter values.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from remediate.domain.models import Alert
from remediate.domain.settings import ConfigError
from remediate.engine import catalogue

__all__ = ["DEFAULT_ROUTES", "Route", "Routed", "Router", "load_router"]

DEFAULT_ROUTES = Path(__file__).with_name("routes.yaml")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.\-]{1,63}")
# Set by the receiver itself or by AUTO_APPROVE rules, never by a route.
RESERVED_PARAMETERS = frozenset({"auto_approve", "requested_by"})
FIELDS = frozenset({"source", "name", "severity", "status"})
# The parameters that name what a run acts on (the rest tune its checks).
TARGET_PARAMETERS = frozenset({"database"})


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runbook: str
    match: dict[str, str] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    # Databases an alert of this route may name besides the configured ones (`~` for a regex).
    targets: list[str] = Field(default_factory=list)


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routes: list[Route] = Field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Routed:
    runbook: str
    parameters: dict[str, Any]
    rule: str
    # Why the alert starts nothing although a rule matched (a target nobody configured).
    refused: str | None = None

    @property
    def dedup_key(self) -> str:
        """One incident = one runbook on one target, whichever source reports it and whatever
        detector options (thresholds, probe users) come with it. The target is the database for
        the runbooks that take one; the configured application otherwise."""
        target = {k: v for k, v in self.parameters.items() if k in TARGET_PARAMETERS}
        identity = json.dumps([self.runbook, target], sort_keys=True, default=str)
        return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _value(alert: Alert, key: str) -> str | None:
    if key in FIELDS:
        return str(getattr(alert, key) or "")
    if key == "project":
        return alert.labels.get("project")
    return alert.labels.get(key.removeprefix("labels."))


def _matches(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    if pattern.startswith("~"):
        return re.fullmatch(pattern[1:], value) is not None
    return value == pattern


class Router:
    def __init__(self, routes: list[Route], *, databases: frozenset[str] = frozenset()) -> None:
        self.routes = routes
        self.databases = databases
        self._parameters = {
            runbook.id: _flow_parameters(runbook) for runbook in catalogue.CATALOGUE.values()
        }
        for number, route in enumerate(routes, start=1):
            self._check(number, route)

    def _check(self, number: int, route: Route) -> None:
        where = f"route {number}"
        if route.runbook not in catalogue.CATALOGUE:
            raise ConfigError(
                f"ALERT_ROUTES_FILE: {where}: {catalogue.UnknownRunbook(route.runbook)}"
            )
        unknown = set(route.parameters) - self._parameters[route.runbook]
        if unknown:
            raise ConfigError(
                f"ALERT_ROUTES_FILE: {where}: {', '.join(sorted(unknown))} is not a parameter of"
                f" {route.runbook}"
            )
        reserved = set(route.parameters) & RESERVED_PARAMETERS
        if reserved:
            raise ConfigError(
                f"ALERT_ROUTES_FILE: {where}: {', '.join(sorted(reserved))} may not be set by a"
                " route (auto-approval is AUTO_APPROVE's job)"
            )
        literal = {
            k: v
            for k, v in route.parameters.items()
            if not (isinstance(v, str) and v.startswith("$labels."))
        }
        try:
            catalogue.get(route.runbook).load_flow().validate_parameters(literal)
        except Exception as exc:  # noqa: BLE001 - Prefect's ParameterTypeError and friends
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"ALERT_ROUTES_FILE: {where}: {reason.strip(' -')}") from None
        for pattern in [*route.match.values(), *route.targets]:
            if pattern.startswith("~"):
                try:
                    re.compile(pattern[1:])
                except re.error as exc:
                    raise ConfigError(
                        f"ALERT_ROUTES_FILE: {where}: bad regex {pattern!r}: {exc}"
                    ) from None

    def route(self, alert: Alert) -> Routed | None:
        named = alert.runbook or (alert.name if alert.name in catalogue.CATALOGUE else None)
        if named in catalogue.CATALOGUE:
            assert named is not None
            parameters: dict[str, Any] = {}
            database = alert.labels.get("database") or alert.labels.get("datname")
            if database and "database" in self._parameters[named]:
                if not SAFE_VALUE.fullmatch(database):
                    return None
                parameters["database"] = database
            return self._checked(
                Routed(runbook=named, parameters=parameters, rule=f"named runbook {named}"), ()
            )
        for number, route in enumerate(self.routes, start=1):
            if all(_matches(p, _value(alert, k)) for k, p in route.match.items()):
                filled = self._parameters_for(route, alert)
                if filled is None:
                    continue
                routed = Routed(runbook=route.runbook, parameters=filled, rule=f"route {number}")
                return self._checked(routed, route.targets)
        return None

    def _checked(self, routed: Routed, extra: Sequence[str]) -> Routed:
        """The routed alert, refused when it names a database nobody configured."""
        database = routed.parameters.get("database")
        if database is None or database in self.databases:
            return routed
        if any(_matches(pattern, str(database)) for pattern in extra):
            return routed
        return Routed(
            runbook=routed.runbook,
            parameters=routed.parameters,
            rule=routed.rule,
            refused=f"database {database} is not a configured target (TARGET_DATABASE_URL,"
            " SWEEP_DATABASES or the route's targets)",
        )

    @staticmethod
    def _parameters_for(route: Route, alert: Alert) -> dict[str, Any] | None:
        """The route's parameters with label values filled in; None if a value is unsafe."""
        result: dict[str, Any] = {}
        for name, value in route.parameters.items():
            if isinstance(value, str) and value.startswith("$labels."):
                taken = alert.labels.get(value.removeprefix("$labels."))
                if taken is None or taken == "":
                    continue  # the flow's default target
                if not SAFE_VALUE.fullmatch(taken):
                    return None
                result[name] = taken
            else:
                result[name] = value
        return result


def _flow_parameters(runbook: catalogue.Runbook) -> frozenset[str]:
    import inspect

    return frozenset(inspect.signature(runbook.load_flow().fn).parameters)


def load_router(path: str | None, *, databases: frozenset[str] = frozenset()) -> Router:
    """The routing rules of `path` (ALERT_ROUTES_FILE), or the embedded defaults; `databases`:
    the targets every route may name (the configured ones)."""
    file = Path(path) if path else DEFAULT_ROUTES
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"ALERT_ROUTES_FILE ({file}): {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"ALERT_ROUTES_FILE ({file}): not valid YAML: {exc}") from None
    try:
        parsed = RoutesFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"ALERT_ROUTES_FILE ({file}): {where}: {first['msg']}") from None
    return Router(parsed.routes, databases=databases)
