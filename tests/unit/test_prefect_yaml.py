"""prefect.yaml, the served deployments and the catalogue agree with each other."""

from __future__ import annotations

import yaml

from remediate.engine import catalogue
from tests.conftest import ROOT


def test_prefect_yaml_is_generated_from_the_catalogue() -> None:
    from remediate.deployments.prefect_yaml import render

    assert (ROOT / "prefect.yaml").read_text() == render(), (
        "prefect.yaml is stale: run `python -m remediate.deployments.prefect_yaml`"
    )


def test_prefect_yaml_declares_every_runbook_and_the_sweep() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in config["deployments"]}
    assert set(declared) == {*catalogue.CATALOGUE, "health-sweep", "incident-watchdog"}
    import importlib

    assert config["pull"] == []  # nothing to set on a worker, nothing frozen at deploy time
    for runbook_id, deployment in declared.items():
        module, function = deployment["entrypoint"].rsplit(".", 1)  # a module path
        assert function == runbook_id.replace("-", "_")
        assert getattr(importlib.import_module(module), function).name == runbook_id
        if runbook_id in catalogue.CATALOGUE:
            assert module == catalogue.get(runbook_id).flow_module
    assert declared["health-sweep"]["schedules"][0]["interval"] > 0
    assert declared["incident-watchdog"]["schedules"][0]["interval"] > 0


def test_served_deployments_have_a_typed_parameter_form() -> None:
    from prefect.utilities.callables import parameter_schema

    from remediate.deployments.serve import deployments

    served = deployments(sweep_interval_seconds=60, watchdog_interval_seconds=30)
    assert [d.name for d in served] == [*catalogue.CATALOGUE, "health-sweep", "incident-watchdog"]
    intervals = [d.schedules[0].schedule.interval.total_seconds() for d in served[-2:]]
    assert intervals == [60, 30]
    schema = parameter_schema(catalogue.get("connection-pool-exhausted").load_flow().fn)
    properties = schema.model_dump()["properties"]
    assert {"usage_threshold", "idle_minutes", "dry_run", "auto_approve"} <= set(properties)
    assert properties["dry_run"]["type"] == "boolean"
