"""Seed 000 "Email Not Sending" and seed 002 §3 "Email Delivery Failure" (P2).

Detect: SMTP settings complete (`SMTP_HOST`, `EMAILS_FROM_EMAIL`); the SMTP handshake, login and a
test message; SendGrid's mail settings, bounce list and bounce rate (> 5 % is failing) when
`SENDGRID_API_KEY` is set; a named address (`address`) on the bounce list. Remediate (approval):
remove that named address from the bounce list. Verify: a test message is accepted, the address is
off the list and the bounce rate is under the limit.
"""

from __future__ import annotations

from typing import Any

from core.incident import IncidentRun, runbook_flow
from core.models import ActionResult, Diagnosis, Finding, Outcome, Plan, PlannedAction
from core.settings import Settings, load_settings
from tasks import email

RUNBOOK = "email-delivery"
REMOVE = "remove-bounced-address"
PREVENTION = (
    "alert on SendGrid's bounce rate; validate addresses at sign-up; keep SMTP credentials in the"
    " secret store and test them after each rotation"
)


def settings_findings(settings: Settings) -> list[Finding]:
    missing = [
        name
        for name, value in (
            ("SMTP_HOST", settings.smtp_host),
            ("EMAILS_FROM_EMAIL", settings.emails_from_email),
        )
        if not value
    ]
    return [
        Finding(
            check="smtp-settings",
            ok=not missing,
            detail=f"missing: {', '.join(missing)}"
            if missing
            else f"SMTP_HOST {settings.smtp_host}, port {settings.smtp_port or 587},"
            f" user {'set' if settings.smtp_user else 'none'}, password"
            f" {'set' if settings.smtp_password else 'none'},"
            f" from {settings.emails_from_email}",
        )
    ]


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


def preflight(settings: Settings, params: dict[str, Any]) -> None:
    """Nothing to reach beforehand: incomplete settings are what the runbook reports."""


def sweep_skip(settings: Settings) -> str | None:
    """The health sweep leaves email alone where no email setting exists at all (the app sends
    none); a partial configuration is a finding."""
    if not (settings.smtp_host or settings.emails_from_email or settings.sendgrid_api_key):
        return "email-delivery: no SMTP_HOST, EMAILS_FROM_EMAIL or SENDGRID_API_KEY set"
    return None


@runbook_flow(RUNBOOK)
def email_delivery(
    *,
    address: str | None = None,
    test_recipient: str | None = None,
    bounce_limit: float = 0.05,
    dry_run: bool = False,
    auto_approve: bool = False,
    requested_by: str | None = None,
) -> Outcome:
    """Seeds 000/002 §3: emails not delivered → SMTP and SendGrid checks → unbounce (approval)."""
    settings = load_settings()

    def smtp() -> list[Finding]:
        if not (settings.smtp_host and settings.emails_from_email):
            return []
        result = email.send_test_message(
            host=settings.smtp_host,
            port=settings.smtp_port or 587,
            user=settings.smtp_user,
            password=settings.smtp_password,
            use_tls=settings.smtp_tls,
            use_ssl=settings.smtp_ssl,
            sender=settings.emails_from_email,
            recipient=test_recipient or settings.emails_from_email,
        )
        return [Finding(check="smtp-test-message", ok=result.ok, detail=result.detail)]

    def sendgrid() -> tuple[email.SendGridState | None, list[Finding]]:
        if settings.sendgrid_api_key is None:
            return None, []
        state = email.sendgrid_state(settings.sendgrid_api_url, key=settings.sendgrid_api_key)
        return state, sendgrid_findings(state, bounce_limit=bounce_limit, address=address)

    # Detect: settings, SMTP end to end, SendGrid.
    state, provider = sendgrid()
    findings = settings_findings(settings) + smtp() + provider
    if all(f.ok for f in findings):
        return IncidentRun.healthy(RUNBOOK, findings=findings)
    resource = f"email://{settings.smtp_host or 'unset'}"
    run = IncidentRun.open(
        RUNBOOK,
        resource=resource,
        findings=findings,
        settings=settings,
        requester=requested_by,
        impact="password reset and OTP emails are not received",
    )
    failed = {f.check for f in findings if not f.ok}
    causes = sorted(
        {
            "smtp-settings-incomplete" if "smtp-settings" in failed else "",
            "smtp-failing" if "smtp-test-message" in failed else "",
            "sendgrid-mail-settings-off" if "sendgrid-mail-settings" in failed else "",
            "high-bounce-rate" if "bounce-rate" in failed else "",
            "address-bounced" if "address-bounced" in failed else "",
        }
        - {""}
    )
    run.diagnosed(Diagnosis(causes=causes, evidence=[]))

    fixable = "address-bounced" in failed and failed <= {"address-bounced", "bounce-rate"}
    if not fixable:
        return run.escalate(
            "no automatic fix for "
            + ", ".join(causes)
            + ": "
            + "; ".join(f.detail for f in findings if not f.ok)
        )
    assert address and state is not None and settings.sendgrid_api_key is not None
    key = settings.sendgrid_api_key
    plan = Plan(
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
    run.planned(plan)
    if dry_run:
        return run.dry_run(plan)

    def recheck(approved: Plan) -> Plan:
        """SendGrid read again: only addresses still on the bounce list are removed."""
        now, _ = sendgrid()
        if now is None or not now.ok:
            raise RuntimeError(f"SendGrid cannot be read now: {now.detail if now else 'no key'}")
        still = set(now.bounces)
        return approved.model_copy(
            update={
                "actions": [
                    a.model_copy(update={"targets": [t for t in a.targets if t in still]})
                    for a in approved.actions
                ]
            }
        )

    def act(current: Plan) -> list[ActionResult]:
        done = [
            a
            for a in current.actions[0].targets
            if email.remove_bounce(settings.sendgrid_api_url, key=key, email=a)
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

    def verify() -> list[Finding]:
        _, after = sendgrid()
        checks = [
            f.model_copy(update={"check": f.check + "-after"})
            for f in smtp() + after
            if f.check != "bounce-rate"
        ]
        return checks

    return run.carry_out(
        plan,
        auto_approve=auto_approve,
        recheck=recheck,
        act=act,
        verify=verify,
        prevention=PREVENTION,
    )
