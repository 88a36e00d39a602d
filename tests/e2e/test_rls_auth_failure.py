"""rls-auth-failure on a Supabase-shaped database (seed 002 §1): policies broken for real, rolled
back to the known-good snapshot, checked by querying as `authenticated` with a user's claims."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.rls_auth_failure import rls_auth_failure
from tests import supabase
from tests.conftest import PG_ADMIN_URL, db_url
from tests.e2e.conftest import answer, paused_run, start

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def school(env: dict[str, str], sandbox: str) -> Iterator[str]:
    with supabase.supabase_roles(PG_ADMIN_URL):
        supabase.build(db_url(sandbox))
        yield sandbox


def run_sql(database: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url(database), autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def policies(database: str) -> list[tuple[Any, ...]]:
    return run_sql(
        database,
        "SELECT tablename, policyname, roles::text[], cmd, qual, with_check"
        " FROM pg_policies ORDER BY 1, 2",
    )


def params(database: str, **extra: Any) -> dict[str, Any]:
    return {"database": database, "probe_user_id": supabase.ALICE, **extra}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def app_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "app"
    (repo / "supabase" / "migrations").mkdir(parents=True)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "dev@school.test")
    git(repo, "config", "user.name", "Dev")
    (repo / "README.md").write_text("app\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    (repo / "supabase" / "migrations" / "20251123_ats_roles.sql").write_text(
        "DROP POLICY auth_policy_select ON users;\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "ats: tighten user policies")
    monkeypatch.setenv("APP_REPO", str(repo))
    monkeypatch.setenv("MIGRATIONS_DIR", str(repo / "supabase" / "migrations"))
    return repo


def test_healthy_run_records_the_snapshot_then_a_dropped_policy_is_restored(
    school: str, app_repo: Path
) -> None:
    healthy = rls_auth_failure(**params(school))
    assert healthy.status == "healthy", healthy.findings
    good = policies(school)

    # The incident: a migration drops the users' select policy and loosens the update one.
    run_sql(
        school,
        "DROP POLICY auth_policy_select ON users;"
        " ALTER POLICY auth_policy_update ON users USING (true)",
    )
    future = start(flow=rls_auth_failure, **params(school))
    run_id = paused_run(school)
    assert policies(school) != good
    answer(run_id, approve=True, approver="hana")
    outcome = future.result(timeout=90)

    assert outcome.status == "resolved", outcome.summary
    assert set(outcome.causes) >= {"policy-changed", "recent-auth-commits"}
    assert any("ats: tighten user policies" in f.detail for f in outcome.findings)
    assert policies(school) == good
    probe = next(f for f in outcome.findings if f.check == "access-probe-after")
    assert probe.ok and "sees 1 own row(s), 0 other row(s)" in probe.detail
    (written,) = [
        p
        for p in (app_repo / "supabase" / "migrations").iterdir()
        if p.name.endswith("_rollback_rls.sql")
    ]
    text = written.read_text()
    assert 'CREATE POLICY "auth_policy_select" ON "public"."users"' in text and "BEGIN;" in text


def test_rls_switched_off_and_a_widening_policy_are_rolled_back(school: str) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    good = policies(school)
    run_sql(
        school,
        "ALTER TABLE students DISABLE ROW LEVEL SECURITY;"
        " CREATE POLICY everyone ON classes FOR SELECT USING (true)",
    )
    outcome = rls_auth_failure(**params(school), auto_approve=True)
    assert outcome.status == "resolved", outcome.summary
    assert set(outcome.causes) == {"policy-changed", "rls-disabled"}
    assert policies(school) == good
    assert run_sql(school, "SELECT relrowsecurity FROM pg_class WHERE relname = 'students'") == [
        (True,)
    ]


def test_all_policies_gone_locks_users_out_and_is_restored(school: str) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    good = policies(school)
    run_sql(
        school, "DROP POLICY auth_policy_select ON users; DROP POLICY auth_policy_update ON users"
    )
    outcome = rls_auth_failure(**params(school), auto_approve=True)
    before = {f.check: f for f in outcome.findings}
    assert not before["tables-without-policy"].ok and not before["access-probe"].ok
    assert outcome.status == "resolved" and policies(school) == good


def test_dry_run_declined_and_timed_out_leave_the_broken_policies(
    school: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    run_sql(school, "DROP POLICY students_select ON students")
    broken = policies(school)

    planned = rls_auth_failure(**params(school), dry_run=True)
    assert planned.status == "planned"
    assert planned.actions[0].targets == ["create policy students.students_select"]

    future = start(flow=rls_auth_failure, **params(school))
    answer(paused_run(school), approve=False, approver="ivan")
    assert future.result(timeout=60).status == "declined"

    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    assert rls_auth_failure(**params(school)).status == "timed-out"
    assert policies(school) == broken


def test_without_a_snapshot_nothing_is_guessed(school: str) -> None:
    run_sql(
        school, "DROP POLICY auth_policy_select ON users; DROP POLICY auth_policy_update ON users"
    )
    outcome = rls_auth_failure(**params(school), auto_approve=True)
    assert outcome.status == "escalated" and "no known-good snapshot" in outcome.summary
    assert not [a for a in outcome.actions if a.executed]


def test_hostile_table_names_are_quoted_not_executed(school: str) -> None:
    evil = 'users"; DROP TABLE users; --'
    outcome = rls_auth_failure(database=school, probe_user_id=supabase.ALICE, probe_table=evil)
    assert outcome.status == "escalated"
    assert run_sql(school, "SELECT count(*) FROM users") == [(2,)]
