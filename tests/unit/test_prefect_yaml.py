"""prefect.yaml declares exactly the catalogue's runbooks, each pointing at its flow."""

from __future__ import annotations

import yaml

from core import catalogue
from tests.conftest import ROOT


def test_prefect_yaml_and_catalogue_agree() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in config["deployments"]}
    assert set(declared) == set(catalogue.CATALOGUE)
    for runbook_id, deployment in declared.items():
        path, function = deployment["entrypoint"].split(":")
        assert path == catalogue.get(runbook_id).flow_module.replace(".", "/") + ".py"
        assert function == runbook_id.replace("-", "_")
        assert (ROOT / path).is_file()


def test_served_deployments_have_a_typed_parameter_form() -> None:
    from prefect.utilities.callables import parameter_schema

    from deployments.serve import deployments

    assert [d.name for d in deployments()] == list(catalogue.CATALOGUE)
    schema = parameter_schema(catalogue.get("connection-pool-exhausted").load_flow().fn)
    properties = schema.model_dump()["properties"]
    assert {"usage_threshold", "idle_minutes", "dry_run", "auto_approve"} <= set(properties)
    assert properties["dry_run"]["type"] == "boolean"
