"""frontend-404 against a real frontend container (seed 000): deep links 404 because the server
was started without the SPA history fallback; after the redeploy, the runbook's restart fixes it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from remediate.drills import ASSETS
from remediate.flows.frontend_404 import frontend_404
from tests.e2e.conftest import DOCKER_HOST, run_host_python, wait_http
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")
FRONTEND = ASSETS / "frontend.py"
SHELL = (
    '<!doctype html><div id="root"></div>'
    '<script type="module" src="/assets/index-4f2a.js"></script>'
)


@dataclass(frozen=True)
class Site:
    url: str
    config: Path  # the frontend server's settings: the deploy the team fixes
    container: Any


@pytest.fixture
def site(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    dist = tmp_path / "site" / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(SHELL)
    (dist / "assets" / "index-4f2a.js").write_text("console.log('app')")
    config = tmp_path / "site" / "frontend.json"
    config.write_text(json.dumps({"history_fallback": False}))  # the broken deploy
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    project, port = f"rt-{uuid.uuid4().hex[:8]}", free_port()
    container = run_host_python(
        engine,
        FRONTEND,
        [str(port), "/srv/site/dist"],
        project=project,
        service="frontend",
        mounts={str(tmp_path / "site"): "/srv/site"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url, container)
    for name, value in {
        "FRONTEND_URL": url,
        "DOCKER_HOST": DOCKER_HOST,
        "COMPOSE_PROJECT_NAME": project,
    }.items():
        monkeypatch.setenv(name, value)
    yield Site(url=url, config=config, container=container)
    container.remove(force=True)
    engine.close()


def test_deep_links_fixed_by_a_restart_after_the_redeploy(site: Site) -> None:
    assert httpx.get(f"{site.url}/dashboard").status_code == 404
    site.config.write_text(json.dumps({"history_fallback": True}))  # the team redeploys

    outcome = frontend_404(auto_approve=True, stop_timeout_seconds=1)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.causes == ["no-history-fallback"]
    checks = {f.check: f.ok for f in outcome.findings}
    assert checks["index-html"] and checks["asset"] and not checks["history-fallback"]
    response = httpx.get(f"{site.url}/settings/profile")
    assert response.status_code == 200 and response.text == SHELL


def test_restart_without_a_fixed_deploy_escalates(site: Site) -> None:
    outcome = frontend_404(auto_approve=True, stop_timeout_seconds=1, verify_timeout_seconds=3)
    assert outcome.status == "escalated" and "verification failed" in outcome.summary
    assert httpx.get(f"{site.url}/dashboard").status_code == 404


def test_dry_run_restarts_nothing(site: Site) -> None:
    site.container.reload()
    started = site.container.attrs["State"]["StartedAt"]
    assert frontend_404(dry_run=True).status == "planned"
    site.container.reload()
    assert site.container.attrs["State"]["StartedAt"] == started


def test_declined_and_timed_out_restart_nothing(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.conftest import answer, paused_run_where, start

    site.config.write_text(json.dumps({"history_fallback": True}))
    site.container.reload()
    started = site.container.attrs["State"]["StartedAt"]
    future = start(flow=frontend_404, requested_by="decline-404")
    answer(paused_run_where("requested_by", "decline-404"), approve=False, approver="tia")
    assert future.result(timeout=60).status == "declined"
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert frontend_404().status == "timed-out"
    site.container.reload()
    assert site.container.attrs["State"]["StartedAt"] == started
    assert httpx.get(f"{site.url}/dashboard").status_code == 404
