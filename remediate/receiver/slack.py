"""Slack interactivity for approvals: reading a `block_actions` click and answering it.

Slack POSTs a click to the app's interactivity URL as a form with one field, `payload` (JSON):
`type: "block_actions"`, `user: {id, username, name, team_id}`, `actions: [{action_id, value,
type: "button", action_ts, block_id}]`, `response_url`, `container`, `message`… (api.slack.com,
"Handling user interaction"). The receiver verifies the request's signature before this module
reads anything, answers 200 at once, and reports what came of the click by POSTing to the click's
`response_url` (`replace_original: true`), which Slack accepts for 30 minutes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import httpx

from remediate.intake.dispatch import Rejected

__all__ = ["ACTIONS", "Click", "parse_click", "respond"]

log = logging.getLogger("remediate.receiver")
ACTIONS = {"approve": True, "decline": False}
USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")


@dataclass(frozen=True, kw_only=True)
class Click:
    user_id: str
    username: str
    approve: bool
    value: str
    response_url: str


def parse_click(body: bytes) -> Click | None:
    """The Approve/Decline click in a verified interaction; None for other interactions;
    422 `Rejected` for a payload that is not Slack's shape."""
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=5)
        payload = json.loads(fields["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise Rejected(422, "malformed", "payload: expected Slack's form field `payload`") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    user = payload.get("user")
    if not isinstance(actions, list) or not actions or not isinstance(user, dict):
        raise Rejected(422, "malformed", "payload: a block_actions click needs actions and user")
    action = actions[0]
    if not isinstance(action, dict) or action.get("action_id") not in ACTIONS:
        return None
    user_id = str(user.get("id", ""))
    response_url = str(payload.get("response_url", ""))
    if not USER_ID.fullmatch(user_id):
        raise Rejected(422, "malformed", "payload.user.id: not a Slack user id")
    if not response_url.startswith(("https://", "http://")):
        raise Rejected(422, "malformed", "payload.response_url: missing")
    return Click(
        user_id=user_id,
        username=str(user.get("username") or user.get("name") or user_id)[:80],
        approve=ACTIONS[str(action["action_id"])],
        value=str(action.get("value", ""))[:2000],
        response_url=response_url,
    )


def respond(response_url: str, text: str, *, attempts: int = 3) -> bool:
    """Replace the approval message with what came of the click; True when Slack took it."""
    body = {"replace_original": True, "response_type": "in_channel", "text": text}
    for attempt in range(attempts):
        try:
            reply = httpx.post(response_url, json=body, timeout=5)
            if reply.status_code < 300:
                return True
            if reply.status_code < 500:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5 * (attempt + 1))
    log.warning("could not update the Slack approval message through its response_url")
    return False
