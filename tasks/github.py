"""GitHub's REST API: the follow-up issue of a resolved incident.

A few tries, never an exception: the result is a `Delivery` (`remediate.tasks.delivery`) carrying
the issue's address when it was opened.
"""

from __future__ import annotations

import contextlib

from pydantic import SecretStr

from remediate.tasks.delivery import Delivery, _send

__all__ = ["github_issue"]


def github_issue(
    api_url: str,
    repo: str,
    token: SecretStr,
    *,
    title: str,
    body: str,
    labels: list[str],
    attempts: int = 3,
) -> Delivery:
    """Open an issue in `owner/name` (REST API); the delivery carries its html_url."""
    response, why = _send(
        "POST",
        f"{api_url.rstrip('/')}/repos/{repo}/issues",
        attempts=attempts,
        json={"title": title, "body": body, "labels": labels},
        headers={
            "Authorization": f"Bearer {token.get_secret_value()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    ok = response is not None and response.status_code == 201
    url: str | None = None
    if ok and response is not None:
        answer: object = None
        with contextlib.suppress(ValueError):
            answer = response.json()
        link = answer.get("html_url") if isinstance(answer, dict) else None
        url = str(link) if link else None
    return Delivery(channel="github", delivered=ok, detail=f"issue in {repo}: {why}", url=url)
