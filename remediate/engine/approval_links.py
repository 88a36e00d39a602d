"""Signed, expiring, single-use approval links: an approval given from a chat message.

A link names one flow run, the digest of the one plan it answers, the approver it was made for
and an expiry, signed with HMAC-SHA256 under `APPROVAL_LINK_SECRET`. With `APPROVERS` set there
is one link per approver, and the page answers as that approver: the name is never typed (a link
proves only that its holder had it, so its answers are recorded `verified: false`). Opening it
shows the plan (a GET never acts: chat unfurlers open links); the form's POST carries the answer.
The receiver checks the signature and the expiry, and marks the link's nonce used in the store
before it resumes the run, so a link answers once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from pydantic import SecretStr

__all__ = ["LinkClaims", "LinkError", "approval_link", "link_approvers", "sign", "verify"]


class LinkError(Exception):
    """Why a link does not count; the message is safe to show to whoever opened it."""


@dataclass(frozen=True, kw_only=True)
class LinkClaims:
    flow_run_id: str
    incident_id: str
    summary: str
    expires_at: float
    nonce: str
    plan_digest: str = ""
    # The approver the link was made for ("": any holder, when no APPROVERS list is set).
    approver: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: SecretStr, payload: str) -> str:
    key = secret.get_secret_value().encode()
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def sign(
    secret: SecretStr,
    *,
    flow_run_id: str,
    incident_id: str,
    summary: str,
    ttl_seconds: float,
    now: float | None = None,
    plan_digest: str = "",
    approver: str = "",
) -> str:
    claims = {
        "run": flow_run_id,
        "inc": incident_id,
        "sum": summary[:200],
        "exp": round((now if now is not None else time.time()) + ttl_seconds),
        "n": secrets.token_urlsafe(12),
        "d": plan_digest,
        "w": approver,
    }
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}"


def verify(secret: SecretStr, token: str, *, now: float | None = None) -> LinkClaims:
    """The link's claims, or LinkError: forged, malformed or expired."""
    payload, dot, mac = token.partition(".")
    if not dot or not payload or not mac or len(token) > 2048:
        raise LinkError("this approval link is malformed")
    # Bytes, not str: compare_digest refuses non-ASCII str, and a link can carry anything.
    if not hmac.compare_digest(_mac(secret, payload).encode(), mac.encode("utf-8", "replace")):
        raise LinkError("this approval link is not valid (bad signature)")
    try:
        claims = json.loads(_unb64(payload))
        parsed = LinkClaims(
            flow_run_id=str(claims["run"]),
            incident_id=str(claims["inc"]),
            summary=str(claims["sum"]),
            expires_at=float(claims["exp"]),
            nonce=str(claims["n"]),
            plan_digest=str(claims.get("d", "")),
            approver=str(claims.get("w", "")),
        )
    except (ValueError, KeyError, TypeError):
        raise LinkError("this approval link is malformed") from None
    if (now if now is not None else time.time()) >= parsed.expires_at:
        raise LinkError("this approval link has expired; answer in the Prefect UI or the CLI")
    return parsed


def approval_link(
    base_url: str,
    secret: SecretStr,
    *,
    flow_run_id: str,
    incident_id: str,
    summary: str,
    ttl_seconds: float,
    plan_digest: str = "",
    approver: str = "",
) -> str:
    token = sign(
        secret,
        flow_run_id=flow_run_id,
        incident_id=incident_id,
        summary=summary,
        ttl_seconds=ttl_seconds,
        plan_digest=plan_digest,
        approver=approver,
    )
    return f"{base_url.rstrip('/')}/approvals/{token}"


def link_approvers(approvers: list[str]) -> list[str]:
    """Whom links are made for: each approver a link can stand for (not Slack users, who answer
    with the message's buttons), or one link for any holder ("") when no list is set."""
    named = [a for a in approvers if not a.startswith("slack:")]
    if approvers and not named:
        return []
    return named or [""]
