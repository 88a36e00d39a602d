"""tables-missing-after-migration on a real alembic project and the real PostgreSQL (seed 000).

Each test builds the app's schema with its own migrations, breaks it the way the seed's incident
did, runs the runbook, and asserts on the database afterwards: tables, rows, alembic_version.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
from alembic import command
from alembic.config import Config

from remediate.drills import ASSETS
from remediate.flows.tables_missing_after_migration import tables_missing_after_migration
from tests.conftest import PG_ADMIN_URL, db_url
from tests.e2e.conftest import DOCKER_HOST, answer, paused_run, start
from tests.support import supabase

pytestmark = pytest.mark.usefixtures("prefect_server")
FIXTURE = ASSETS / "app_alembic"


class App:
    """The guarded app: its alembic project (a copy per test) and its database."""

    def __init__(self, root: Path, database: str) -> None:
        self.root, self.database, self.url = root, database, db_url(database)

    def alembic(self, name: str, *args: str) -> None:
        cfg = Config(str(self.root / "alembic.ini"))
        cfg.set_main_option(
            "sqlalchemy.url", self.url.replace("postgresql://", "postgresql+psycopg://")
        )
        getattr(command, name)(cfg, *args)

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    def version(self) -> list[str]:
        return [r[0] for r in self.sql("SELECT version_num FROM alembic_version")]

    def tables(self) -> set[str]:
        return {
            r[0] for r in self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }

    def add_revision(self, name: str, body: str) -> Path:
        path = self.root / "migrations" / "versions" / name
        path.write_text(body)
        return path


@pytest.fixture
def app(env: dict[str, str], sandbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    root = tmp_path / "app"
    shutil.copytree(FIXTURE, root)
    monkeypatch.setenv("ALEMBIC_CONFIG", str(root / "alembic.ini"))
    return App(root, sandbox)


@pytest.fixture
def supabase_roles() -> Iterator[None]:
    with supabase.supabase_roles(PG_ADMIN_URL):
        yield


def drop_everything_but_alembic_version(app: App) -> None:
    app.sql('DROP TABLE ingestions, "user"')


def test_healthy_schema_opens_no_incident(app: App) -> None:
    app.alembic("upgrade", "head")
    outcome = tables_missing_after_migration()
    assert outcome.status == "healthy" and outcome.incident_id is None


def test_seed_000_incident_only_alembic_version_left(app: App) -> None:
    app.alembic("upgrade", "head")
    drop_everything_but_alembic_version(app)
    assert app.tables() == {"alembic_version"} and app.version() == ["d4"]

    outcome = tables_missing_after_migration(auto_approve=True)

    assert outcome.status == "resolved" and outcome.verified, outcome.summary
    assert outcome.causes == ["stamp-without-upgrade"]
    assert [a.name for a in outcome.actions] == ["reset-alembic-version", "alembic-upgrade-head"]
    assert app.tables() == {"alembic_version", "user", "ingestions"}
    assert app.version() == ["d4"]
    columns = {
        r[0]
        for r in app.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'ingestions'"
        )
    }
    assert "ocr_provider" in columns


def test_only_the_newest_revision_missing_keeps_every_row(app: App) -> None:
    app.alembic("upgrade", "c3")
    app.sql("INSERT INTO \"user\" (id, email, full_name) VALUES (1, 'a@x.io', 'Ada')")
    app.sql("INSERT INTO ingestions (id, user_id, filename) VALUES (7, 1, 'scan.pdf')")
    app.alembic("stamp", "d4")  # the seed's mistake: stamp instead of upgrade

    future = start(flow=tables_missing_after_migration, database=app.database)
    answer(paused_run(app.database), approve=True, approver="fay")
    outcome = future.result(timeout=90)

    assert outcome.status == "resolved", outcome.summary
    reset = outcome.actions[0]
    assert reset.targets == ["alembic_version: d4 -> c3"] and reset.approved_by == "fay"
    assert app.version() == ["d4"]
    assert app.sql('SELECT id, email, full_name FROM "user"') == [(1, "a@x.io", "Ada")]
    assert app.sql("SELECT id, filename, ocr_provider FROM ingestions") == [(7, "scan.pdf", None)]


def supabase_auth(app: App) -> None:
    """What makes a database Supabase's: GoTrue's `auth` schema and its `auth.uid()`."""
    from remediate.drills.supabase import AUTH_UID

    app.sql(
        "CREATE SCHEMA auth; CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS"
        f" $$ {AUTH_UID['either']} $$"
    )


def test_a_plain_database_on_a_server_with_supabase_roles_gets_no_rls(
    app: App, supabase_roles: None
) -> None:
    """The roles are cluster-wide: another database of the same server is not Supabase's, and an
    app connecting as a non-owner role would be locked out by RLS it never asked for."""
    app.alembic("upgrade", "head")
    drop_everything_but_alembic_version(app)
    outcome = tables_missing_after_migration(auto_approve=True)
    assert outcome.status == "resolved", outcome.summary
    assert "enable-rls" not in [a.name for a in outcome.actions]
    assert app.sql("SELECT count(*) FROM pg_class WHERE relrowsecurity") == [(0,)]


def test_supabase_target_gets_rls_and_a_service_role_only_policy(
    app: App, supabase_roles: None
) -> None:
    supabase_auth(app)
    app.alembic("upgrade", "head")
    drop_everything_but_alembic_version(app)
    outcome = tables_missing_after_migration(auto_approve=True)
    assert outcome.status == "resolved", outcome.summary
    assert outcome.actions[-1].name == "enable-rls"
    assert set(outcome.actions[-1].targets) == {"table user", "table ingestions"}
    rls = dict(
        app.sql(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relname IN ('user', 'ingestions')"
        )
    )
    assert rls == {"user": True, "ingestions": True}
    policies = app.sql("SELECT tablename, roles::text[], cmd FROM pg_policies ORDER BY tablename")
    assert policies == [("ingestions", ["service_role"], "ALL"), ("user", ["service_role"], "ALL")]


BUGGY = """\"\"\"add ingestions.status (autogenerated, buggy)\"\"\"
import sqlalchemy as sa
from alembic import op

revision = "e5"
down_revision = "d4"


def upgrade():
    op.create_table(
        "ingestions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("status", sa.String(20), nullable=True),
    )


def downgrade():
    pass
"""


def test_buggy_migration_is_reported_with_its_replacement_and_never_run(app: App) -> None:
    app.alembic("upgrade", "head")
    app.sql("INSERT INTO \"user\" (id, email) VALUES (1, 'a@x.io')")
    buggy = app.add_revision("e5_buggy.py", BUGGY)
    app.alembic("stamp", "e5")

    outcome = tables_missing_after_migration(auto_approve=True)

    assert outcome.status == "escalated"
    assert "buggy-migration" in outcome.causes
    assert "op.add_column('ingestions', sa.Column(\"status\", sa.String(20), nullable=True))" in (
        outcome.summary
    )
    assert buggy.exists() and app.version() == ["e5"]
    assert app.sql('SELECT id FROM "user"') == [(1,)]
    assert not any(a.executed for a in outcome.actions)


def test_dry_run_declined_and_timed_out_change_nothing(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.alembic("upgrade", "c3")
    app.alembic("stamp", "d4")
    before = (app.version(), app.tables())

    planned = tables_missing_after_migration(dry_run=True)
    assert planned.status == "planned"
    assert [a.name for a in planned.actions] == ["reset-alembic-version", "alembic-upgrade-head"]

    future = start(flow=tables_missing_after_migration, database=app.database)
    answer(paused_run(app.database), approve=False, approver="gus")
    assert future.result(timeout=60).status == "declined"

    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "2")
    timed_out = tables_missing_after_migration()
    assert timed_out.status == "timed-out"
    assert (app.version(), app.tables()) == before
    columns = {
        r[0]
        for r in app.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'ingestions'"
        )
    }
    assert "ocr_provider" not in columns


def test_never_migrated_database_is_brought_to_head(app: App) -> None:
    outcome = tables_missing_after_migration(auto_approve=True)
    assert outcome.status == "resolved"
    assert [a.name for a in outcome.actions] == ["alembic-upgrade-head"]
    assert app.version() == ["d4"]


@pytest.fixture
def backend(app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app's backend container, with alembic: this machine's Python and the project's venv
    mounted read-only into the test image, the app's alembic project at /app."""
    engine = docker.DockerClient(base_url=DOCKER_HOST)
    project = f"rt-{uuid.uuid4().hex[:8]}"
    mounts = {
        sys.base_prefix: sys.base_prefix,
        sys.prefix: sys.prefix,
        str(app.root): "/app",
        "/usr/lib/x86_64-linux-gnu": "/usr/lib/x86_64-linux-gnu",
        "/lib64": "/lib64",
    }
    container = engine.containers.run(
        "localhost/remediate-test:3",
        ["/bin/sh", "-c", "exec sleep 100000"],
        detach=True,
        network_mode="host",
        environment={"DATABASE_URL": app.url.replace("postgresql://", "postgresql+psycopg://")},
        volumes={src: {"bind": dst, "mode": "ro"} for src, dst in mounts.items()},
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": "backend",
            "remediate.test": "1",
        },
    )
    alembic_bin = Path(sys.prefix) / "bin" / "alembic"
    monkeypatch.setenv(
        "ALEMBIC_CONFIG", f"docker compose exec -T backend {alembic_bin} -c /app/alembic.ini"
    )
    monkeypatch.setenv("DOCKER_HOST", DOCKER_HOST)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", project)
    yield container
    container.remove(force=True)
    engine.close()


def test_alembic_runs_inside_the_backend_container(app: App, backend: Any) -> None:
    app.alembic("upgrade", "c3")
    app.sql("INSERT INTO \"user\" (id, email) VALUES (1, 'a@x.io')")
    app.alembic("stamp", "d4")

    outcome = tables_missing_after_migration(auto_approve=True)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.actions[0].targets == ["alembic_version: d4 -> c3"]
    assert app.version() == ["d4"]
    assert app.sql('SELECT id, email FROM "user"') == [(1, "a@x.io")]
    columns = {
        r[0]
        for r in app.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'ingestions'"
        )
    }
    assert "ocr_provider" in columns
    assert any(f.check == "alembic-check-after" and f.ok for f in outcome.findings)


def test_alembic_check_without_models_is_not_available_not_a_failure(app: App) -> None:
    """alembic's own env.py template sets `target_metadata = None`: `alembic check` cannot
    compare anything, which is "not available", never a failed verification."""
    env_py = app.root / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace("target_metadata=metadata", "target_metadata=None")
    )
    app.alembic("upgrade", "head")
    drop_everything_but_alembic_version(app)

    outcome = tables_missing_after_migration(auto_approve=True)

    assert outcome.status == "resolved" and outcome.verified, outcome.summary
    check = {f.check: f for f in outcome.findings}["alembic-check-after"]
    assert check.ok and "not available" in check.detail
    assert app.tables() == {"alembic_version", "user", "ingestions"}
