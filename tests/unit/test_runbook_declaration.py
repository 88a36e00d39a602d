"""A runbook declares, the engine builds its flow; runbooks installed beside the product join the
catalogue through the entry point group `remediate.runbooks` (a real distribution's metadata on
sys.path, read by importlib.metadata as pip's installs are)."""

from __future__ import annotations

import inspect
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.exceptions import SignatureMismatchError

from remediate.engine import catalogue
from remediate.flows.auth_server_health import AuthServerHealth, auth_server_health

PLUGIN = '''
from remediate.domain.models import Finding
from remediate.engine.runbook import Detection, Runbook, RunbookParameters


class UnitPlugin(Runbook):
    """A runbook from outside the product."""

    id = "unit-plugin"
    seed = "none"
    severity = "P3"
    component = "Nothing"
    summary = "a plug-in for the catalogue's unit test"
    resolution_minutes = 60
    eta = "1 hour"
    impact = "none"
    prevention = "be a test"

    class Parameters(RunbookParameters):
        limit: int = 3

    def detect(self) -> Detection:
        return Detection(resource="nothing", findings=[Finding(check="x", ok=True, detail="")])
'''


def distribution(root: Path, name: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """An installed distribution as pip leaves it: its modules and its .dist-info."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{catalogue.PLUGIN_GROUP}]\n{lines}\n")
    for module, text in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(text))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    catalogue.CATALOGUE.reload()
    yield tmp_path
    monkeypatch.undo()
    catalogue.CATALOGUE.reload()


def test_the_flow_takes_the_declared_parameters_and_the_run_flags() -> None:
    signature = inspect.signature(auth_server_health.fn)
    assert list(signature.parameters) == [
        *AuthServerHealth.Parameters.model_fields,
        "dry_run",
        "auto_approve",
        "requested_by",
    ]
    assert auth_server_health.name == "auth-server-health"
    # The Prefect UI's form, and the same validation an alert's parameters get.
    form = auth_server_health.parameters.properties
    assert form["latency_limit_seconds"]["type"] == "number"
    assert auth_server_health.validate_parameters({"healthy_checks": "2"})["healthy_checks"] == 2
    with pytest.raises(SignatureMismatchError):
        auth_server_health.validate_parameters({"no_such_parameter": 1})


def test_a_built_in_declaration_takes_its_catalogue_line() -> None:
    line = catalogue.get("auth-server-health")
    assert (AuthServerHealth.severity, AuthServerHealth.summary) == (line.severity, line.summary)
    assert line.load_flow() is auth_server_health
    assert line.prevention == AuthServerHealth.prevention
    assert not line.plugin


def test_an_installed_plugin_joins_the_catalogue(site: Path) -> None:
    distribution(
        site, "unit_plugin", {"unit-plugin": "unit_plugin:UnitPlugin"}, {"unit_plugin": PLUGIN}
    )
    found = catalogue.get("unit-plugin")
    assert found.plugin and found.severity == "P3" and found.flow_module == "unit_plugin"
    flow = found.load_flow()
    assert flow.name == "unit-plugin" and "limit" in inspect.signature(flow.fn).parameters
    assert found.prevention == "be a test" and found.sweep_skip(None) is None
    assert "rate-limiter" in catalogue.CATALOGUE  # the built-ins stay


def test_a_broken_or_clashing_plugin_is_left_out_and_named_in_the_log(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clash = PLUGIN.replace('id = "unit-plugin"', 'id = "rate-limiter"')
    distribution(
        site,
        "unit_bad",
        {"broken": "unit_broken:Nothing", "clash": "unit_clash:UnitPlugin"},
        {"unit_broken": "raise ImportError('a dependency is missing')", "unit_clash": clash},
    )
    with caplog.at_level(logging.ERROR, logger="remediate.catalogue"):
        known = set(catalogue.CATALOGUE)
    assert known == set(catalogue.BUILT_IN)
    assert catalogue.get("rate-limiter").flow_module == "remediate.flows.rate_limiter"
    text = caplog.text
    assert "broken (unit_broken:Nothing) not loaded: ImportError: a dependency is missing" in text
    assert "the id rate-limiter is taken" in text


def test_a_parameter_of_the_wrong_type_is_a_config_error_naming_it() -> None:
    from remediate.domain.errors import ConfigError
    from remediate.domain.settings import Settings

    with pytest.raises(ConfigError, match="auth-server-health: bad parameter: healthy_checks"):
        AuthServerHealth.of(Settings(), {"healthy_checks": "many", "dry_run": True})
    assert AuthServerHealth.of(Settings(), {"healthy_checks": "2"}).params == (
        AuthServerHealth.Parameters(healthy_checks=2)
    )
