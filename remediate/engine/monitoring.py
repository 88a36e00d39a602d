"""The product's own error reporting with sentry-sdk (`SENTRY_DSN`), never its secrets.

`init` runs once per process when `SENTRY_DSN` is set (the CLI and every runbook run). Events are
tagged with the runbook id and the incident; `before_send` replaces every secret setting's value
(and any URL password) wherever it appears in the event, so a secret never leaves in a report.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr

from remediate.domain.settings import Settings

__all__ = ["capture_exception", "capture_message", "init", "tag_incident"]

log = logging.getLogger(__name__)
_initialised: str | None = None
_secrets: list[str] = []
FILTERED = "[Filtered]"  # Sentry's own mark for a scrubbed value


def _fragments(raw: str) -> list[str]:
    """A secret and the parts of it that are secret on their own: a URL's password, the path
    segments and query values of a webhook URL (Slack's token is its last segments)."""
    parts = [raw]
    split = urlsplit(raw)
    if split.scheme and split.netloc:
        if split.password:
            parts.append(split.password)
        parts += [seg for seg in split.path.split("/") if len(seg) >= 8]
        parts += [value for _, value in parse_qsl(split.query) if len(value) >= 8]
    return parts


def _secret_values(settings: Settings) -> list[str]:
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values += [v for v in _fragments(value.get_secret_value()) if len(v) >= 4]
    return sorted(set(values), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    from remediate.domain.redact import redact

    return redact(text, secrets, mask=FILTERED)


def _before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Every string of the event, value by value (a secret with quotes, backslashes or
    non-ASCII is matched as it is, which `json.dumps` text would not)."""
    from remediate.domain.redact import scrub_values

    try:
        cleaned: dict[str, Any] = scrub_values(event, _secrets, mask=FILTERED)
        json.dumps(cleaned, default=str)
        return cleaned
    except (TypeError, ValueError):  # an event that cannot be checked is not sent
        return None


def init(settings: Settings) -> bool:
    """Start reporting to SENTRY_DSN (idempotent); False when no DSN is set."""
    global _initialised
    if settings.sentry_dsn is None:
        return False
    dsn = settings.sentry_dsn.get_secret_value()
    _secrets[:] = _secret_values(settings)
    if _initialised == dsn:
        return True
    import sentry_sdk

    sentry_sdk.init(
        dsn=dsn,
        environment=settings.remediation_environment,
        release="remediate@0.1.0",
        before_send=_before_send,  # type: ignore[arg-type]
        send_default_pii=False,
        default_integrations=True,
        traces_sample_rate=0,
    )
    _initialised = dsn
    return True


def tag_incident(*, runbook: str, incident_id: str, settings: Settings) -> None:
    if not init(settings):
        return
    import sentry_sdk

    sentry_sdk.set_tag("runbook", runbook)
    sentry_sdk.set_tag("incident", incident_id)


def capture_exception(exc: BaseException) -> None:
    if _initialised is None:
        return
    import sentry_sdk

    sentry_sdk.capture_exception(exc)
    sentry_sdk.flush(timeout=5)


def capture_message(message: str) -> None:
    if _initialised is None:
        return
    import sentry_sdk

    sentry_sdk.capture_message(message, level="error")
    sentry_sdk.flush(timeout=5)
