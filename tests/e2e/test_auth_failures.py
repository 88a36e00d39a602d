"""auth-failures against a real backend container: which setting is wrong, never its value."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest

from remediate.flows.auth_failures import auth_failures
from tests.e2e.conftest import assert_no_secret
from tests.support.backend import BackendProject
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")
KEY_A = "key-a-canary-" + "a" * 40
KEY_B = "key-b-canary-" + "b" * 40


@pytest.fixture
def backend(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Deploy the backend with a SECRET_KEY (and other settings): the one before is removed
    first; its URL once it answers."""
    compose = BackendProject()
    port = free_port()  # one address per test: a redeploy keeps the app's URL

    def run(secret_key: str, **extra: str) -> str:
        compose.remove_containers()
        url = compose.start_backend(
            port,
            environment={
                "SECRET_KEY": secret_key,
                "ACCESS_TOKEN_EXPIRE_MINUTES": "11520",
                "BACKEND_CORS_ORIGINS": "http://localhost:5173,https://app.test",
                **extra,
            },
        ).url
        monkeypatch.setenv("APP_URL", url)
        return url

    for name, value in {
        **compose.env,
        "FRONTEND_URL": "https://app.test",
        "LOGIN_PROBE_EMAIL": "probe@app.test",
        "LOGIN_PROBE_PASSWORD": "probe-pass-canary",
    }.items():
        monkeypatch.setenv(name, value)
    yield run
    compose.close()


def test_short_secret_key_is_named_and_nothing_restarted(backend: Callable[..., str]) -> None:
    backend("short-key-canary")
    outcome = auth_failures(auto_approve=True)
    assert outcome.status == "escalated"
    assert outcome.causes == ["secret-key"]
    assert "SECRET_KEY is 16 characters (at least 32)" in outcome.summary
    assert_no_secret(outcome, ["short-key-canary", "probe-pass-canary"])
    assert not outcome.actions


def test_a_changed_key_is_detected_against_the_snapshot(backend: Callable[..., str]) -> None:
    backend(KEY_A)
    assert auth_failures().status == "healthy"  # records KEY_A's fingerprint
    backend(KEY_B)  # redeployed with a new key: every issued token is now invalid
    outcome = auth_failures(auto_approve=True)
    assert outcome.status == "escalated"
    assert outcome.causes == ["secret-key-unchanged", "secret-key-changed"]
    assert "every token issued before is invalid" in outcome.summary
    seen = outcome.model_dump_json()
    assert KEY_A not in seen and KEY_B not in seen
    assert not outcome.actions  # nothing restarted: the old key is a person's decision


def test_tokens_issued_before_a_key_change_are_rejected_seen_without_the_container(
    backend: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template's tokens are JWTs signed with SECRET_KEY: after a change every earlier token
    gets 403 "Could not validate credentials" while a new login works. Seen from the outside
    alone (the product cannot read the container), and reported once."""
    backend(KEY_A)
    monkeypatch.delenv("COMPOSE_PROJECT_NAME")
    assert auth_failures().status == "healthy"  # keeps the probe user's token
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "unused")
    backend(KEY_B)
    monkeypatch.delenv("COMPOSE_PROJECT_NAME")

    outcome = auth_failures(auto_approve=True)

    assert outcome.status == "escalated" and outcome.causes == ["secret-key-changed"]
    assert "rejected (HTTP 403) while a new login's is accepted" in outcome.summary
    assert "restore the previous key" in outcome.summary and not outcome.actions
    seen = outcome.model_dump_json()
    assert KEY_A not in seen and KEY_B not in seen and "eyJ" not in seen  # no token shown
    assert auth_failures().status == "healthy"  # reported once: the new key is known-good


def test_cors_reads_the_templates_frontend_host(backend: Callable[..., str]) -> None:
    backend(KEY_A, BACKEND_CORS_ORIGINS="", FRONTEND_HOST="https://app.test")
    assert auth_failures().status == "healthy"
    backend(KEY_A, BACKEND_CORS_ORIGINS="", FRONTEND_HOST="https://old.test")
    url = os.environ["APP_URL"]
    httpx.post(f"{url}/_control", json={"mode": "401"})
    outcome = auth_failures(auto_approve=True)
    assert outcome.causes == ["cors"]
    assert "CORS origins (FRONTEND_HOST) lack https://app.test" in outcome.summary


def test_wrong_cors_and_expiry_are_named(backend: Callable[..., str]) -> None:
    backend(KEY_A, ACCESS_TOKEN_EXPIRE_MINUTES="0", BACKEND_CORS_ORIGINS="http://localhost:5173")
    httpx.post(f"{os.environ['APP_URL']}/_control", json={"mode": "401"})
    outcome = auth_failures(auto_approve=True)
    assert outcome.status == "escalated"
    assert set(outcome.causes) == {"token-expiry", "cors"}
    assert "ACCESS_TOKEN_EXPIRE_MINUTES=0" in outcome.summary
    assert "lack https://app.test" in outcome.summary


def test_right_settings_and_a_stale_process_get_a_restart(backend: Callable[..., str]) -> None:
    url = backend(KEY_A)
    httpx.post(f"{url}/_control", json={"mode": "401"}).raise_for_status()
    outcome = auth_failures(auto_approve=True, stop_timeout_seconds=1)
    assert outcome.status == "resolved", outcome.summary
    assert outcome.causes == ["stale-process"]
    assert httpx.post(f"{url}/auth/login", json={}).status_code == 200


def test_restart_declined_timed_out_and_dry_run_change_nothing(
    backend: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.conftest import answer, paused_run_where, start

    url = backend(KEY_A)
    httpx.post(f"{url}/_control", json={"mode": "401"}).raise_for_status()
    assert auth_failures(dry_run=True).status == "planned"
    future = start(flow=auth_failures, requested_by="decline-auth")
    answer(paused_run_where("requested_by", "decline-auth"), approve=False, approver="sam")
    assert future.result(timeout=60).status == "declined"
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert auth_failures().status == "timed-out"
    assert httpx.post(f"{url}/auth/login", json={}).status_code == 401


def test_a_login_probe_that_does_not_fit_the_form_restarts_nothing(
    backend: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FastAPI template's login takes an OAuth2 form; JSON sent to it is a 422: that is a
    wrong APP_LOGIN_FORM, named as such, never a reason to restart the backend."""
    backend(KEY_A)
    assert auth_failures().status == "healthy"  # the default: the template's form login
    monkeypatch.setenv("APP_LOGIN_FORM", "json")
    outcome = auth_failures(auto_approve=True)
    assert outcome.status == "failed" and not outcome.actions and outcome.incident_id is None
    assert "APP_LOGIN_FORM" in outcome.summary and "422" in outcome.summary
