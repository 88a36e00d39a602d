"""rls-auth-failure on a Supabase-shaped database (seed 002 §1): policies broken for real, rolled
back to the known-good snapshot, checked by querying as `authenticated` with a user's claims."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from remediate.drills.sandbox import git
from remediate.flows.rls_auth_failure import rls_auth_failure
from remediate.store.database import Store
from remediate.tasks.postgres import PgTarget
from tests.conftest import PG_ADMIN_URL, db_url
from tests.e2e.conftest import answer, paused_run, start
from tests.support import supabase

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
    assert 'CREATE POLICY "auth_policy_select" ON "public"."users"' in text
    # What the Supabase CLI accepts: a YYYYMMDDHHMMSS version, no transaction of its own, and
    # idempotent (a CREATE POLICY is always preceded by its DROP POLICY IF EXISTS).
    assert re.fullmatch(r"\d{14}_rollback_rls\.sql", written.name)
    assert "BEGIN" not in text and "COMMIT" not in text
    assert text.index(
        'DROP POLICY IF EXISTS "auth_policy_select" ON "public"."users"'
    ) < text.index('CREATE POLICY "auth_policy_select"')


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
    # A policy opening a table to everyone is a security incident, as RLS switched off is.
    assert set(outcome.causes) == {"policy-changed", "rls-disabled", "access-opened"}
    assert outcome.severity == "P1"
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
    assert planned.actions[0].targets == ["create policy public.students.students_select"]

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


class AppAndSentry:
    """The guarded app's login route, deployed from APP_REPO's working tree (it reads
    src/lib/auth.json on every request), and Sentry's events API, on one local HTTP server."""

    def __init__(self, repo: Path, auth_errors: int) -> None:
        outer = self
        self.repo, self.auth_errors, self.sentry_requests = repo, auth_errors, []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                config = json.loads((outer.repo / "src" / "lib" / "auth.json").read_text())
                self.send_response(200 if config["enabled"] else 401)
                self.end_headers()

            def do_GET(self) -> None:
                outer.sentry_requests.append((self.path, self.headers.get("Authorization")))
                body = json.dumps({"data": [{"count()": outer.auth_errors}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def deployed(app_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppAndSentry]:
    (app_repo / "src" / "lib").mkdir(parents=True)
    (app_repo / "src" / "lib" / "auth.json").write_text('{"enabled": true}\n')
    git(app_repo, "add", "-A")
    git(app_repo, "commit", "-qm", "auth config")
    server = AppAndSentry(app_repo, auth_errors=0)
    for name, value in {
        "APP_URL": server.url,
        "LOGIN_PROBE_EMAIL": "probe@school.test",
        "LOGIN_PROBE_PASSWORD": "probe-password-canary",
        # This app's own login route takes JSON (not the FastAPI template's OAuth2 form).
        "APP_LOGIN_PATH": "/auth/login",
        "APP_LOGIN_FORM": "json",
        "SENTRY_API_URL": server.url,
        "SENTRY_AUTH_TOKEN": "sentry-token-canary",
        "SENTRY_ORG": "atal-ai",
        "SENTRY_PROJECT": "web",
    }.items():
        monkeypatch.setenv(name, value)
    yield server
    server.server.shutdown()


def test_a_broken_auth_commit_is_reverted_when_the_policies_are_fine(
    school: str, app_repo: Path, deployed: AppAndSentry
) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    (app_repo / "src" / "lib" / "auth.json").write_text('{"enabled": false}\n')
    git(app_repo, "commit", "-qam", "auth: new session handling")
    bad = git(app_repo, "rev-parse", "HEAD").strip()
    deployed.auth_errors = 120  # 24/min over 5 min

    outcome = rls_auth_failure(**params(school), auto_approve=True)

    assert outcome.status == "resolved", outcome.summary
    checks = {f.check: f for f in outcome.findings}
    assert not checks["login-probe"].ok and "HTTP 401" in checks["login-probe"].detail
    assert not checks["sentry-auth-errors"].ok and "24.0/min" in checks["sentry-auth-errors"].detail
    assert checks["login-probe-after"].ok
    (action,) = outcome.actions
    assert action.name == "revert-auth-commit" and action.targets[0].startswith(
        f"commit {bad[:10]}"
    )
    assert (
        git(app_repo, "log", "-1", "--format=%s").strip() == 'Revert "auth: new session handling"'
    )
    assert json.loads((app_repo / "src" / "lib" / "auth.json").read_text()) == {"enabled": True}
    path, auth = deployed.sentry_requests[-1]
    assert path.startswith("/api/0/organizations/atal-ai/events/") and "auth_error" in path
    assert auth == "Bearer sentry-token-canary"
    seen = outcome.model_dump_json()
    assert "probe-password-canary" not in seen and "sentry-token-canary" not in seen


def test_revert_refuses_a_dirty_work_tree(
    school: str, app_repo: Path, deployed: AppAndSentry
) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    (app_repo / "src" / "lib" / "auth.json").write_text('{"enabled": false}\n')
    git(app_repo, "commit", "-qam", "auth: break it")
    (app_repo / "README.md").write_text("work in progress\n")
    outcome = rls_auth_failure(**params(school), auto_approve=True)
    assert outcome.status == "failed" and "uncommitted changes" in outcome.summary
    assert (app_repo / "README.md").read_text() == "work in progress\n"
    assert git(app_repo, "log", "-1", "--format=%s").strip() == "auth: break it"


# Trust II: every non-system schema, the functions the policies call, and plans only a person
# may approve.


def store(env: dict[str, str]) -> Store:
    return Store.open(SecretStr(env["REMEDIATION_DATABASE_URL"]))


def resource(database: str) -> str:
    return PgTarget(url=SecretStr(db_url(database))).resource


def avatars_seen(database: str, user_id: str) -> list[str]:
    """The storage objects `user_id` sees, queried as PostgREST would for Supabase Storage."""
    with psycopg.connect(db_url(database)) as conn, conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (user_id,))
        return [r[0] for r in conn.execute("SELECT name FROM storage.objects ORDER BY name")]


def definition(database: str, function: str) -> str:
    ((text,),) = run_sql(database, f"SELECT pg_get_functiondef('{function}'::regprocedure)")
    return str(text)


def test_a_broken_storage_policy_is_detected_and_rolled_back(
    school: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy = rls_auth_failure(**params(school))
    assert healthy.status == "healthy", healthy.findings
    assert rls_auth_failure(**params(school)).status == "healthy"  # storage.buckets: no policy
    saved = store(env).latest_snapshot("rls-policies", resource(school))
    assert saved and saved["rls"]["storage.objects"] and "auth.users" not in saved["rls"]
    good = policies(school)
    assert avatars_seen(school, supabase.ALICE) == [f"{supabase.ALICE}/avatar.png"]

    # The incident: a migration loosens the avatars policy: every user sees every avatar.
    run_sql(
        school, "ALTER POLICY avatars_own_folder ON storage.objects USING (bucket_id = 'avatars')"
    )
    monkeypatch.setenv("RLS_SCHEMAS", "public")
    assert rls_auth_failure(**params(school)).status == "healthy"  # storage not watched then
    monkeypatch.delenv("RLS_SCHEMAS")
    assert len(avatars_seen(school, supabase.ALICE)) == 2

    outcome = rls_auth_failure(**params(school), auto_approve=True)
    assert outcome.status == "resolved", outcome.summary
    assert "policy-changed" in outcome.causes
    checks = {f.check: f for f in outcome.findings}
    assert (
        "storage.objects: policy avatars_own_folder changed"
        in checks["policies-match-snapshot"].detail
    )
    assert outcome.actions[0].targets == [
        "drop policy storage.objects.avatars_own_folder",
        "create policy storage.objects.avatars_own_folder",
    ]
    assert policies(school) == good
    assert avatars_seen(school, supabase.ALICE) == [f"{supabase.ALICE}/avatar.png"]


def test_a_snapshot_from_before_schemas_is_read_as_public(school: str, env: dict[str, str]) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    db = store(env)
    saved = db.latest_snapshot("rls-policies", resource(school))
    assert saved
    legacy = {
        "policies": [
            {k: v for k, v in p.items() if k != "schema_name"}
            for p in saved["policies"]
            if p["schema_name"] == "public"
        ],
        "rls": {
            k.split(".", 1)[1]: on for k, on in saved["rls"].items() if k.startswith("public.")
        },
    }
    db.save_snapshot("rls-policies", resource(school), legacy)
    assert rls_auth_failure(**params(school)).status == "healthy"
    upgraded = db.latest_snapshot("rls-policies", resource(school))
    assert upgraded and upgraded["format"] == 2 and "storage.objects" in upgraded["rls"]

    # And a bare-named snapshot still drives a rollback of public's tables.
    db.save_snapshot("rls-policies", resource(school), legacy)
    run_sql(school, "DROP POLICY students_select ON students")
    outcome = rls_auth_failure(**params(school), auto_approve=True)
    assert outcome.status == "resolved", outcome.summary
    assert outcome.actions[0].targets == ["create policy public.students.students_select"]
    assert ("students", "students_select") in {(r[0], r[1]) for r in policies(school)}


def test_an_app_function_the_policies_call_is_rolled_back_by_a_person(
    school: str, env: dict[str, str]
) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    good = definition(school, "public.is_class_teacher(uuid)")
    # The incident: the app's helper replaced: every signed-in user is every class's teacher.
    run_sql(
        school,
        "CREATE OR REPLACE FUNCTION public.is_class_teacher(teacher uuid) RETURNS boolean"
        " LANGUAGE sql STABLE AS $$ SELECT true $$",
    )
    future = start(flow=rls_auth_failure, **params(school), auto_approve=True)
    run_id = paused_run(school)  # --auto-approve does not cover a function replacement
    assert "SELECT true" in definition(school, "public.is_class_teacher(uuid)")
    answer(run_id, approve=True, approver="hana")
    outcome = future.result(timeout=90)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.causes == ["function-changed"]
    assert outcome.actions[0].targets == ["replace function public.is_class_teacher(uuid)"]
    assert definition(school, "public.is_class_teacher(uuid)") == good
    events = store(env).timeline(outcome.incident_id or "")
    (planned,) = [e for e in events if e.kind == "planned"]
    plan = planned.data["plan"]
    assert plan["manual_only"] and any(good in d for d in plan["actions"][0]["details"])
    assert any(e.kind == "auto-approve-refused" for e in events)
    assert next(f for f in outcome.findings if f.check == "functions-match-snapshot-after").ok


def test_a_replaced_auth_uid_is_escalated_never_replaced(school: str) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    broken = (
        "CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS"
        " $$ SELECT nullif(current_setting('request.jwt.claims', true)::json ->> 'id', '')::uuid $$"
    )
    run_sql(school, broken)
    before = definition(school, "auth.uid()")
    outcome = rls_auth_failure(**params(school), auto_approve=True)
    assert outcome.status == "escalated", outcome.summary
    assert "function-changed" in outcome.causes
    assert "auth.uid()" in outcome.summary and "Supabase Auth (GoTrue)" in outcome.summary
    assert not [a for a in outcome.actions if a.executed]
    assert definition(school, "auth.uid()") == before


def test_dropping_a_restrictive_policy_waits_for_a_person(
    school: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rls_auth_failure(**params(school)).status == "healthy"
    # The incident: a migration adds a RESTRICTIVE policy denying every read of users.
    run_sql(
        school,
        "CREATE POLICY lock_out ON users AS RESTRICTIVE FOR SELECT TO authenticated USING (false)",
    )
    monkeypatch.setenv("AUTO_APPROVE", "rls-auth-failure:*:*")
    future = start(flow=rls_auth_failure, **params(school), auto_approve=True)
    run_id = paused_run(school)  # neither the rule nor --auto-approve acted
    assert "lock_out" in {r[1] for r in policies(school)}
    answer(run_id, approve=True, approver="hana")
    outcome = future.result(timeout=90)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.actions[0].approved_by != "auto"
    assert "lock_out" not in {r[1] for r in policies(school)}
    events = store(env).timeline(outcome.incident_id or "")
    (planned,) = [e for e in events if e.kind == "planned"]
    (reason,) = planned.data["plan"]["manual_only"]
    assert "RESTRICTIVE policy public.users.lock_out" in reason
    assert any(e.kind == "auto-approve-refused" for e in events)
