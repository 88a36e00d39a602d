"""Redacting secrets from text that came from outside: log lines, error messages, reports.

A log line of the guarded app can carry a connection string (`redis://:pw@host`), an
`Authorization: Bearer …` header, `password=…` or a JSON body with `"api_key": "…"`. `redact`
masks those values before a line reaches a finding, a chat message, the timeline or Sentry;
`scrub_values` applies it (and the known secret values) to every string of a nested structure,
value by value, so a secret holding quotes, backslashes or non-ASCII is matched as it is, not as
`json.dumps` would escape it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

__all__ = ["MASK", "redact", "redact_url", "scrub_values"]

MASK = "***"
_SECRET_NAME = (
    r"[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|private[_-]?key"
    r"|credentials?|dsn)[\w.-]*"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host, with or without a user (redis://:pw@host)
    (re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*):[^@/\s]+@"), r"\1:\0MASK\0@"),
    # Authorization: Bearer abc / Basic abc, in headers, dumps and curl lines
    (
        re.compile(
            r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;]+"
        ),
        r"\1\2 \0MASK\0",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 \0MASK\0"),
    # "password": "quoted value, spaces and \"escapes\" included"
    (
        re.compile(rf"(?i)([\"']?{_SECRET_NAME}[\"']?\s*[:=]\s*)\"(?:[^\"\\]|\\.)*\""),
        r'\1"\0MASK\0"',
    ),
    (
        re.compile(rf"(?i)([\"']?{_SECRET_NAME}[\"']?\s*[:=]\s*)'(?:[^'\\]|\\.)*'"),
        r"\1'\0MASK\0'",
    ),
    # password=value, token: value
    (re.compile(rf"(?i)([\"']?{_SECRET_NAME}[\"']?\s*[:=]\s*)(?![\"'\s])[^\s,;&]+"), r"\1\0MASK\0"),
)


def redact(text: str, secrets: Iterable[str] = (), *, mask: str = MASK) -> str:
    """`text` with known secret values and secret-looking values masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "\0MASK\0")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text.replace("\0MASK\0", mask)


def scrub_values(value: Any, secrets: Iterable[str] = (), *, mask: str = MASK) -> Any:
    """`value` (dicts, lists, strings…) with `redact` applied to every string in it."""
    known = sorted({s for s in secrets if s}, key=len, reverse=True)
    return _walk(value, known, mask)


def _walk(value: Any, secrets: list[str], mask: str) -> Any:
    if isinstance(value, str):
        return redact(value, secrets, mask=mask)
    if isinstance(value, dict):
        return {
            _walk(k, secrets, mask) if isinstance(k, str) else k: _walk(v, secrets, mask)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_walk(v, secrets, mask) for v in value]
    return value


def redact_url(url: str | SecretStr) -> str:
    """`scheme://user@host:port/path` without the password or query: safe for logs and errors."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    parts = urlsplit(raw)
    user = f"{parts.username}@" if parts.username else ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"
