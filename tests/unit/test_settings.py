"""Settings: the contract's variable names, secrets kept secret, one clear line per bad value."""

from __future__ import annotations

import pytest

from remediate.domain.settings import ConfigError, load_settings, redact_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (
        "TARGET_DATABASE_URL",
        "REMEDIATION_DATABASE_URL",
        "AUTO_APPROVE",
        "APPROVERS",
        "SLACK_WEBHOOK_URL",
        "SMTP_PORT",
        "APPROVAL_TIMEOUT_SECONDS",
        "POOLER_SERVICE",
        "DOCKER_HOST",
        "COMPOSE_PROJECT_NAME",
    ):
        monkeypatch.delenv(name, raising=False)


def test_contract_names_are_read_and_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARGET_DATABASE_URL", "postgresql://app:hunter2@db:5432/app")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.example/T000/B000/XXXX")
    monkeypatch.setenv("APPROVERS", "alice, bob")
    settings = load_settings()
    assert settings.require_target_database().get_secret_value().endswith("@db:5432/app")
    assert settings.approvers == ["alice", "bob"]
    shown = repr(settings) + str(settings.model_dump())
    assert "hunter2" not in shown and "XXXX" not in shown


def test_dotenv_file_is_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("APPROVAL_TIMEOUT_SECONDS=42\n")
    assert load_settings().approval_timeout_seconds == 42


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "TARGET_DATABASE_URL",
            "mysql://x@h/db",
            "TARGET_DATABASE_URL must be a postgresql:// URL",
        ),
        (
            "TARGET_DATABASE_URL",
            "postgresql://x@h:99999999/db",
            "TARGET_DATABASE_URL has a malformed port",
        ),
        (
            "REMEDIATION_DATABASE_URL",
            "postgresql://x@h:5432/",
            "REMEDIATION_DATABASE_URL names no database",
        ),
        ("APPROVAL_TIMEOUT_SECONDS", "soon", "APPROVAL_TIMEOUT_SECONDS"),
        ("SMTP_PORT", "0", "SMTP_PORT"),
        ("AUTO_APPROVE", "connection-pool-exhausted", "AUTO_APPROVE rule"),
    ],
)
def test_bad_values_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_missing_target_is_named() -> None:
    with pytest.raises(ConfigError, match="TARGET_DATABASE_URL is not set"):
        load_settings().require_target_database()


def test_redact_url_drops_password_and_query() -> None:
    assert redact_url("postgresql://u:pw@h:5433/db?sslpassword=x") == "postgresql://u@h:5433/db"


def test_half_configured_pooler_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from remediate.flows.connection_pool_exhausted import pooler_service

    monkeypatch.setenv("POOLER_SERVICE", "pgbouncer")
    with pytest.raises(
        ConfigError, match="POOLER_SERVICE is set but DOCKER_HOST and COMPOSE_PROJECT"
    ):
        pooler_service(load_settings())
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/podman/podman.sock")
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "app")
    service = pooler_service(load_settings())
    assert service is not None and service.resource == "compose://app/pgbouncer"
