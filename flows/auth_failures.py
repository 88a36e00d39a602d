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
import time
from datetime import UTC, datetime

from remediate.domain.errors import ConfigError
from remediate.domain.models import Diagnosis, Finding, Plan
from remediate.engine import targets
from remediate.engine.actions import (
    RestartsOneService,
    recheck_restart,
    restart_action,
    wait_until_ok,
)
from remediate.engine.runbook import Detection, Escalate, RunbookParameters
from remediate.store.database import Store
from remediate.tasks import containers, http_probe
from remediate.tasks.containers import AppConfig

RUNBOOK = "auth-failures"
SNAPSHOT = "secret-key-fingerprint"
TOKEN_SNAPSHOT = "probe-token"
TOKEN_REFRESH_SECONDS = 6 * 3600
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
        # The template allows FRONTEND_HOST (its default http://localhost:5173); older apps
        # built on it add BACKEND_CORS_ORIGINS.
        allowed = [
            *origins(config.cors_origins),
            (config.frontend_host or "http://localhost:5173").rstrip("/"),
        ]
        names = "FRONTEND_HOST" + (" and BACKEND_CORS_ORIGINS" if config.cors_origins else "")
        ok_cors = frontend_url.rstrip("/") in allowed or "*" in allowed
        found.append(
            Finding(
                check="cors",
                ok=ok_cors,
                detail=f"CORS origins ({names}) {'include' if ok_cors else 'lack'} {frontend_url}",
            )
        )
    return found


def token_expiry(token: str) -> float | None:
    """The `exp` of a JWT (read, not verified: only to tell an expired token from a rejected
    one), None when the token is not a JWT or has none."""
    import base64

    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, AttributeError):
        return None


def earlier_token_finding(
    *, old: http_probe.HttpProbe, new: http_probe.HttpProbe, saved_at: str
) -> Finding | None:
    """A token the probe user got before, rejected now while a new one is accepted: the key
    that signs tokens changed (seed 000: "a changed SECRET_KEY breaks existing tokens")."""
    if not new.ok:
        return None  # the route itself fails: nothing to compare
    rejected = old.status in {401, 403}
    return Finding(
        check="earlier-token-accepted",
        ok=not rejected,
        detail=f"a token issued at {saved_at} is rejected (HTTP {old.status}) while a new"
        " login's is accepted: SECRET_KEY changed since, every token issued before is invalid"
        " and every user must log in again"
        if rejected
        else "a token issued earlier is still accepted",
    )


class AuthFailures(RestartsOneService):
    """Seed 000: "Unauthorized" → which setting is wrong → restart after a fix (approval)."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "users cannot log in ('Unauthorized')"
    prevention = PREVENTION

    class Parameters(RunbookParameters):
        login_path: str | None = None
        stop_timeout_seconds: int = 10
        start_timeout_seconds: float = 60

    params: Parameters

    def preflight(self) -> None:
        settings = self.settings
        if not (settings.app_url and settings.login_probe_email and settings.login_probe_password):
            raise ConfigError(
                "auth-failures needs APP_URL, LOGIN_PROBE_EMAIL and LOGIN_PROBE_PASSWORD"
            )

    @property
    def app_url(self) -> str:
        assert self.settings.app_url
        return self.settings.app_url

    def login(self, check: str) -> Finding:
        settings = self.settings
        assert settings.login_probe_email and settings.login_probe_password
        probe = http_probe.probe_login(
            self.app_url,
            path=self.params.login_path or settings.app_login_path,
            email=settings.login_probe_email,
            password=settings.login_probe_password,
            form=settings.app_login_form,
        )
        self.attempts.append(probe)
        return Finding(
            check=check, ok=probe.status not in {401, 403} and probe.ok, detail=probe.detail
        )

    def detect(self) -> Detection:
        """The probe user's login; the key against its known-good fingerprint."""
        self.preflight()
        settings = self.settings
        self.store = store = Store.open(settings.remediation_database_url)
        self.service = service = targets.compose_service(settings, settings.app_service)
        self.attempts: list[http_probe.HttpProbe] = []
        self.config = config = containers.read_app_config(service) if service else None
        saved = store.latest_snapshot(SNAPSHOT, service.resource) if service else None
        self.known = saved.get("fingerprint") if saved else None
        self.checks = (
            config_findings(
                config, known_fingerprint=self.known, frontend_url=settings.frontend_url
            )
            if config
            else []
        )
        findings = [
            self.login("login"),
            *[c for c in self.checks if c.check == "secret-key-unchanged"],
        ]
        self.fresh = self.attempts[-1].token
        self.earlier = store.latest_snapshot(TOKEN_SNAPSHOT, self.app_url)
        compared = self.compare_tokens()
        self.token_checked = compared is not None
        if compared is not None:
            findings.append(compared)
        if self.attempts[-1].misconfigured:  # the probe does not fit the app: never a restart
            problem = http_probe.misconfiguration(
                self.attempts[-1], setting="APP_LOGIN_PATH, APP_LOGIN_FORM"
            )
            return Detection(resource=self.app_url, findings=findings, misconfigured=problem)
        if all(f.ok for f in findings):
            self.keep_known_good()
        return Detection(resource=self.app_url, findings=findings)

    def compare_tokens(self) -> Finding | None:
        """The token kept from an earlier run against the fresh one, on `APP_ME_PATH`."""
        earlier, fresh = self.earlier, self.fresh
        if not (fresh and earlier and earlier.get("token")):
            return None
        expires = token_expiry(str(earlier["token"]))
        if expires is not None and expires <= time.time() + 60:
            return None  # an expired token proves nothing
        route = self.settings.app_me_path
        return earlier_token_finding(
            old=http_probe.probe_http(self.app_url, path=route, token=str(earlier["token"])),
            new=http_probe.probe_http(self.app_url, path=route, token=fresh),
            saved_at=str(earlier.get("saved_at", "an earlier run")),
        )

    def keep_token(self) -> None:
        """The probe's token, kept to tell a changed SECRET_KEY later (refreshed every few
        hours, and at once after a change was reported, so that it is reported once)."""
        age = time.time() - float((self.earlier or {}).get("saved_epoch", 0))
        if self.fresh and (not self.earlier or age > TOKEN_REFRESH_SECONDS or self.token_checked):
            self.store.save_snapshot(
                TOKEN_SNAPSHOT,
                self.app_url,
                {
                    "token": self.fresh,
                    "saved_epoch": time.time(),
                    "saved_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                },
            )

    def keep_known_good(self) -> None:
        """Healthy: the key's fingerprint becomes the known-good snapshot; the token is kept."""
        service, config = self.service, self.config
        if (
            service
            and config
            and config.secret_key_fingerprint
            and all(c.ok for c in self.checks)
            and self.known != config.secret_key_fingerprint
        ):
            self.store.save_snapshot(
                SNAPSHOT, service.resource, {"fingerprint": config.secret_key_fingerprint}
            )
        self.keep_token()

    def diagnose(self, detection: Detection) -> Diagnosis:
        """Which setting is wrong."""
        service, config = self.service, self.config
        self.wrong = [c for c in self.checks if not c.ok] + [
            f for f in detection.findings if f.check == "earlier-token-accepted" and not f.ok
        ]
        if any(f.check in {"earlier-token-accepted", "secret-key-unchanged"} for f in self.wrong):
            # Reported once: the new key becomes the known-good one (restoring the old key, if the
            # change was not intended, is a person's decision: sessions break either way).
            self.keep_token()
            if service and config and config.secret_key_fingerprint:
                self.store.save_snapshot(
                    SNAPSHOT, service.resource, {"fingerprint": config.secret_key_fingerprint}
                )
        return Diagnosis(
            causes=[
                "secret-key-changed" if c.check == "earlier-token-accepted" else c.check
                for c in self.wrong
            ]
            or ["stale-process"],
            evidence=[c for c in self.checks if c.check != "secret-key-unchanged"],
        )

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """A wrong setting escalates; every setting right: restart the backend."""
        wrong, config, service = self.wrong, self.config, self.service
        if any(c.check == "earlier-token-accepted" for c in wrong) and not (config and service):
            raise Escalate(
                "SECRET_KEY changed: "
                + "; ".join(c.detail for c in wrong)
                + "; if the change was not intended, restore the previous key from the secret"
                " store"
            )
        if config is None or service is None:
            raise Escalate(
                "the backend container's settings cannot be read (DOCKER_HOST,"
                " COMPOSE_PROJECT_NAME, APP_SERVICE)"
            )
        if wrong:
            raise Escalate(
                "fix the setting, then restart the backend: " + "; ".join(c.detail for c in wrong)
            )
        found = containers.find_service(service)
        return Plan(
            runbook=RUNBOOK,
            resource=detection.resource,
            summary=f"restart {service.service}: its settings are right but logins fail",
            actions=[
                restart_action(
                    RESTART,
                    service,
                    found,
                    description="Every auth setting checks out, so the running process is behind"
                    " its configuration: restart it (seed 000).",
                )
            ],
        )

    def recheck(self, plan: Plan) -> Plan:
        """Logins working again since: nothing to restart."""
        assert self.service is not None
        return recheck_restart(
            plan, self.service, still_broken=lambda: not self.login("login-recheck").ok
        )

    def verify(self) -> list[Finding]:
        """The probe login succeeds."""
        return [
            wait_until_ok(
                lambda: self.login("login-after"), timeout=self.params.start_timeout_seconds
            )
        ]
