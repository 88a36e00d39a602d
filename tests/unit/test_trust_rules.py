"""The pure rules behind "Trust I": plan-bound answers, channel proofs, redaction, escaping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from remediate.domain.models import Plan, PlannedAction
from remediate.domain.redact import redact, scrub_values
from remediate.domain.settings import ConfigError, load_settings
from remediate.engine import approval
from remediate.engine.approval import (
    Approval,
    ApprovalPolicy,
    Identity,
    identify,
    plan_digest,
    refusal_reason,
)
from remediate.engine.approval_links import link_approvers, sign, verify
from remediate.tasks import slack

SECRET = SecretStr("unit-test-proof-secret-0123456789")


def plan(*targets: str) -> Plan:
    return Plan(
        runbook="connection-pool-exhausted",
        resource="db",
        summary="terminate",
        actions=[
            PlannedAction(
                name="terminate-idle-sessions",
                destructive=True,
                resource="db",
                description="d",
                targets=list(targets),
            )
        ],
    )


def test_the_digest_names_one_exact_plan() -> None:
    assert plan_digest(plan("pid 1", "pid 2")) == plan_digest(plan("pid 1", "pid 2"))
    assert plan_digest(plan("pid 1", "pid 2")) != plan_digest(plan("pid 1", "pid 3"))
    assert len(plan_digest(plan())) == 64


def test_an_answer_for_another_plan_or_with_a_forged_proof_is_refused() -> None:
    policy = ApprovalPolicy(environment="production", approvers=frozenset({"alice"}))
    digest = plan_digest(plan("pid 1"))
    answer = Approval(approve=True, approver="alice", plan_digest=digest, channel="cli")
    ok = identify(answer, secret=SECRET, flow_run_id="run-1")
    assert ok == Identity(channel="cli", verified=False)
    assert refusal_reason(answer, policy=policy, requester=None, digest=digest, identity=ok) is None

    other = answer.model_copy(update={"plan_digest": "0" * 64})
    assert "another plan" in str(
        refusal_reason(other, policy=policy, requester=None, digest=digest, identity=ok)
    )
    unbound = answer.model_copy(update={"plan_digest": ""})
    assert "another plan" in str(
        refusal_reason(unbound, policy=policy, requester=None, digest=digest, identity=ok)
    )

    forged = answer.model_copy(update={"channel": "slack", "proof": "f" * 64})
    who = identify(forged, secret=SECRET, flow_run_id="run-1")
    assert who.forged
    assert "proof does not verify" in str(
        refusal_reason(forged, policy=policy, requester=None, digest=digest, identity=who)
    )


def test_a_slack_proof_holds_for_its_run_plan_approver_and_verdict_only() -> None:
    digest = plan_digest(plan("pid 1"))
    proof = approval.answer_proof(
        SECRET,
        flow_run_id="run-1",
        digest=digest,
        approver="slack:U1",
        channel="slack",
        approve=True,
    )
    answer = Approval(
        approve=True, approver="slack:U1", plan_digest=digest, channel="slack", proof=proof
    )
    assert identify(answer, secret=SECRET, flow_run_id="run-1") == Identity("slack", True)
    for change in ({"approver": "slack:U2"}, {"approve": False}, {"plan_digest": "1" * 64}):
        assert identify(answer.model_copy(update=change), secret=SECRET, flow_run_id="run-1").forged
    assert identify(answer, secret=SECRET, flow_run_id="run-2").forged
    assert identify(answer, secret=None, flow_run_id="run-1").forged


def test_unverified_answers_count_only_when_configured() -> None:
    digest = plan_digest(plan("pid 1"))
    answer = Approval(approve=True, approver="alice", plan_digest=digest, channel="ui")
    who = identify(answer, secret=SECRET, flow_run_id="r")
    strict = ApprovalPolicy(
        environment="p", approvers=frozenset({"alice"}), accept_unverified=False
    )
    assert "cannot prove" in str(
        refusal_reason(answer, policy=strict, requester=None, digest=digest, identity=who)
    )
    lenient = ApprovalPolicy(environment="p", approvers=frozenset({"alice"}))
    assert (
        refusal_reason(answer, policy=lenient, requester=None, digest=digest, identity=who) is None
    )


def test_links_are_made_one_per_approver_and_carry_it() -> None:
    assert link_approvers([]) == [""]
    assert link_approvers(["alice", "slack:U1", "bob"]) == ["alice", "bob"]
    assert link_approvers(["slack:U1"]) == []
    token = sign(
        SECRET,
        flow_run_id="r",
        incident_id="i",
        summary="s",
        ttl_seconds=60,
        plan_digest="d" * 64,
        approver="alice",
    )
    claims = verify(SECRET, token)
    assert (claims.approver, claims.plan_digest) == ("alice", "d" * 64)


@pytest.mark.parametrize(
    ("line", "leak"),
    [
        ("error connecting to redis://:s3cr3t-pw@redis:6379/0", "s3cr3t-pw"),
        ("postgresql://app:hunter2@db:5432/app refused", "hunter2"),
        ("GET /items Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc", "eyJhbGciOiJIUzI1NiJ9"),
        ('{"api_key": "SG.live \\"quoted\\" key", "user": "bob"}', "SG.live"),
        ("SMTP_PASSWORD=pa55word sending", "pa55word"),
        ("login failed password: 'with spaces in it'", "with spaces"),
    ],
)
def test_log_lines_are_redacted(line: str, leak: str) -> None:
    cleaned = redact(line)
    assert leak not in cleaned and "***" in cleaned


def test_scrubbing_works_on_values_not_on_json_text() -> None:
    secret = 'pa"ss\\wörd-9f'
    event = {"message": f"boom {secret}", "extra": {"list": [f"x{secret}y"], secret: 1}}
    cleaned = scrub_values(event, [secret], mask="[Filtered]")
    text = json.dumps(cleaned, ensure_ascii=False)
    assert secret not in text and 'pa\\"ss' not in text
    assert cleaned["message"] == "boom [Filtered]"


def test_slack_text_pings_nobody_and_links_nowhere() -> None:
    hostile = "ratelimit:<!channel>:<https://evil.example|click> & more"
    escaped = slack.mrkdwn(hostile)
    assert "<!channel>" not in escaped and "<https://" not in escaped
    assert escaped == "ratelimit:&lt;!channel&gt;:&lt;https://evil.example|click&gt; &amp; more"
    blocks = slack.approval_blocks(hostile, plan=plan(hostile), value="v")
    assert "<!channel>" not in json.dumps(blocks)


def test_short_tokens_and_signing_keys_are_refused() -> None:
    for name in ("alert_webhook_token", "approval_link_secret", "slack_signing_secret"):
        with pytest.raises(ConfigError, match=name.upper()):
            load_settings(**{name: "short"})
    assert load_settings(alert_webhook_token="x" * 16).alert_webhook_token is not None


def test_the_plan_markdown_shows_hostile_keys_as_text() -> None:
    hostile = plan("ratelimit:[click](https://evil.example)", "ratelimit:`code`<img src=x>")
    hostile = hostile.model_copy(update={"summary": "# not a heading ![x](https://evil/p.png)"})
    markdown = hostile.to_markdown()
    assert "- `ratelimit:[click](https://evil.example)`" in markdown
    assert "- `` ratelimit:`code`<img src=x> ``" in markdown
    assert "\\# not a heading \\!\\[x\\]\\(https://evil/p.png\\)" in markdown


def test_state_folders_are_tightened_to_0700_even_when_they_exist(tmp_path: Path) -> None:
    from remediate.engine.prefect_api import private_dir

    loose = tmp_path / "state"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert private_dir(loose).stat().st_mode & 0o777 == 0o700
    fresh = private_dir(tmp_path / "new" / "spool")
    assert fresh.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # a sticky, shared folder someone pointed a setting at: left alone
    assert private_dir(shared).stat().st_mode & 0o7777 == 0o1777
