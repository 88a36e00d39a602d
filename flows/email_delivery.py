"""Seed 000 "Email Not Sending" and seed 002 §3 "Email Delivery Failure" (P2).

Detect: SMTP settings complete (`SMTP_HOST`, `EMAILS_FROM_EMAIL`); the SMTP handshake, login and a
test message; SendGrid's mail settings, bounce list and bounce rate (> 5 % is failing) when
`SENDGRID_API_KEY` is set; a named address (`address`) on the bounce list. Remediate (approval):
remove that named address from the bounce list. Verify: a test message is accepted, the address is
off the list and the bounce rate is under the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from remediate.domain.models import ActionResult, Diagnosis, Finding, Plan, PlannedAction
from remediate.domain.settings import Settings
from remediate.engine import targets
from remediate.engine.runbook import Detection, Escalate, Runbook, RunbookParameters
from remediate.tasks import containers, email
from remediate.tasks.containers import AppEmail

RUNBOOK = "email-delivery"
REMOVE = "remove-bounced-address"
PREVENTION = (
    "alert on SendGrid's bounce rate; validate addresses at sign-up; keep SMTP credentials in the"
    " secret store and test them after each rotation"
)


@dataclass(frozen=True)
class Smtp:
    """The SMTP settings the app sends with: the backend's own where it sets them (seed 000 reads
    them in the backend: `docker compose exec backend …`), else the product's."""

    host: str | None
    port: int
    user: str | None
    password: SecretStr | None
    tls: bool
    ssl: bool
    sender: str | None
    source: str
    problems: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        if self.tls:
            return "STARTTLS (SMTP_TLS)"
        return "implicit TLS (SMTP_SSL)" if self.ssl else "plain (SMTP_TLS and SMTP_SSL off)"


def effective_smtp(settings: Settings, app: AppEmail | None) -> Smtp:
    app = app or AppEmail()

    def pick(mine: Any, theirs: Any) -> Any:
        return theirs if theirs is not None else mine

    used_app = any(
        v is not None for v in (app.host, app.port, app.user, app.tls, app.ssl, app.sender)
    )
    return Smtp(
        host=pick(settings.smtp_host, app.host),
        port=pick(settings.smtp_port, app.port) or 587,
        user=pick(settings.smtp_user, app.user),
        password=pick(settings.smtp_password, app.password),
        tls=pick(settings.smtp_tls, app.tls),
        ssl=pick(settings.smtp_ssl, app.ssl),
        sender=pick(settings.emails_from_email, app.sender),
        source="the backend's own settings" if used_app else "the product's settings",
        problems=tuple(app.problems),
    )


def settings_findings(smtp: Smtp) -> list[Finding]:
    missing = [
        name
        for name, value in (("SMTP_HOST", smtp.host), ("EMAILS_FROM_EMAIL", smtp.sender))
        if not value
    ]
    found = [
        Finding(
            check="smtp-settings",
            ok=not missing,
            detail=f"missing in {smtp.source}: {', '.join(missing)}"
            if missing
            else f"SMTP_HOST {smtp.host}, port {smtp.port}, {smtp.mode}, user"
            f" {'set' if smtp.user else 'none'}, password"
            f" {'set' if smtp.password else 'none'}, from {smtp.sender} ({smtp.source})",
        )
    ]
    found += [Finding(check="smtp-setting-invalid", ok=False, detail=p) for p in smtp.problems]
    return found


def backend_email(settings: Settings) -> AppEmail | None:
    """The backend container's email settings, when the product can see its container."""
    service = targets.compose_service(settings, settings.app_service)
    if service is None:
        return None
    try:
        config = containers.read_app_config(service)
    except containers.EngineUnreachable:
        return None
    return config.email if config else None


def sendgrid_findings(
    state: email.SendGridState, *, bounce_limit: float, address: str | None
) -> list[Finding]:
    if not state.ok:
        return [Finding(check="sendgrid", ok=False, detail=state.detail)]
    found = [
        Finding(
            check="sendgrid-mail-settings",
            ok=not state.mail_settings_off,
            detail="mail settings off: " + ", ".join(state.mail_settings_off)
            if state.mail_settings_off
            else "mail settings on",
        ),
        Finding(
            check="bounce-rate",
            ok=state.bounce_rate <= bounce_limit,
            detail=f"bounce rate {state.bounce_rate:.1%} (limit {bounce_limit:.0%}):"
            f" {state.detail}",
        ),
    ]
    if address:
        bounced = address.lower() in {b.lower() for b in state.bounces}
        found.append(
            Finding(
                check="address-bounced",
                ok=not bounced,
                detail=f"{address} is {'on' if bounced else 'not on'} the bounce list",
            )
        )
    return found


class EmailDelivery(Runbook):
    """Seeds 000/002 §3: emails not delivered → SMTP and SendGrid checks → unbounce (approval)."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "password reset and OTP emails are not received"
    prevention = PREVENTION

    class Parameters(RunbookParameters):
        address: str | None = None
        test_recipient: str | None = None
        bounce_limit: float = 0.05

    params: Parameters

    # No preflight: nothing to reach beforehand, incomplete settings are what the runbook reports.

    def sweep_skip(self) -> str | None:
        """The health sweep leaves email alone where no email setting exists at all (the app sends
        none); a partial configuration is a finding."""
        settings = self.settings
        if not (settings.smtp_host or settings.emails_from_email or settings.sendgrid_api_key):
            return "email-delivery: no SMTP_HOST, EMAILS_FROM_EMAIL or SENDGRID_API_KEY set"
        return None

    def smtp(self) -> list[Finding]:
        """The SMTP handshake, login and a test message (nothing to try without host and sender)."""
        config = self.config
        if not (config.host and config.sender):
            return []
        result = email.send_test_message(
            host=config.host,
            port=config.port,
            user=config.user,
            password=config.password,
            use_tls=config.tls,
            use_ssl=config.ssl,
            sender=config.sender,
            recipient=self.params.test_recipient or config.sender,
        )
        return [Finding(check="smtp-test-message", ok=result.ok, detail=result.detail)]

    def sendgrid(self) -> tuple[email.SendGridState | None, list[Finding]]:
        """SendGrid's mail settings, bounce list and bounce rate, when SENDGRID_API_KEY is set."""
        settings = self.settings
        if settings.sendgrid_api_key is None:
            return None, []
        state = email.sendgrid_state(settings.sendgrid_api_url, key=settings.sendgrid_api_key)
        return state, sendgrid_findings(
            state, bounce_limit=self.params.bounce_limit, address=self.params.address
        )

    def detect(self) -> Detection:
        """Settings, SMTP end to end, SendGrid."""
        self.config = effective_smtp(self.settings, backend_email(self.settings))
        self.state, provider = self.sendgrid()
        findings = settings_findings(self.config) + self.smtp() + provider
        return Detection(resource=f"email://{self.config.host or 'unset'}", findings=findings)

    def diagnose(self, detection: Detection) -> Diagnosis:
        failed = {f.check for f in detection.findings if not f.ok}
        causes = sorted(
            {
                "smtp-settings-incomplete" if "smtp-settings" in failed else "",
                "smtp-setting-invalid" if "smtp-setting-invalid" in failed else "",
                "smtp-failing" if "smtp-test-message" in failed else "",
                "sendgrid-mail-settings-off" if "sendgrid-mail-settings" in failed else "",
                "high-bounce-rate" if "bounce-rate" in failed else "",
                "address-bounced" if "address-bounced" in failed else "",
            }
            - {""}
        )
        return Diagnosis(causes=causes, evidence=[])

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """Only a named address on the bounce list is fixed: removed from the list."""
        failed = {f.check for f in detection.findings if not f.ok}
        fixable = "address-bounced" in failed and failed <= {"address-bounced", "bounce-rate"}
        if not fixable:
            raise Escalate(
                "no automatic fix for "
                + ", ".join(diagnosis.causes)
                + ": "
                + "; ".join(f.detail for f in detection.findings if not f.ok)
            )
        address, resource = self.params.address, detection.resource
        assert address and self.state is not None and self.settings.sendgrid_api_key is not None
        return Plan(
            runbook=RUNBOOK,
            resource=resource,
            summary=f"remove {address} from SendGrid's bounce list",
            actions=[
                PlannedAction(
                    name=REMOVE,
                    destructive=True,
                    resource=resource,
                    description="Remove exactly this address from the bounce suppression list so"
                    " that mail to it is sent again (seed 002 §3).",
                    targets=[address],
                    statements=[f"DELETE /v3/suppression/bounces/{address}"],
                )
            ],
        )

    def recheck(self, plan: Plan) -> Plan:
        """SendGrid read again: only addresses still on the bounce list are removed."""
        now, _ = self.sendgrid()
        if now is None or not now.ok:
            raise RuntimeError(f"SendGrid cannot be read now: {now.detail if now else 'no key'}")
        still = set(now.bounces)
        return plan.model_copy(
            update={
                "actions": [
                    a.model_copy(update={"targets": [t for t in a.targets if t in still]})
                    for a in plan.actions
                ]
            }
        )

    def act(self, plan: Plan) -> list[ActionResult]:
        key = self.settings.sendgrid_api_key
        assert key is not None
        done = [
            a
            for a in plan.actions[0].targets
            if email.remove_bounce(self.settings.sendgrid_api_url, key=key, email=a)
        ]
        return [
            ActionResult(
                name=REMOVE,
                destructive=True,
                executed=bool(done),
                targets=done,
                detail=f"{len(done)} address(es) removed",
            )
        ]

    def verify(self) -> list[Finding]:
        """A test message is accepted and the address is off the list."""
        _, after = self.sendgrid()
        return [
            f.model_copy(update={"check": f.check + "-after"})
            for f in self.smtp() + after
            if f.check != "bounce-rate"
        ]
