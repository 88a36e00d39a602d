"""tables-missing-after-migration on a backend in the FastAPI full-stack template's shape.

The world is `drills/assets/app_template/` (its README says which real behaviour each part
reproduces): an alembic history with renames, raw `UPDATE`s and `sqlmodel` imports, an env.py
that reads the app's own settings, run by the app's own interpreter (`.cache/template-app/`, built
by scripts/setup.sh), never the product's. Each test breaks the real database the way seed 000's
incident did and asserts on the database afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from remediate.drills import ASSETS
from remediate.flows.tables_missing_after_migration import tables_missing_after_migration
from remediate.store.database import Store
from tests.conftest import ROOT, db_url
from tests.e2e.conftest import answer, paused_run, start

pytestmark = pytest.mark.usefixtures("prefect_server")
APP_PYTHON = ROOT / ".cache" / "template-app" / "bin" / "python"
HEAD = "0a1b2c3d4e05"


class Backend:
    """A copy of the template-shaped backend, its own interpreter, and its database."""

    def __init__(self, root: Path, database: str) -> None:
        self.root, self.database, self.url = root, database, db_url(database)
        self.backend = root / "backend"
        self.command = f"{APP_PYTHON} -m alembic -c {self.backend / 'alembic.ini'}"

    def alembic(self, *args: str) -> str:
        """The app's own `alembic`, as an operator runs it from backend/ (its settings from the
        environment: here the test's database)."""
        env = {k: v for k, v in os.environ.items() if k != "ALEMBIC_CONFIG"}
        env["DATABASE_URL"] = self.url
        done = subprocess.run(
            [str(APP_PYTHON), "-m", "alembic", *args],
            cwd=self.backend,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    def version(self) -> list[str]:
        return [r[0] for r in self.sql("SELECT version_num FROM alembic_version")]

    def columns(self, table: str) -> set[str]:
        return {
            r[0]
            for r in self.sql(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = %s",
                table,
            )
        }

    def add_revision(self, revision: str, upgrade: str) -> None:
        body = "\n".join(f"    {line}" for line in upgrade.strip().splitlines())
        (self.backend / "app" / "alembic" / "versions" / f"{revision}_added.py").write_text(
            f'"""Added by the test\n\nRevision ID: {revision}\nRevises: {HEAD}\n"""\n\n'
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {revision!r}\ndown_revision = {HEAD!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{body}\n\n\ndef downgrade():\n    pass\n"
        )

    def declare_archived(self) -> None:
        """The model change that goes with a revision adding item.archived."""
        models = self.backend / "app" / "models.py"
        models.write_text(
            models.read_text().replace(
                "class Item(SQLModel, table=True):\n",
                "class Item(SQLModel, table=True):\n    archived: bool | None = None\n",
            )
        )

    def with_a_user_and_an_item(self) -> None:
        self.sql(
            'INSERT INTO "user" (id, email, is_active, is_superuser, hashed_password)'
            " VALUES ('00000000-0000-0000-0000-000000000001', 'ada@x.io', true, false, 'h')"
        )
        self.sql(
            "INSERT INTO item (id, title, owner_id) VALUES"
            " ('00000000-0000-0000-0000-0000000000aa', 'scan',"
            " '00000000-0000-0000-0000-000000000001')"
        )


@pytest.fixture
def backend(
    env: dict[str, str], sandbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    assert APP_PYTHON.exists(), "run scripts/setup.sh: it builds the app's own interpreter"
    root = tmp_path / "app"
    shutil.copytree(ASSETS / "app_template", root)
    # The app's own ../.env points at another database: the product runs the app's alembic on
    # the database it reads itself, never on whatever the app's .env names.
    (root / ".env").write_text(
        "PROJECT_NAME=shop\nSECRET_KEY=not-the-products\n"
        "DATABASE_URL=postgresql://postgres@127.0.0.1:5432/no_such_app_database\n"
    )
    app = Backend(root, sandbox)
    monkeypatch.setenv("ALEMBIC_CONFIG", app.command)
    app.alembic("upgrade", "head")
    return app


def test_a_healthy_template_database_is_healthy(backend: Backend) -> None:
    outcome = tables_missing_after_migration()
    assert outcome.status == "healthy", outcome.summary
    assert {f.check: f.ok for f in outcome.findings}["alembic-check"]


def test_in_the_products_python_the_template_is_a_configuration_problem(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALEMBIC_CONFIG", str(backend.backend / "alembic.ini"))
    outcome = tables_missing_after_migration(auto_approve=True)
    assert outcome.status == "failed" and outcome.incident_id is None
    assert "alembic cannot run in the product's Python" in outcome.summary
    assert "No module named" in outcome.summary and "Traceback" not in outcome.summary
    assert "ALEMBIC_CONFIG=" in outcome.summary  # what to set instead
    assert backend.version() == [HEAD]


def test_seed_000_every_table_dropped_is_rebuilt_through_the_uuid_swap(backend: Backend) -> None:
    backend.sql('DROP TABLE item, "user"')

    outcome = tables_missing_after_migration(auto_approve=True)

    assert outcome.status == "resolved" and outcome.verified, outcome.summary
    assert [a.name for a in outcome.actions] == ["reset-alembic-version", "alembic-upgrade-head"]
    assert backend.version() == [HEAD]
    assert backend.columns("item") == {"id", "title", "description", "owner_id", "created_at"}
    assert "No new upgrade operations detected" in backend.alembic("check")


def test_only_the_newest_revision_undone_reapplies_it_and_keeps_the_rows(
    backend: Backend,
) -> None:
    backend.with_a_user_and_an_item()
    backend.sql(
        'ALTER TABLE item DROP COLUMN created_at; ALTER TABLE "user" DROP COLUMN created_at'
    )

    future = start(flow=tables_missing_after_migration, database=backend.database)
    answer(paused_run(backend.database), approve=True, approver="fay")
    outcome = future.result(timeout=120)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.actions[0].targets == [f"alembic_version: {HEAD} -> 0a1b2c3d4e04"]
    assert backend.version() == [HEAD]
    assert backend.sql('SELECT email, created_at FROM "user"') == [("ada@x.io", None)]
    assert backend.sql("SELECT title FROM item") == [("scan",)]


def test_a_pending_raw_truncate_of_a_table_with_rows_is_never_run(backend: Backend) -> None:
    backend.with_a_user_and_an_item()
    backend.add_revision(
        "0a1b2c3d4e06",
        "op.add_column('item', sa.Column('archived', sa.Boolean()))\n"
        "op.execute(sa.text('TRUNCATE item'))",
    )
    backend.alembic("stamp", "0a1b2c3d4e06")  # the seed's mistake: stamp instead of upgrade

    outcome = tables_missing_after_migration(auto_approve=True)

    assert outcome.status == "escalated"
    assert "deletes the rows of table item" in outcome.summary
    assert backend.sql("SELECT title FROM item") == [("scan",)]
    assert backend.version() == ["0a1b2c3d4e06"]


def test_sql_it_cannot_read_is_shown_and_only_a_person_approves_it(
    backend: Backend, store_url: str
) -> None:
    backend.with_a_user_and_an_item()
    backend.add_revision(
        "0a1b2c3d4e06",
        "op.add_column('item', sa.Column('archived', sa.Boolean()))\n"
        "flag = 'false'\n"
        "op.execute(f'UPDATE item SET archived = {flag}')",
    )
    backend.declare_archived()
    backend.alembic("stamp", "0a1b2c3d4e06")

    # --auto-approve does not cover it: the run waits for a person, who sees the source.
    future = start(
        flow=tables_missing_after_migration, database=backend.database, auto_approve=True
    )
    answer(paused_run(backend.database), approve=True, approver="fay")
    outcome = future.result(timeout=120)

    assert outcome.status == "resolved", outcome.summary
    assert outcome.actions[0].approved_by == "fay"
    assert backend.sql("SELECT title, archived FROM item") == [("scan", False)]
    assert backend.version() == ["0a1b2c3d4e06"]
    assert outcome.incident_id
    timeline = Store.open(SecretStr(store_url)).timeline(outcome.incident_id)
    assert "auto-approve-refused" in [e.kind for e in timeline]
    (asked,) = [e for e in timeline if e.kind == "approval-asked"]
    (shown,) = asked.data["plan"]["manual_only"]
    assert "SQL built at run time" in shown and "op.execute(f'UPDATE item SET" in shown


def test_a_failed_upgrade_puts_the_version_back(backend: Backend) -> None:
    backend.add_revision(
        "0a1b2c3d4e06",
        "op.add_column('item', sa.Column('archived', sa.Boolean()))\nop.execute('SELECT 1 / 0')",
    )
    backend.alembic("stamp", "0a1b2c3d4e06")

    outcome = tables_missing_after_migration(auto_approve=True)

    assert outcome.status == "failed"
    assert "division by zero" in outcome.summary
    assert "alembic_version restored to 0a1b2c3d4e06" in outcome.summary
    # PostgreSQL rolled the whole upgrade back, and the run put the stamped version back.
    assert backend.version() == ["0a1b2c3d4e06"]
    assert "archived" not in backend.columns("item")
