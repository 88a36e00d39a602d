"""Approvals that a security reviewer would try to get around (issue "Trust I").

- Slack's interactive buttons: a click is verified (Slack's request signature, 5-minute window)
  before anything reads it; an unlisted user's click changes nothing; a listed user's click
  resumes the run, and the message is updated through `response_url`. The stand-in for Slack
  checks what it receives and the clicks are Slack's documented `block_actions` payloads.
- An answer belongs to one plan, once: another plan's digest, a forged channel proof, or (when
  configured) an answer that cannot prove its approver is refused and the run keeps waiting.
- `auto_approve=true` as a parameter of a run created through the Prefect API is no approval.
- A run executed again after `serve` was killed asks again: the answer given to the dead
  execution does not cover the new one, and `remediate approve` says the answer was not read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from remediate.domain.settings import load_settings
from remediate.engine import approval
from tests.e2e.conftest import LiveReceiver, kinds, paused_run, start
from tests.e2e.test_serve import REMEDIATE, alert_until_paused, start_serve
from tests.support.httpcapture import CaptureServer
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")

SIGNING_SECRET = "rt-slack-signing-secret-8c1f0e2d"
LINK_SECRET = "rt-approval-link-secret-41aa9c07"
ALICE = "U024BE7LH"  # Slack's own example user id
MALLORY = "U0MALL0RY"


def slack_headers(body: bytes, *, secret: str = SIGNING_SECRET, at: float | None = None) -> dict:
    """The headers Slack signs an interaction request with (api.slack.com, "Verifying requests
    from Slack"): v0=HMAC-SHA256(signing secret, "v0:{timestamp}:{body}")."""
    stamp = str(int(at if at is not None else time.time()))
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + mac.hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def block_actions(user_id: str, action_id: str, value: str, response_url: str) -> bytes:
    """A `block_actions` interaction as Slack sends it: a form with one field, `payload`."""
    payload = {
        "type": "block_actions",
        "user": {
            "id": user_id,
            "username": user_id.lower(),
            "name": user_id.lower(),
            "team_id": "T024BE7LD",
        },
        "api_app_id": "A0KRD7HC3",
        "token": "legacy-verification-token-not-used",
        "container": {
            "type": "message",
            "message_ts": "1548261231.000200",
            "channel_id": "C024BE91L",
            "is_ephemeral": False,
        },
        "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
        "team": {"id": "T024BE7LD", "domain": "acme"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C024BE91L", "name": "incidents"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "remediate-approval",
                "text": {"type": "plain_text", "text": action_id.title(), "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def state_of(run_id: str) -> str:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
    return run.state_type.value if run.state_type else "?"


def next_question(run_id: str, after: str | None = None) -> approval.Pending:
    """The question the run asks now, once it is a new one (not `after`)."""

    def asked() -> approval.Pending | None:
        try:
            with get_client(sync_client=True) as client:
                pending = approval.pending_approval(client, run_id)
        except approval.NotWaiting:
            return None
        return pending if pending.key != after else None

    found: approval.Pending = wait_for(asked, f"run {run_id} asked no new question")
    return found


def test_slack_buttons_approve_only_for_a_listed_user_with_a_signed_click(
    live: Callable[..., LiveReceiver],
    incident_world: IncidentWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = incident_world
    slack = CaptureServer()
    responses = CaptureServer()  # Slack's response_url
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/T0/B0/X")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)  # CONTRACT.md: this is enough
    monkeypatch.setenv("APPROVERS", f"slack:{ALICE}")
    r = live()
    response_url = f"{responses.url}/actions/T024BE7LD/123/abc"
    try:
        future = start(**w.params)
        run_id = paused_run(w.database)
        message = wait_for(
            lambda: next((m.json() for m in slack.received if "blocks" in m.json()), None),
            "no approval message with buttons reached Slack",
        )
        [buttons] = [b for b in message["blocks"] if b["type"] == "actions"]
        by_action = {e["action_id"]: e["value"] for e in buttons["elements"]}
        assert set(by_action) == {"approve", "decline"}
        assert "20 object(s)" in json.dumps(message["blocks"])  # the blast radius is shown
        assert SIGNING_SECRET not in json.dumps(message)
        value = by_action["approve"]

        def click(
            user: str,
            *,
            secret: str = SIGNING_SECRET,
            at: float | None = None,
            action: str = "approve",
        ) -> httpx.Response:
            body = block_actions(user, action, value, response_url)
            return r.client.post(
                "/slack/interactions",
                content=body,
                headers=slack_headers(body, secret=secret, at=at),
            )

        # Forged and stale requests: 401, and nothing changes anywhere.
        assert click(ALICE, secret="not-the-signing-secret-at-all").status_code == 401
        assert click(ALICE, at=time.time() - 301).status_code == 401
        body = block_actions(ALICE, "approve", value, response_url)
        unsigned = r.client.post("/slack/interactions", content=body)
        assert unsigned.status_code == 401
        tampered = block_actions(ALICE, "approve", value + "x", response_url)
        assert (
            r.client.post(
                "/slack/interactions", content=tampered, headers=slack_headers(body)
            ).status_code
            == 401
        )
        time.sleep(1)
        assert responses.received == [] and state_of(run_id) == "PAUSED"

        # A click by someone off the list: answered at once, refused, recorded; the run waits.
        began = time.monotonic()
        assert click(MALLORY).status_code == 200
        assert time.monotonic() - began < 3
        refusal = wait_for(lambda: responses.received, "no response_url update for mallory")
        assert "not on the approver list" in refusal[0].json()["text"]
        assert refusal[0].json()["replace_original"] is True
        assert state_of(run_id) == "PAUSED"
        assert pids_alive(w.idle) == w.idle

        # Alice's click: the run resumes, acts, and the message says who approved and when.
        began = time.monotonic()
        assert click(ALICE).status_code == 200
        assert time.monotonic() - began < 3
        outcome = future.result(timeout=60)
        assert outcome.status == "resolved", outcome.summary
        assert outcome.actions[0].approved_by == f"slack:{ALICE}"
        assert pids_alive(w.idle) == set()
        assert pids_alive(w.survivors) == w.survivors
        done = wait_for(lambda: responses.received[1:], "no response_url update for alice")
        assert done[0].json()["text"].startswith(f"Approved by <@{ALICE}> at ")
        events = w.store.timeline(outcome.incident_id)
        [refused] = [e for e in events if e.kind == "approval-refused"]
        assert refused.actor == f"slack:{MALLORY}" and refused.data["channel"] == "slack"
        [answered] = [e for e in events if e.kind == "approval-answered"]
        assert answered.data["channel"] == "slack" and answered.data["verified"] is True

        # A click on the message of a run that ended: refused, said so, nothing happens.
        assert click(ALICE, action="decline").status_code == 200
        late = wait_for(lambda: responses.received[2:], "no response_url update for a late click")
        assert late[0].json()["text"].startswith("Not taken")
    finally:
        slack.close()
        responses.close()


def test_an_answer_counts_only_for_the_plan_asked_and_through_a_channel_that_proves_it(
    incident_world: IncidentWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers resumed straight through the Prefect API (as the UI form or any API client can):
    another plan's digest, a forged Slack proof, and (APPROVAL_ACCEPT_UNVERIFIED=false) a UI
    answer naming a listed approver are each refused, and the run asks again each time."""
    w = incident_world
    monkeypatch.setenv("APPROVAL_LINK_SECRET", LINK_SECRET)
    monkeypatch.setenv("APPROVERS", f"alice,slack:{ALICE}")
    monkeypatch.setenv("APPROVAL_ACCEPT_UNVERIFIED", "false")
    future = start(**w.params)
    run_id = paused_run(w.database)
    question = next_question(run_id)

    def resume(**fields: Any) -> None:
        base = {
            "approve": True,
            "approver": "alice",
            "note": "",
            "plan_digest": question.plan_digest,
        }
        resume_flow_run(uuid.UUID(run_id), run_input={**base, **fields})

    resume(plan_digest="0" * 64)
    question = next_question(run_id, after=question.key)
    resume(channel="slack", approver=f"slack:{ALICE}", proof="f" * 64)
    question = next_question(run_id, after=question.key)
    resume(channel="ui")
    question = next_question(run_id, after=question.key)
    assert pids_alive(w.idle) == w.idle, "no refused answer may act"

    approval.answer_run(
        run_id,
        approve=True,
        approver=f"slack:{ALICE}",
        channel="slack",
        proof_secret=load_settings().approval_link_secret,
    )
    outcome = future.result(timeout=60)
    assert outcome.status == "resolved"
    refusals = [
        e.detail for e in w.store.timeline(outcome.incident_id) if e.kind == "approval-refused"
    ]
    assert len(refusals) == 3, refusals
    assert "another plan" in refusals[0]
    assert "proof does not verify" in refusals[1]
    assert "cannot prove who gave them" in refusals[2]
    assert pids_alive(w.idle) == set()


def test_auto_approve_as_a_prefect_api_parameter_is_no_approval(
    incident_world: IncidentWorld, receiver_env: dict[str, str], tmp_path: Path
) -> None:
    """Anyone who can reach the Prefect API can create a deployment run with
    `auto_approve=true`: the run asks a person anyway, and says why in its timeline."""
    w = incident_world
    process, _, log = start_serve(w, tmp_path, auto_approve=False, extra_env={"APPROVERS": "alice"})
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(
                "connection-pool-exhausted/connection-pool-exhausted"
            )
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters={**w.params, "auto_approve": True}
            )
        run_id = paused_run(w.database, timeout=90)
        assert run_id == str(run.id)
        assert pids_alive(w.idle) == w.idle
        incident = w.store.incident_for_flow_run(run_id)
        assert "auto-approve-ignored" in kinds(w.store, incident.id)
        denied = subprocess.run(
            [REMEDIATE, "approve", run_id, "--deny", "--as", "alice"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert denied.returncode == 0, denied.stderr
        wait_for(
            lambda: w.store.incident(incident.id).status == "declined",
            "the declined incident did not end",
            timeout=60,
        )
        assert pids_alive(w.idle) == w.idle
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in log.read_text()


def test_a_run_executed_again_after_serve_was_killed_asks_again(
    incident_world: IncidentWorld, receiver_env: dict[str, str], tmp_path: Path
) -> None:
    """The answer reaches a run whose `serve` was SIGKILLed: `remediate approve` says nobody read
    it; the next `serve` runs it again from detection, and that execution asks again (a new
    question for its own incident and plan) instead of acting on the old answer."""
    w = incident_world
    first = tmp_path / "first"
    first.mkdir()
    process, url, _ = start_serve(w, first, auto_approve=False)
    try:
        run_id = alert_until_paused(url, w.database)
        old = next_question(run_id)
        old_incident = w.store.incident_for_flow_run(run_id)
    finally:
        process.kill()  # SIGKILL: the run's execution is gone with it
        process.wait()

    unread = subprocess.run(
        [REMEDIATE, "approve", run_id, "--as", "alice", "--wait", "4"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert unread.returncode == 1, unread.stdout + unread.stderr
    assert "has not read the answer" in unread.stderr and "Traceback" not in unread.stderr

    second = tmp_path / "second"
    second.mkdir()
    process, url, log = start_serve(w, second, auto_approve=False)
    try:
        question = next_question(run_id, after=old.key)
        assert question.key != old.key
        incident = w.store.incident_for_flow_run(run_id)
        assert incident.id != old_incident.id
        assert "acted" not in kinds(w.store, incident.id)
        assert pids_alive(w.idle) == w.idle, "the dead execution's answer covered nothing"

        approved = subprocess.run(
            [REMEDIATE, "approve", run_id, "--as", "alice"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert approved.returncode == 0, approved.stderr
        assert f"approved flow run {run_id} as alice" in approved.stdout
        wait_for(
            lambda: w.store.incident(incident.id).status == "resolved",
            "the recovered run did not resolve its incident",
            timeout=60,
        )
        assert pids_alive(w.idle) == set()
        assert pids_alive(w.survivors) == w.survivors

        # The run is over: an answer now is said to reach nobody.
        wait_for(lambda: state_of(run_id) == "COMPLETED", "the run did not complete")
        late = subprocess.run(
            [REMEDIATE, "approve", run_id], capture_output=True, text=True, timeout=60
        )
        assert late.returncode == 1 and "not waiting for an approval" in late.stderr
        assert "approved" not in late.stdout
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in log.read_text()
