"""The backend's own settings read with the FastAPI template's meaning (its core/config.py and
utils.py `send_email`: `SMTP_TLS` default on and STARTTLS, winning over `SMTP_SSL`; empty values
ignored; `FRONTEND_HOST` the CORS origin)."""

from __future__ import annotations

from remediate.domain.settings import Settings
from remediate.flows.auth_failures import config_findings
from remediate.flows.email_delivery import effective_smtp, settings_findings
from remediate.tasks.containers import AppEmail, app_config


def test_empty_values_are_ignored_and_tls_is_starttls_by_default() -> None:
    app = AppEmail.from_env({"SMTP_HOST": "mail.app", "SMTP_TLS": "", "SMTP_PORT": "", "X": "1"})
    smtp = effective_smtp(Settings(), app)
    assert (smtp.host, smtp.port, smtp.tls, smtp.ssl) == ("mail.app", 587, True, False)
    assert smtp.mode == "STARTTLS (SMTP_TLS)" and smtp.source == "the backend's own settings"


def test_smtp_tls_wins_over_smtp_ssl_as_the_template_sends() -> None:
    both = effective_smtp(Settings(), AppEmail.from_env({"SMTP_TLS": "true", "SMTP_SSL": "1"}))
    assert both.mode == "STARTTLS (SMTP_TLS)"
    ssl = effective_smtp(Settings(), AppEmail.from_env({"SMTP_TLS": "False", "SMTP_SSL": "yes"}))
    assert ssl.mode == "implicit TLS (SMTP_SSL)"
    plain = effective_smtp(Settings(), AppEmail.from_env({"SMTP_TLS": "off"}))
    assert plain.mode.startswith("plain")


def test_the_backends_values_win_and_bad_ones_are_named() -> None:
    product = Settings(smtp_host="product.mail", emails_from_email="p@x.io", smtp_port=25)
    app = AppEmail.from_env({"SMTP_HOST": "backend.mail", "SMTP_PORT": "two", "SMTP_SSL": "maybe"})
    smtp = effective_smtp(product, app)
    assert (smtp.host, smtp.port, smtp.sender) == ("backend.mail", 25, "p@x.io")
    found = {f.detail for f in settings_findings(smtp) if not f.ok}
    assert "SMTP_PORT='two' is not a number (the app will not start)" in found
    assert "SMTP_SSL='maybe' is not a boolean (the app will not start)" in found
    assert effective_smtp(product, None).source == "the product's settings"


def test_password_is_never_in_a_finding() -> None:
    app = AppEmail.from_env(
        {"SMTP_HOST": "m", "EMAILS_FROM_EMAIL": "a@b.c", "SMTP_PASSWORD": "pw-canary"}
    )
    (finding,) = settings_findings(effective_smtp(Settings(), app))
    assert "pw-canary" not in finding.detail and "password set" in finding.detail
    assert "pw-canary" not in repr(app)


def test_cors_origin_is_frontend_host_then_the_older_backend_cors_origins() -> None:
    current = app_config({"SECRET_KEY": "k" * 40, "FRONTEND_HOST": "https://app.test"})
    older = app_config({"SECRET_KEY": "k" * 40, "BACKEND_CORS_ORIGINS": '["https://app.test"]'})
    default = app_config({"SECRET_KEY": "k" * 40})
    for config, ok in ((current, True), (older, True), (default, False)):
        (cors,) = [
            f
            for f in config_findings(
                config, known_fingerprint=None, frontend_url="https://app.test"
            )
            if f.check == "cors"
        ]
        assert cors.ok is ok, cors.detail
