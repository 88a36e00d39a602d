"""auth-server-health against a real backend container (seed 002 §5): it breaks in memory, the
runbook restarts it, /health answers again several times in a row."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from remediate.flows.auth_server_health import auth_server_health
from tests.e2e.conftest import answer, paused_run_where, start
from tests.support.backend import Backend, BackendProject
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def backend(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    compose = BackendProject()
    running = compose.start_backend(free_port(), environment={"SLOW_SECONDS": "4"})
    for name, value in {"APP_URL": running.url, **compose.env}.items():
        monkeypatch.setenv(name, value)
    running.container.reload()
    yield running
    compose.close()


def break_it(backend: Backend, mode: str) -> None:
    httpx.post(f"{backend.url}/_control", json={"mode": mode}, timeout=5).raise_for_status()


def test_healthy_backend(backend: Backend) -> None:
    assert auth_server_health().status == "healthy"


def test_503_backend_is_restarted_after_approval(backend: Backend) -> None:
    break_it(backend, "503")
    httpx.get(f"{backend.url}/health", timeout=5)  # an error line in the log
    started = backend.container.attrs["State"]["StartedAt"]

    future = start(flow=auth_server_health, requested_by="pager")
    answer(paused_run_where("requested_by", "pager"), approve=True, approver="nia")
    outcome = future.result(timeout=120)

    assert outcome.status == "resolved", outcome.summary
    assert set(outcome.causes) == {"unhealthy", "errors-in-log"}
    assert any(
        "worker pool exhausted" in f.detail for f in outcome.findings if f.check == "log-error"
    )
    after = next(f for f in outcome.findings if f.check == "health-after")
    assert after.ok and after.detail.startswith("3 of 3 checks healthy")
    backend.container.reload()
    assert backend.container.attrs["State"]["StartedAt"] != started
    assert httpx.get(f"{backend.url}/health", timeout=5).status_code == 200


def test_slow_backend_counts_as_failing(backend: Backend) -> None:
    break_it(backend, "slow")
    outcome = auth_server_health(latency_limit_seconds=2, auto_approve=True)
    assert outcome.status == "resolved"
    assert (
        "over the 2 s limit" in outcome.findings[0].detail
        or "Timeout" in outcome.findings[0].detail
    )


def test_dry_run_and_declined_leave_it_broken(backend: Backend) -> None:
    break_it(backend, "503")
    started = backend.container.attrs["State"]["StartedAt"]
    assert auth_server_health(dry_run=True).status == "planned"
    future = start(flow=auth_server_health, requested_by="declined-run")
    answer(paused_run_where("requested_by", "declined-run"), approve=False, approver="oz")
    assert future.result(timeout=60).status == "declined"
    backend.container.reload()
    assert backend.container.attrs["State"]["StartedAt"] == started
    assert httpx.get(f"{backend.url}/health", timeout=5).status_code == 503


def test_timed_out_approval_restarts_nothing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_it(backend, "503")
    started = backend.container.attrs["State"]["StartedAt"]
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert auth_server_health().status == "timed-out"
    backend.container.reload()
    assert backend.container.attrs["State"]["StartedAt"] == started


def test_probes_that_do_not_fit_the_app_are_a_configuration_problem_not_a_restart(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend answers as the FastAPI template's does (drills/assets/backend.py): the
    default routes fit it, even without the trailing slash it redirects to; a wrong path (404)
    or a JSON body on its OAuth2 form login (422) is reported naming the settings, and the
    healthy backend is not restarted, auto-approve or not."""
    container = backend.container
    started = container.attrs["State"]["StartedAt"]
    assert auth_server_health().status == "healthy"  # /api/v1/utils/health-check/
    assert auth_server_health(health_path="/api/v1/utils/health-check").status == "healthy"

    typo = auth_server_health(health_path="/helth", auto_approve=True)
    assert typo.status == "failed" and typo.incident_id is None
    assert "configuration problem" in typo.summary and "APP_HEALTH_PATH" in typo.summary
    assert not typo.actions

    monkeypatch.setenv("LOGIN_PROBE_EMAIL", "probe@app.test")
    monkeypatch.setenv("LOGIN_PROBE_PASSWORD", "probe-password-0")
    monkeypatch.setenv("APP_LOGIN_FORM", "json")
    wrong_form = auth_server_health(health_path="/helth", auto_approve=True)
    assert wrong_form.status == "failed" and not wrong_form.actions
    container.reload()
    assert container.attrs["State"]["StartedAt"] == started, "a healthy backend was restarted"
