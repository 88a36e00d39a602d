"""The catalogue is the one list of runbooks: each has its flow, its docs page and its CLI line."""

from __future__ import annotations

import inspect

import pytest

from remediate.engine import catalogue
from tests.conftest import ROOT


def test_each_runbook_has_a_flow_named_after_it_with_the_common_parameters() -> None:
    for runbook in catalogue.CATALOGUE.values():
        flow = runbook.load_flow()
        assert flow.name == runbook.id
        params = inspect.signature(flow.fn).parameters
        assert {"dry_run", "auto_approve", "requested_by"} <= set(params)
        assert all(p.kind is p.KEYWORD_ONLY for p in params.values())


def test_each_runbook_has_a_docs_page() -> None:
    for runbook_id in catalogue.CATALOGUE:
        assert (ROOT / "docs" / "runbooks" / f"{runbook_id}.md").is_file(), runbook_id


def test_each_flow_module_is_in_the_catalogue() -> None:
    modules = {p.stem for p in (ROOT / "flows").glob("*.py")} - {
        "__init__",
        "health_sweep",
        "incident_watchdog",
    }
    assert modules == {r.flow_module.rpartition(".")[2] for r in catalogue.CATALOGUE.values()}


def test_unknown_runbook_names_the_known_ones() -> None:
    with pytest.raises(catalogue.UnknownRunbook, match="connection-pool-exhausted"):
        catalogue.get("no-such")
