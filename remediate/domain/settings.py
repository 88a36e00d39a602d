"""Configuration from the environment (or `.env`), with the variable names of CONTRACT.md.

Secrets are `SecretStr`: they print as `**********` and reach a driver only through
`.get_secret_value()` at the point of use. A missing or malformed setting raises `ConfigError`
with one line naming the variable, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from remediate.domain.errors import ConfigError
from remediate.domain.redact import redact_url

__all__ = [
    "ConfigError",
    "Settings",
    "load_settings",
    "redact_url",
    "setting_problem",
    "settings_read_once",
]

DEFAULT_STORE_URL = "postgresql://postgres@127.0.0.1:5432/remediate"
# Supabase's own login roles (its services and tooling): their sessions are never a leak to cut.
SUPABASE_SYSTEM_ROLES = (
    "supabase_admin",
    "supabase_auth_admin",
    "supabase_storage_admin",
    "supabase_functions_admin",
    "supabase_realtime_admin",
    "supabase_replication_admin",
    "supabase_read_only_user",
    "supabase_etl_admin",
    "authenticator",
    "pgbouncer",
    "dashboard_user",
)
# Tokens and signing keys shorter than this are refused: they can be guessed.
MIN_SECRET_LENGTH = 16


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _pairs(value: object) -> object:
    """`NAME=VALUE,NAME=VALUE` into a dict (a dict or JSON object passes through)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            return json.loads(text)
        pairs = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, raw = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{item!r} is not NAME=VALUE")
            pairs[name.strip()] = raw.strip()
        return pairs
    return value


def _check_postgres_url(name: str, value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(
            f"{name} must be a postgresql:// URL (postgresql://user@host:port/database)"
        )
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError(f"{name} has no host (postgresql://user@host:port/database)")
    if not parts.path.strip("/"):
        raise ValueError(f"{name} names no database (postgresql://user@host:port/database)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"{name} has a malformed port") from None
    return value


class Settings(BaseSettings):
    """Everything the product reads from its environment."""

    # Empty values are ignored (a default applies), as the FastAPI template's settings do.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
    )

    # The guarded application (CONTRACT.md).
    target_database_url: SecretStr | None = None
    target_redis_url: SecretStr | None = None
    docker_host: str | None = None
    compose_project_name: str | None = None
    # The compose service of the connection pooler (PgBouncer, Supavisor…), when there is one.
    pooler_service: str | None = None
    # The compose service of the database (seed 000: `docker compose ps db`).
    database_service: str = "db"
    # The compose service of the backend application (seed 000: `docker compose logs backend`).
    app_service: str = "backend"
    # The compose service of the frontend (seed 000: `docker compose logs frontend`).
    frontend_service: str = "frontend"
    # The compose service of Redis (rate-limiter restarts it when it does not answer).
    redis_service: str = "redis"
    app_url: str | None = None
    frontend_url: str | None = None
    # A known-good probe user for login checks (rls-auth-failure, auth-failures…).
    login_probe_email: str | None = None
    login_probe_password: SecretStr | None = None
    # The backend's routes; defaults are the FastAPI full-stack template's (API_V1_STR=/api/v1).
    app_health_path: str = "/api/v1/utils/health-check/"
    app_login_path: str = "/api/v1/login/access-token"
    # A route that needs the login's token (the template's `GET /api/v1/users/me`): a token issued
    # before and rejected now, while a new login's is accepted, means SECRET_KEY changed.
    app_me_path: str = "/api/v1/users/me"
    # How the login route takes credentials: `oauth2` (a form with `username` and `password`,
    # FastAPI's OAuth2PasswordRequestForm, as the template) or `json` (`{"email", "password"}`).
    app_login_form: Literal["oauth2", "json"] = "oauth2"
    alembic_config: str | None = None
    migrations_dir: str | None = None
    app_repo: str | None = None
    sentry_api_url: str | None = None
    sentry_auth_token: SecretStr | None = None
    sentry_org: str | None = None
    sentry_project: str | None = None
    sentry_dsn: SecretStr | None = None
    slack_webhook_url: SecretStr | None = None
    pagerduty_routing_key: SecretStr | None = None
    statuspage_url: str | None = None
    github_repo: str | None = None
    github_token: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    emails_from_email: str | None = None
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_url: str = "https://api.sendgrid.com"
    smtp_tls: bool = True  # STARTTLS, as the FastAPI template's SMTP_TLS
    smtp_ssl: bool = False
    alert_webhook_token: SecretStr | None = None
    sentry_client_secret: SecretStr | None = None
    # The Slack app's signing secret: approval messages carry buttons, and
    # POST /slack/interactions takes the clicks (CONTRACT.md, "Approvals from Slack").
    slack_signing_secret: SecretStr | None = None
    # A Slack app's bot token (`xoxb-…`) and Slack's Web API: `remediate doctor` checks the token
    # with `auth.test` (nothing is posted).
    slack_bot_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api"

    # The alert receiver (receiver/).
    # A YAML file of routing rules; unset: the embedded defaults (remediate/intake/routes.yaml).
    alert_routes_file: str | None = None
    alert_dedup_ttl_seconds: int = Field(default=3600, ge=1)
    alert_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # New runs one request may start; the rest are answered 503 + Retry-After, so the sender's
    # retry starts them (the started ones are then duplicates): a bounded burst, nothing lost.
    alert_max_runs_per_request: int = Field(default=20, ge=1, le=1000)
    # The base URL people reach the receiver at, for signed approval links in messages.
    receiver_public_url: str | None = None
    approval_link_secret: SecretStr | None = None

    # The incident lifecycle: clocks, escalation, notifications (docs/lifecycle.md).
    # Resolution targets in seconds by runbook id or severity: `P1=900,rate-limiter=120`.
    incident_targets: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    # Who each level is: `L1=@devops-oncall,L2=@backend-lead,L3=@architect,tech-lead=…,security=…`.
    escalation_contacts: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    statuspage_api_key: SecretStr | None = None
    # Status page component ids by catalogue component: `Postgres Database=abc123,…`.
    statuspage_components: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    github_api_url: str = "https://api.github.com"
    notify_attempts: int = Field(default=3, ge=1, le=10)
    watchdog_interval_seconds: int = Field(default=60, ge=5)
    # A run renews its lease in the store every third of this while it executes (waiting for an
    # approval included); one left expired for another whole lease means its executor is lost:
    # the incident escalates and the run is marked Crashed (docs/reliability.md).
    run_lease_seconds: int = Field(default=15, ge=3, le=600)

    # Scheduled health sweeps.
    sweep_interval_seconds: int = Field(default=300, ge=10)
    # More databases on TARGET_DATABASE_URL's server for the database runbooks to sweep.
    sweep_databases: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sweep_concurrency: int = Field(default=8, ge=1, le=64)
    sweep_connections_per_server: int = Field(default=4, ge=1, le=64)
    # Schemas whose RLS policies rls-auth-failure watches, comma separated; empty: every schema but
    # PostgreSQL's and Supabase's internal ones (`auth` among them; `storage` is watched).
    rls_schemas: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Runs an alert starts that `remediate serve` executes in its own process at once.
    # 0: none; Prefect's own runner executes every run (as workers do).
    warm_workers: int = Field(default=4, ge=0, le=32)
    # The local Prefect server a command starts and owns when no PREFECT_API_URL is configured
    # (remediate/engine/prefect_api.py reads it from the environment before these settings exist).
    remediate_prefect_port: int = Field(default=4200, ge=1, le=65535)

    # The product itself.
    remediation_database_url: SecretStr = SecretStr(DEFAULT_STORE_URL)
    # The product's own Redis (alert deduplication), never the guarded app's TARGET_REDIS_URL.
    remediation_redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    remediation_redis_prefix: str = Field(default="remediate:", min_length=1)
    remediation_environment: str = Field(default="production", min_length=1)
    # Where a run keeps its record while the store is unreachable (default ~/.remediate/spool).
    remediation_spool_dir: Path | None = None
    incident_owner: str = "@on-call"

    # Roles whose sessions connection-pool-exhausted never terminates (added to every run's own).
    protected_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(SUPABASE_SYSTEM_ROLES)
    )

    # The approval gate.
    approvers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    approval_require_distinct_approver: bool = False
    approval_timeout_seconds: int = Field(default=900, ge=1)
    approval_poll_seconds: float = Field(default=1.0, gt=0, le=10)
    # With APPROVERS set: whether answers whose channel cannot prove who gave them (the Prefect
    # UI form, `remediate approve`, signed links) count; off, only Slack clicks do.
    approval_accept_unverified: bool = True
    # Rules `runbook:action:environment`, `*` matching anything, comma separated.
    auto_approve: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # The safety envelope.
    remediation_kill_switch: bool = False
    remediation_cooldown_seconds: int = Field(default=60, ge=0)
    remediation_budget_max: int = Field(default=3, ge=1)
    remediation_budget_window_seconds: int = Field(default=3600, ge=1)
    remediation_max_blast_radius: int = Field(default=500, ge=1)
    remediation_lock_timeout_seconds: float = Field(default=30.0, ge=0)

    _split_csv = field_validator(
        "approvers",
        "auto_approve",
        "sweep_databases",
        "protected_roles",
        "rls_schemas",
        mode="before",
    )(_csv)
    _split_pairs = field_validator(
        "incident_targets", "escalation_contacts", "statuspage_components", mode="before"
    )(_pairs)

    @field_validator("target_database_url")
    @classmethod
    def _target_url(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_postgres_url("TARGET_DATABASE_URL", value)

    @field_validator("remediation_database_url")
    @classmethod
    def _store_url(cls, value: SecretStr) -> SecretStr:
        checked = _check_postgres_url("REMEDIATION_DATABASE_URL", value)
        assert checked is not None
        return checked

    @field_validator("sentry_dsn")
    @classmethod
    def _dsn(cls, value: SecretStr | None) -> SecretStr | None:
        """The shape sentry-sdk requires, checked here so that a bad DSN is one line naming
        SENTRY_DSN instead of sentry-sdk's traceback at start-up."""
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        shape = "https://PUBLIC_KEY@HOST/PROJECT_ID, as the Sentry project's Client Keys page shows"
        if parts.scheme not in {"http", "https"} or not parts.hostname or not parts.username:
            raise ValueError(f"SENTRY_DSN is not a Sentry DSN ({shape})")
        if not parts.path.rstrip("/").rsplit("/", 1)[-1].isdigit():
            raise ValueError(f"SENTRY_DSN names no project id ({shape})")
        return value

    @field_validator("alert_webhook_token", "approval_link_secret", "slack_signing_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            name = (info.field_name or "secret").upper()
            raise ValueError(
                f"{name} is too short: at least {MIN_SECRET_LENGTH} characters (for example"
                " `openssl rand -hex 24`)"
            )
        return value

    @field_validator("auto_approve")
    @classmethod
    def _rules(cls, rules: list[str]) -> list[str]:
        for rule in rules:
            if len(rule.split(":")) != 3 or not all(rule.split(":")):
                raise ValueError(
                    f"AUTO_APPROVE rule {rule!r} must be runbook:action:environment ('*' for any)"
                )
        return rules

    @property
    def approval_key(self) -> SecretStr | None:
        """The key that signs Slack button values and the receiver's proofs of a checked answer:
        APPROVAL_LINK_SECRET, or one derived from SLACK_SIGNING_SECRET when only that is set
        (every receiver and every process executing runs derives the same)."""
        if self.approval_link_secret is not None:
            return self.approval_link_secret
        if self.slack_signing_secret is None:
            return None
        import hashlib
        import hmac

        raw = self.slack_signing_secret.get_secret_value().encode()
        return SecretStr(hmac.new(raw, b"remediate-approvals-v1", hashlib.sha256).hexdigest())

    def require_target_database(self) -> SecretStr:
        """The guarded database URL, or a ConfigError naming the variable."""
        if self.target_database_url is None:
            raise ConfigError(
                "TARGET_DATABASE_URL is not set (postgresql://user@host:port/database)"
            )
        return self.target_database_url


_READ_ONCE: ContextVar[Settings | None] = ContextVar("remediate_settings", default=None)


@contextmanager
def settings_read_once(settings: Settings) -> Iterator[Settings]:
    """Within this block (this thread, or a context copied from it), `load_settings()` returns
    `settings` instead of reading the environment again: a health sweep reads them once for its
    hundreds of checks."""
    token = _READ_ONCE.set(settings)
    try:
        yield settings
    finally:
        _READ_ONCE.reset(token)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation error into one `ConfigError` line."""
    read = _READ_ONCE.get()
    if read is not None and not overrides:
        return read
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(setting_problem(exc.errors()[0])[1]) from None


def setting_problem(error: ErrorDetails) -> tuple[str, str]:
    """The variable one validation error is about, and one line naming it."""
    name = str(error["loc"][0]).upper() if error["loc"] else "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    if name.lower() in message.lower():
        return name, message
    return name, f"{name}: {message}"
