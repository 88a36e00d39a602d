"""api-500-errors against a real backend container running code from a real git repository."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from remediate.drills.sandbox import git
from remediate.flows.api_500_errors import api_500_errors
from tests.e2e.conftest import DOCKER_HOST, run_host_python, wait_http
from tests.e2e.test_auth_server_health import BACKEND
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def deployed(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "dev@app.test")
    git(repo, "config", "user.name", "Dev")
    (repo / "features.json").write_text(json.dumps({"items_crash": False}))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "release 1.0")
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    project, port = f"rt-{uuid.uuid4().hex[:8]}", free_port()
    container = run_host_python(
        engine,
        BACKEND,
        [str(port)],
        project=project,
        service="backend",
        environment={"FEATURES": "/repo/features.json"},
        mounts={str(repo): "/repo"},
    )
    url = f"http://127.0.0.1:{port}"
    for name, value in {
        "APP_URL": url,
        "DOCKER_HOST": DOCKER_HOST,
        "APP_REPO": str(repo),
        "COMPOSE_PROJECT_NAME": project,
    }.items():
        monkeypatch.setenv(name, value)

    def deploy(crash: bool, message: str) -> None:
        (repo / "features.json").write_text(json.dumps({"items_crash": crash}))
        git(repo, "commit", "-q", "--allow-empty", "-am", message)
        container.restart(timeout=1)
        wait_http(f"{url}/health", container)

    deploy(False, "release 1.1")
    yield {"url": url, "repo": repo, "deploy": deploy}
    container.remove(force=True)
    engine.close()


def test_a_bad_deploy_is_rolled_back(deployed: dict[str, Any]) -> None:
    assert api_500_errors().status == "healthy"
    deployed["deploy"](True, "items: read ocr_provider")
    assert httpx.get(f"{deployed['url']}/api/items").status_code == 500

    outcome = api_500_errors(auto_approve=True, stop_timeout_seconds=1)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.causes == ["recent-deploy"]
    assert any("KeyError('ocr_provider')" in f.detail for f in outcome.findings)
    assert git(deployed["repo"], "log", "-1", "--format=%s").strip() == (
        'Revert "items: read ocr_provider"'
    )
    assert httpx.get(f"{deployed['url']}/api/items").status_code == 200


def test_database_down_is_escalated_not_rolled_back(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed["deploy"](True, "items: read ocr_provider")
    monkeypatch.setenv("TARGET_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/app")
    outcome = api_500_errors(auto_approve=True)
    assert outcome.status == "escalated"
    assert outcome.causes == ["database-unreachable", "recent-deploy"]
    assert git(deployed["repo"], "log", "-1", "--format=%s").strip() == "items: read ocr_provider"


def test_dry_run_rolls_back_nothing(deployed: dict[str, Any]) -> None:
    deployed["deploy"](True, "items: read ocr_provider")
    assert api_500_errors(dry_run=True).status == "planned"
    assert httpx.get(f"{deployed['url']}/api/items").status_code == 500


def test_declined_and_timed_out_roll_back_nothing(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.conftest import answer, paused_run_where, start

    deployed["deploy"](True, "items: read ocr_provider")
    future = start(flow=api_500_errors, requested_by="decline-500")
    answer(paused_run_where("requested_by", "decline-500"), approve=False, approver="ray")
    assert future.result(timeout=60).status == "declined"
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert api_500_errors().status == "timed-out"
    assert git(deployed["repo"], "log", "-1", "--format=%s").strip() == "items: read ocr_provider"
    assert httpx.get(f"{deployed['url']}/api/items").status_code == 500


def test_after_the_approval_the_plan_is_read_again(deployed: dict[str, Any]) -> None:
    """The approver took their time: a new commit landed while the plan waited, so the commit
    the plan names is no longer the deploy to roll back; nothing is reverted or restarted. And
    when the errors have stopped by the time of the answer, there is nothing left to do."""
    from tests.e2e.conftest import answer, paused_run_where, start

    repo = deployed["repo"]
    deployed["deploy"](True, "items: read ocr_provider")
    future = start(flow=api_500_errors, stop_timeout_seconds=1, requested_by="recheck-test")
    run_id = paused_run_where("requested_by", "recheck-test")
    (repo / "HOTFIX.md").write_text("a colleague's fix, pushed while the plan waited\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hotfix landed meanwhile")
    answer(run_id, approve=True, approver="alice")
    outcome = future.result(timeout=90)
    assert outcome.status == "escalated", outcome.summary
    assert "no longer" in outcome.summary and "hotfix landed meanwhile" in outcome.summary
    assert git(repo, "log", "-1", "--format=%s").strip() == "hotfix landed meanwhile"
    assert not any(a.executed for a in outcome.actions)

    future = start(flow=api_500_errors, stop_timeout_seconds=1, requested_by="recheck-test-2")
    run_id = paused_run_where("requested_by", "recheck-test-2")
    deployed["deploy"](False, "items: fixed by hand")  # the errors stop before the answer
    answer(run_id, approve=True, approver="alice")
    outcome = future.result(timeout=90)
    assert outcome.status == "resolved", outcome.summary
    assert "nothing left to change" in outcome.summary
    assert git(repo, "log", "-1", "--format=%s").strip() == "items: fixed by hand"
