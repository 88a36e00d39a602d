"""api-500-errors against a real backend container running code from a real git repository."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from remediate.drills.sandbox import git
from remediate.flows.api_500_errors import api_500_errors
from tests.e2e.conftest import wait_http
from tests.support.backend import Backend, BackendProject
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")


@dataclass(frozen=True)
class Deployed:
    """The backend running the code of the git repository `repo` (its feature flags)."""

    backend: Backend
    repo: Path

    @property
    def url(self) -> str:
        return self.backend.url

    def deploy(self, crash: bool, message: str) -> None:
        """A release (committed) whose /api/items crashes or not, and the backend restarted."""
        (self.repo / "features.json").write_text(json.dumps({"items_crash": crash}))
        git(self.repo, "commit", "-q", "--allow-empty", "-am", message)
        self.backend.container.restart(timeout=1)
        wait_http(f"{self.url}/health", self.backend.container)


@pytest.fixture
def deployed(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployed]:
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "dev@app.test")
    git(repo, "config", "user.name", "Dev")
    (repo / "features.json").write_text(json.dumps({"items_crash": False}))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "release 1.0")
    compose = BackendProject()
    backend = compose.start_backend(
        free_port(),
        environment={"FEATURES": "/repo/features.json"},
        mounts={str(repo): "/repo"},
        wait=False,  # `deploy` restarts it, then waits
    )
    for name, value in {"APP_URL": backend.url, "APP_REPO": str(repo), **compose.env}.items():
        monkeypatch.setenv(name, value)
    made = Deployed(backend, repo)
    made.deploy(False, "release 1.1")
    yield made
    compose.close()


def test_a_bad_deploy_is_rolled_back(deployed: Deployed) -> None:
    assert api_500_errors().status == "healthy"
    deployed.deploy(True, "items: read ocr_provider")
    assert httpx.get(f"{deployed.url}/api/items").status_code == 500

    outcome = api_500_errors(auto_approve=True, stop_timeout_seconds=1)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.causes == ["recent-deploy"]
    assert any("KeyError('ocr_provider')" in f.detail for f in outcome.findings)
    assert git(deployed.repo, "log", "-1", "--format=%s").strip() == (
        'Revert "items: read ocr_provider"'
    )
    assert httpx.get(f"{deployed.url}/api/items").status_code == 200


def test_database_down_is_escalated_not_rolled_back(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed.deploy(True, "items: read ocr_provider")
    monkeypatch.setenv("TARGET_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/app")
    outcome = api_500_errors(auto_approve=True)
    assert outcome.status == "escalated"
    assert outcome.causes == ["database-unreachable", "recent-deploy"]
    assert git(deployed.repo, "log", "-1", "--format=%s").strip() == "items: read ocr_provider"


def test_dry_run_rolls_back_nothing(deployed: Deployed) -> None:
    deployed.deploy(True, "items: read ocr_provider")
    assert api_500_errors(dry_run=True).status == "planned"
    assert httpx.get(f"{deployed.url}/api/items").status_code == 500


def test_declined_and_timed_out_roll_back_nothing(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.conftest import answer, paused_run_where, start

    deployed.deploy(True, "items: read ocr_provider")
    future = start(flow=api_500_errors, requested_by="decline-500")
    answer(paused_run_where("requested_by", "decline-500"), approve=False, approver="ray")
    assert future.result(timeout=60).status == "declined"
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert api_500_errors().status == "timed-out"
    assert git(deployed.repo, "log", "-1", "--format=%s").strip() == "items: read ocr_provider"
    assert httpx.get(f"{deployed.url}/api/items").status_code == 500


def test_after_the_approval_the_plan_is_read_again(deployed: Deployed) -> None:
    """The approver took their time: a new commit landed while the plan waited, so the commit
    the plan names is no longer the deploy to roll back; nothing is reverted or restarted. And
    when the errors have stopped by the time of the answer, there is nothing left to do."""
    from tests.e2e.conftest import answer, paused_run_where, start

    repo = deployed.repo
    deployed.deploy(True, "items: read ocr_provider")
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
    deployed.deploy(False, "items: fixed by hand")  # the errors stop before the answer
    answer(run_id, approve=True, approver="alice")
    outcome = future.result(timeout=90)
    assert outcome.status == "resolved", outcome.summary
    assert "nothing left to change" in outcome.summary
    assert git(repo, "log", "-1", "--format=%s").strip() == "items: fixed by hand"
