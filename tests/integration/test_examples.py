"""The configuration examples checked by the real tools (Debian's `prometheus` and
`prometheus-alertmanager` packages, installed by scripts/setup.sh): `promtool check rules` and
`promtool test rules` on the rule files, `amtool check-config` on the Alertmanager example,
`promtool` on every PromQL expression of the Grafana dashboard; and the metrics the rules watch,
read back from a real incident store. A missing tool is a failure, never a skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from remediate.domain.settings import load_settings
from remediate.flows.health_sweep import SweepReport, _heartbeat
from remediate.intake.dispatch import StoreGauges
from remediate.receiver import create_app
from remediate.store.database import Store
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
PROMETHEUS = EXAMPLES / "prometheus"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: scripts/setup.sh installs it (Debian's prometheus)"
    return path


def run(*argv: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{output}"
    return output


def test_promtool_checks_both_rule_files() -> None:
    out = run(tool("promtool"), "check", "rules", "rules.yml", "remediate-self.yml", cwd=PROMETHEUS)
    assert re.search(r"SUCCESS: 10 rules found", out), out
    assert re.search(r"SUCCESS: 8 rules found", out), out


@pytest.mark.parametrize("tests", ["rules_test.yml", "remediate-self_test.yml"])
def test_promtool_unit_tests_of_the_rules_pass(tests: str) -> None:
    out = run(tool("promtool"), "test", "rules", f"tests/{tests}", cwd=PROMETHEUS)
    assert "SUCCESS" in out, out


def test_amtool_checks_the_alertmanager_example() -> None:
    out = run(tool("amtool"), "check-config", "alertmanager/alertmanager.yml", cwd=EXAMPLES)
    assert "SUCCESS" in out and "2 receivers" in out, out


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads((EXAMPLES / "grafana" / "remediate-dashboard.json").read_text())
    rules = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # Grafana's variables as Grafana would fill them in.
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$__range", "6h")
            record = f"dashboard:panel{panel['id']}:{target['refId']}"
            rules.append({"record": record, "expr": expr})
    file = tmp_path / "dashboard.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run(tool("promtool"), "check", "rules", str(file))
    assert f"SUCCESS: {len(rules)} rules found" in out, out


def test_the_sweep_heartbeat_and_the_escalations_reach_metrics(store_url: str) -> None:
    settings = load_settings(
        remediation_database_url=store_url, alert_webhook_token="t" * 24, sweep_interval_seconds=120
    )
    store = Store.open(SecretStr(store_url))
    try:
        before = time.time()
        _heartbeat(SweepReport(), settings)  # what every health sweep does when it ends
        incident = store.open_incident(
            runbook="rate-limiter", severity="P2", resource="redis://example", title="examples"
        )
        store.set_incident_status(incident.id, status="escalated")

        families = {f.name: f for f in StoreGauges(store, sweep_interval_seconds=120).collect()}
        [beat] = families["remediate_sweep_last_run_timestamp_seconds"].samples
        assert before <= beat.value <= time.time()
        escalated = {
            s.labels["runbook"]: s.value
            for s in families["remediate_incidents"].samples
            if s.labels["status"] == "escalated"
        }
        assert escalated["rate-limiter"] >= 1 and escalated["connection-pool-exhausted"] >= 0

        # And through the receiver's own /metrics, as Prometheus scrapes it.
        with TestClient(create_app(settings, store=store)) as client:
            text = client.get("/metrics").text
        assert "remediate_store_up 1.0" in text
        assert "remediate_sweep_interval_seconds 120.0" in text
        assert 'remediate_incidents{runbook="rate-limiter",status="escalated"}' in text
        assert "remediate_sweep_last_run_timestamp_seconds " in text
    finally:
        store.close()


def test_a_store_that_is_down_is_a_gauge_not_an_error() -> None:
    store = Store(SecretStr("postgresql://postgres@127.0.0.1:1/nowhere"))
    families = {f.name: f for f in StoreGauges(store, sweep_interval_seconds=300).collect()}
    assert families["remediate_store_up"].samples[0].value == 0
    assert "remediate_incidents" not in families
