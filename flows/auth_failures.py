"""Seed 000, "Authentication Failures" (P2): users cannot log in, "Unauthorized" errors.

Detect: the known-good probe user's login answers 401/403; `SECRET_KEY` changed since the
known-good snapshot (a new key invalidates every token issued before). Diagnose, from the backend
container's settings: `SECRET_KEY` set and long enough (length only) and its fingerprint against
the snapshot; `ACCESS_TOKEN_EXPIRE_MINUTES`; CORS origins include `FRONTEND_URL`. The diagnosis says
which setting is wrong and the incident escalates; only when every setting is right is the backend
restarted (approval), to pick up a fixed configuration or drop a bad state. Verify: the probe login
succeeds. A healthy run records the key's fingerprint as the known-good snapshot.
"""

from __future__ import annotations

import json
from typing import Any

from core.actions import recheck_restart, restart_action, restart_planned, wait_until_ok
from core.incident import IncidentRun, runbook_flow
from core.models import ActionResult, Diagnosis, Finding, Outcome, Plan
from core.settings import ConfigError, Settings, load_settings
from core.store import Store
from tasks import containers, http_probe
from tasks.containers import AppConfig, ComposeService

RUNBOOK = "auth-failures"
SNAPSHOT = "secret-key-fingerprint"
RESTART = "restart-backend"
MIN_KEY_LENGTH = 32
PREVENTION = (
    "keep SECRET_KEY in the secret store and rotate it deliberately (tokens are invalidated);"
    " alert on login failure rate; test CORS origins per environment"
)


def origins(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        parsed = json.loads(raw)
        if isinstance(parsed, list):
            return [str(o).rstrip("/") for o in parsed]
    except json.JSONDecodeError:
        pass
    return [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]


def config_findings(
    config: AppConfig, *, known_fingerprint: str | None, frontend_url: str | None
) -> list[Finding]:
    found = [
        Finding(
            check="secret-key",
            ok=config.secret_key_length >= MIN_KEY_LENGTH,
            detail=f"SECRET_KEY is {config.secret_key_length} characters"
            f" (at least {MIN_KEY_LENGTH})"
            if config.secret_key_length
            else "SECRET_KEY is not set",
        )
    ]
    if known_fingerprint and config.secret_key_fingerprint:
        same = known_fingerprint == config.secret_key_fingerprint
        found.append(
            Finding(
                check="secret-key-unchanged",
                ok=same,
                detail="SECRET_KEY matches the known-good fingerprint"
                if same
                else "SECRET_KEY changed since the known-good snapshot: every token"
                " issued before is invalid",
            )
        )
    minutes = config.access_token_expire_minutes
    ok_minutes = minutes is None or (minutes.isdigit() and int(minutes) >= 5)
    found.append(
        Finding(
            check="token-expiry",
            ok=ok_minutes,
            detail=f"ACCESS_TOKEN_EXPIRE_MINUTES={minutes}"
            if minutes
            else "ACCESS_TOKEN_EXPIRE_MINUTES not set (the app's default)",
        )
    )
    if frontend_url:
        allowed = origins(config.cors_origins)
        ok_cors = frontend_url.rstrip("/") in allowed or "*" in allowed
        found.append(
            Finding(
                check="cors",
                ok=ok_cors,
                detail=f"BACKEND_CORS_ORIGINS {'includes' if ok_cors else 'lacks'} {frontend_url}",
            )
        )
    return found


def preflight(settings: Settings, params: dict[str, Any]) -> None:
    if not (settings.app_url and settings.login_probe_email and settings.login_probe_password):
        raise ConfigError("auth-failures needs APP_URL, LOGIN_PROBE_EMAIL and LOGIN_PROBE_PASSWORD")


@runbook_flow(RUNBOOK)
def auth_failures(
    *,
    login_path: str | None = None,
    stop_timeout_seconds: int = 10,
    start_timeout_seconds: float = 60,
    dry_run: bool = False,
    auto_approve: bool = False,
    requested_by: str | None = None,
) -> Outcome:
    """Seed 000: "Unauthorized" → which setting is wrong → restart after a fix (approval)."""
    settings = load_settings()
    preflight(settings, {})
    assert settings.app_url and settings.login_probe_email and settings.login_probe_password
    email, password, app_url = (
        settings.login_probe_email,
        settings.login_probe_password,
        settings.app_url,
    )
    store = Store.open(settings.remediation_database_url)
    service = ComposeService.from_settings(settings, settings.app_service)

    route = login_path or settings.app_login_path
    attempts: list[http_probe.HttpProbe] = []

    def login(check: str) -> Finding:
        probe = http_probe.probe_login(
            app_url, path=route, email=email, password=password, form=settings.app_login_form
        )
        attempts.append(probe)
        return Finding(
            check=check, ok=probe.status not in {401, 403} and probe.ok, detail=probe.detail
        )

    # Detect: the probe user's login; the key against its known-good fingerprint.
    config = containers.read_app_config(service) if service else None
    saved = store.latest_snapshot(SNAPSHOT, service.resource) if service else None
    known = saved.get("fingerprint") if saved else None
    checks = (
        config_findings(config, known_fingerprint=known, frontend_url=settings.frontend_url)
        if config
        else []
    )
    findings = [login("login"), *[c for c in checks if c.check == "secret-key-unchanged"]]
    if attempts[-1].misconfigured:  # the probe does not fit the app: never a restart
        return IncidentRun.misconfigured(
            RUNBOOK,
            findings=findings,
            problem=http_probe.misconfiguration(
                attempts[-1], setting="APP_LOGIN_PATH, APP_LOGIN_FORM"
            ),
        )
    if all(f.ok for f in findings):
        if (
            service
            and config
            and config.secret_key_fingerprint
            and all(c.ok for c in checks)
            and known != config.secret_key_fingerprint
        ):
            store.save_snapshot(
                SNAPSHOT, service.resource, {"fingerprint": config.secret_key_fingerprint}
            )
        return IncidentRun.healthy(RUNBOOK, findings=findings)
    run = IncidentRun.open(
        RUNBOOK,
        resource=app_url,
        findings=findings,
        settings=settings,
        requester=requested_by,
        impact="users cannot log in ('Unauthorized')",
    )

    # Diagnose: which setting is wrong.
    wrong = [c for c in checks if not c.ok]
    run.diagnosed(
        Diagnosis(
            causes=[c.check for c in wrong] or ["stale-process"],
            evidence=[c for c in checks if c.check != "secret-key-unchanged"],
        )
    )
    if config is None or service is None:
        return run.escalate(
            "the backend container's settings cannot be read (DOCKER_HOST,"
            " COMPOSE_PROJECT_NAME, APP_SERVICE)"
        )
    if wrong:
        return run.escalate(
            "fix the setting, then restart the backend: " + "; ".join(c.detail for c in wrong)
        )

    found = containers.find_service(service)
    plan = Plan(
        runbook=RUNBOOK,
        resource=app_url,
        summary=f"restart {service.service}: its settings are right but logins fail",
        actions=[
            restart_action(
                RESTART,
                service,
                found,
                description="Every auth setting checks out, so the running process is behind its"
                " configuration: restart it (seed 000).",
            )
        ],
    )
    run.planned(plan)
    if dry_run:
        return run.dry_run(plan)

    def act(current: Plan) -> list[ActionResult]:
        return [restart_planned(current.actions[0], service, stop_timeout=stop_timeout_seconds)]

    def verify() -> list[Finding]:
        return [wait_until_ok(lambda: login("login-after"), timeout=start_timeout_seconds)]

    return run.carry_out(
        plan,
        auto_approve=auto_approve,
        recheck=lambda p: recheck_restart(
            p, service, still_broken=lambda: not login("login-recheck").ok
        ),
        act=act,
        verify=verify,
        prevention=PREVENTION,
    )
