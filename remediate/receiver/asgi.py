"""The alert receiver alone, for a process manager of your own (issue "Past one machine"): it
creates the runs on the shared Prefect server, and the workers (`prefect worker start`) or a
`remediate serve` elsewhere execute them.

    uvicorn remediate.receiver.asgi:app --host 0.0.0.0 --port 8080 --workers 2
    gunicorn -k uvicorn.workers.UvicornWorker remediate.receiver.asgi:app

or `remediate receive`, which checks the same and runs uvicorn. What every receiver of one
installation must share: PREFECT_API_URL (a server that answers), REMEDIATION_DATABASE_URL,
REMEDIATION_REDIS_URL (deduplication across receivers), ALERT_WEBHOOK_TOKEN and/or
SENTRY_CLIENT_SECRET, APPROVAL_LINK_SECRET and RECEIVER_PUBLIC_URL (the approval messages' links),
SLACK_SIGNING_SECRET when Slack answers approvals. A missing one is a single line on stderr and
exit 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from remediate.domain.settings import ConfigError, Settings, load_settings

__all__ = ["build", "receiver_problems"]  # and `app`, built on first access


def receiver_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(what stops a receiver-only process, what it should be told) for these settings."""
    import os

    from remediate.engine.prefect_api import configured_api_url

    errors, warnings = [], []
    if not configured_api_url():
        errors.append(
            "PREFECT_API_URL is not set: a receiver on its own creates runs on the shared Prefect"
            " server that the workers poll; it never starts a private one"
        )
    if settings.alert_webhook_token is None and settings.sentry_client_secret is None:
        errors.append(
            "ALERT_WEBHOOK_TOKEN (or SENTRY_CLIENT_SECRET) is not set: every receiver of an"
            " installation needs the same one (`remediate serve` makes one only for itself)"
        )
    if settings.approval_link_secret is None or not os.environ.get("RECEIVER_PUBLIC_URL"):
        warnings.append(
            "APPROVAL_LINK_SECRET and RECEIVER_PUBLIC_URL are not both set: approval messages"
            " go out without their signed links (the Prefect UI and `remediate approve` still work)"
        )
    return errors, warnings


def build() -> Any:
    """The receiver app from the environment's settings, once they are fit for it."""
    from remediate.engine.prefect_api import require_api
    from remediate.receiver.app import create_app

    settings = load_settings()
    errors, warnings = receiver_problems(settings)
    if errors:
        raise ConfigError(errors[0])
    require_api()
    for warning in warnings:
        print(f"remediate receive: {warning}", file=sys.stderr)
    return create_app(settings, watch_leases=True)


_built: Any = None


def __getattr__(name: str) -> Any:
    """`remediate.receiver.asgi:app`, built when a server first asks for it (importing `build` alone
    builds nothing)."""
    global _built
    if name != "app":
        raise AttributeError(name)
    if _built is None:
        try:
            _built = build()
        except ConfigError as exc:
            print(f"remediate receive: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    return _built
