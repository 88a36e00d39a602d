"""tasks/alembic.py against the real PostgreSQL and a real alembic project written per test: the
schema state as read (revisions from their syntax, tables from the catalog), `config_problem`,
resetting alembic_version (and the statements the approver is shown), `upgrade head` and
`alembic check`, in the product's Python and as the app's own alembic command.

The target's URL carries a password (trust auth ignores it): it must never reach a result."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from pydantic import SecretStr

from remediate.tasks import alembic as tasks
from remediate.tasks.alembic import SUGGESTION, AlembicTarget, Drift, SchemaState
from remediate.tasks.postgres import PgTarget
from tests.conftest import db_url

CANARY = "canary-91c4"
PASSWORD = f"pw%2F{CANARY}"  # URL-encoded `pw/canary-91c4`: a `%` the ini must not interpolate

INI = "[alembic]\nscript_location = migrations\n"
ENV_PY = """\
import importlib.util
import json
import os
from pathlib import Path

from alembic import context
from sqlalchemy import engine_from_config, pool

HERE = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("rt_app_models", HERE / "models.py")
models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(models)
{extra}
config = context.config
if os.environ.get("RT_RECORD_ENV"):  # what the app's alembic was given, for the test to read
    (HERE / "env-seen.json").write_text(json.dumps(sorted(os.environ)))
if os.environ.get("DATABASE_URL"):  # the app's own setting, as the FastAPI template reads it
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
engine = engine_from_config(
    config.get_section(config.config_ini_section, {{}}), prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=models.metadata)
    with context.begin_transaction():
        context.run_migrations()
"""
MODELS = """\
import sqlalchemy as sa

metadata = sa.MetaData()
account = sa.Table(
    "account", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(255), nullable=False),
)
invoice = sa.Table(
    "invoice", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("account.id"), nullable=False),
    sa.Column("amount", sa.Numeric(10, 2), nullable=False),
)
{extra}
"""
R1 = '''\
"""create account

The first table.
"""

import sqlalchemy as sa
from alembic import op

revision = "r1"
down_revision = None


def upgrade():
    op.create_table(
        "account",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(255), nullable=False),
    )


def downgrade():
    op.drop_table("account")
'''
R2 = '''\
"""create invoice"""

import sqlalchemy as sa
from alembic import op

revision = "r2"
down_revision = "r1"


def upgrade():
    op.create_table(
        "invoice",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("account.id"), nullable=False),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
    )


def downgrade():
    op.drop_table("invoice")
'''
R3 = '''\
"""create billing.ledger"""

import sqlalchemy as sa
from alembic import op

revision = "r3"
down_revision = "r2"


def upgrade():
    op.execute("CREATE SCHEMA billing")
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("invoice_id", sa.Integer, nullable=False),
        sa.Column("note", sa.Text),
        schema="billing",
    )


def downgrade():
    op.drop_table("ledger", schema="billing")
    op.execute("DROP SCHEMA billing")
'''
R4_FAILS = '''\
"""create audit, then fail"""

import sqlalchemy as sa
from alembic import op

revision = "r4"
down_revision = "r3"


def upgrade():
    op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT 1 / 0")
'''
HEAD_TABLES = {
    "account": ["id", "email"],
    "invoice": ["id", "account_id", "amount"],
    "billing.ledger": ["id", "invoice_id", "note"],
}


def with_password(url: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = f"{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


@dataclass
class App:
    """The guarded app's alembic project (in tmp_path) and its database."""

    root: Path
    database: str

    @property
    def ini(self) -> Path:
        return self.root / "alembic.ini"

    @property
    def versions(self) -> Path:
        return self.root / "migrations" / "versions"

    @property
    def url(self) -> str:
        return with_password(db_url(self.database))

    def target(self, value: str | None = None) -> AlembicTarget:
        return AlembicTarget.from_config(
            value or str(self.ini), database=PgTarget.of(SecretStr(self.url))
        )

    def write_env(self, extra: str = "") -> None:
        (self.root / "migrations" / "env.py").write_text(ENV_PY.format(extra=extra))

    def write_models(self, extra: str = "") -> None:
        (self.root / "models.py").write_text(MODELS.format(extra=extra))

    def alembic(self, name: str, *args: str) -> None:
        """The alembic CLI's command, as an operator runs it against this database."""
        cfg = Config(str(self.ini))
        cfg.set_main_option("script_location", str(self.root / "migrations"))
        url = self.url.replace("postgresql://", "postgresql+psycopg://")
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        getattr(command, name)(cfg, *args)

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        return run_sql(self.database, query, *params)

    def version(self) -> list[tuple[Any, ...]]:
        return self.sql("SELECT * FROM alembic_version")

    def tables(self) -> dict[str, list[str]]:
        rows = self.sql(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
            " WHERE table_schema IN ('public', 'billing')"
            " ORDER BY table_schema, table_name, ordinal_position"
        )
        found: dict[str, list[str]] = {}
        for schema, table, column in rows:
            found.setdefault(table if schema == "public" else f"{schema}.{table}", []).append(
                column
            )
        return found


def run_sql(database: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url(database), autocommit=True) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def make_app(root: Path, database: str) -> App:
    app = App(root, database)
    app.versions.mkdir(parents=True)
    app.ini.write_text(INI)
    app.write_env()
    app.write_models()
    for name, body in {"r1_account.py": R1, "r2_invoice.py": R2, "r3_ledger.py": R3}.items():
        (app.versions / name).write_text(body)
    return app


@pytest.fixture
def app(tmp_path: Path, sandbox: str, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.chdir(tmp_path)  # not the ini's folder: relative paths are the ini's
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return make_app(tmp_path / "app", sandbox)


def no_secret(*seen: object) -> None:
    for item in seen:
        text = item.model_dump_json() if hasattr(item, "model_dump_json") else str(item)
        assert CANARY not in text


# Reading the state: revisions from their syntax, tables from the catalog.


def test_schema_state_of_an_empty_database(app: App) -> None:
    state = tasks.read_schema_state.fn(app.target())

    assert state.heads == ["r3"] and state.branched is False
    assert [(r.revision, r.down_revision, r.doc) for r in state.revisions] == [
        ("r1", None, "create account"),
        ("r2", "r1", "create invoice"),
        ("r3", "r2", "create billing.ledger"),
    ]
    assert [r.path for r in state.revisions] == [
        str(app.versions / "r1_account.py"),
        str(app.versions / "r2_invoice.py"),
        str(app.versions / "r3_ledger.py"),
    ]
    assert [r.create_tables for r in state.revisions] == [
        {"account": ["id", "email"]},
        {"invoice": ["id", "account_id", "amount"]},
        {"billing.ledger": ["id", "invoice_id", "note"]},
    ]
    assert [[s.kind for s in r.steps] for r in state.revisions] == [
        ["create_table"],
        ["create_table"],
        ["unknown", "create_table"],  # CREATE SCHEMA is not among the SQL it reads
    ]
    assert state.current is None
    assert state.tables == {} and state.has_rows == {}
    assert state.supabase is False


def test_schema_state_at_head_with_rows(app: App) -> None:
    app.alembic("upgrade", "head")
    app.sql("INSERT INTO account (id, email) VALUES (1, 'a@school.test')")

    state = tasks.read_schema_state.fn(app.target())

    assert state.current == ["r3"]
    assert state.tables == {"account": ["id", "email"], "alembic_version": ["version_num"],
                            "billing.ledger": ["id", "invoice_id", "note"],
                            "invoice": ["id", "account_id", "amount"]}  # fmt: skip
    assert state.has_rows == {
        "account": True,
        "alembic_version": True,
        "billing.ledger": False,
        "invoice": False,
    }
    assert state.supabase is False


def test_schema_state_of_the_seed_incident_stamped_without_tables(app: App) -> None:
    """Seed 000: `alembic stamp head` on a database whose tables were never created."""
    app.alembic("stamp", "head")

    state = tasks.read_schema_state.fn(app.target())

    assert state.current == ["r3"]
    assert state.tables == {"alembic_version": ["version_num"]}
    assert state.has_rows == {"alembic_version": True}


def test_two_heads_are_a_branch(app: App) -> None:
    (app.versions / "r2b_branch.py").write_text(
        R2.replace('revision = "r2"', 'revision = "r2b"').replace('"invoice"', '"refund"')
    )

    state = tasks.read_schema_state.fn(app.target())

    assert state.heads == ["r2b", "r3"] and state.branched is True
    assert [r.revision for r in state.revisions] == ["r1", "r2", "r2b", "r3"]


def test_a_merge_revision_is_a_branch_with_one_head(app: App) -> None:
    (app.versions / "r2b_branch.py").write_text(
        R2.replace('revision = "r2"', 'revision = "r2b"').replace('"invoice"', '"refund"')
    )
    (app.versions / "r4_merge.py").write_text(
        '"""merge"""\nrevision = "r4"\ndown_revision = ("r3", "r2b")\n\n\ndef upgrade():\n'
        "    pass\n"
    )

    state = tasks.read_schema_state.fn(app.target())

    assert state.heads == ["r4"] and state.branched is True
    assert [(r.revision, r.down_revision) for r in state.revisions] == [
        ("r1", None), ("r2", "r1"), ("r2b", "r1"), ("r3", "r2"), ("r4", "r3,r2b")
    ]  # fmt: skip


# config_problem: alembic runs as ALEMBIC_CONFIG says, and on the target.


def test_no_config_problem_before_and_after_upgrade(app: App) -> None:
    target = app.target()
    assert target.config_path == str(app.ini) and target.runner is None

    assert tasks.config_problem(target) is None
    app.alembic("upgrade", "r2")
    assert tasks.config_problem(target) is None


def test_an_env_py_reaching_another_database_is_a_config_problem(
    app: App, make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = App(app.root, make_database())
    other.alembic("upgrade", "head")
    monkeypatch.setenv("DATABASE_URL", other.url)  # the app's env.py reads its own setting

    problem = tasks.config_problem(app.target())

    assert problem == (
        "ALEMBIC_CONFIG: alembic reports version r3 but the target database"
        f" postgres://127.0.0.1:5432/{app.database} is at none: they are not the same database"
        " (the app's env.py reads its own settings)"
    )
    assert other.version() == [("r3",)]
    assert app.sql("SELECT to_regclass('public.alembic_version')") == [(None,)]


def test_an_env_py_needing_what_the_product_lacks_is_a_config_problem(app: App) -> None:
    app.write_env(extra="import app_only_settings_package  # noqa")

    problem = tasks.config_problem(app.target())

    assert problem == (
        f"ALEMBIC_CONFIG ({app.ini}): alembic cannot run in the product's Python:"
        " ModuleNotFoundError: No module named 'app_only_settings_package'; " + SUGGESTION
    )


def test_a_missing_versions_folder_is_a_config_problem(app: App) -> None:
    app.ini.write_text("[alembic]\nscript_location = elsewhere\n")

    assert tasks.config_problem(app.target()) == (
        f"ALEMBIC_CONFIG ({app.ini}): {app.root / 'elsewhere' / 'versions'}: no such folder"
        " (script_location and version_locations are read from the ini's folder)"
    )


def test_a_package_script_location_is_a_config_problem(app: App) -> None:
    app.ini.write_text("[alembic]\nscript_location = myapp:migrations\n")

    assert tasks.config_problem(app.target()) == (
        f"ALEMBIC_CONFIG ({app.ini}): script_location myapp:migrations names a package:"
        " use a folder"
    )


def test_a_down_revision_computed_at_import_is_a_config_problem(app: App) -> None:
    path = app.versions / "r4_dynamic.py"
    path.write_text('revision = "r4"\ndown_revision = "r" + str(3)\n')

    assert tasks.config_problem(app.target()) == (
        f"ALEMBIC_CONFIG: {path}: revision and down_revision must be literals"
    )


def test_a_revision_computed_at_import_is_a_config_problem(app: App) -> None:
    path = app.versions / "r4_dynamic.py"
    path.write_text('revision = "r" + str(4)\ndown_revision = "r3"\n')

    assert tasks.config_problem(app.target()) == (
        f"ALEMBIC_CONFIG: {path}: revision and down_revision must be literals"
    )


def test_here_interpolation_in_the_ini(app: App) -> None:
    app.ini.write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    app.alembic("upgrade", "head")

    assert tasks.config_problem(app.target()) is None
    assert tasks.read_schema_state.fn(app.target()).heads == ["r3"]


# reset_version and the statements the approver is shown.


def test_reset_version_only_when_it_still_reads_the_expected(app: App) -> None:
    app.alembic("upgrade", "head")
    target = app.target()

    assert tasks.reset_version.fn(target, expected=["r2"], to="r1") is False
    assert app.version() == [("r3",)]

    assert tasks.reset_version.fn(target, expected=["r3"], to="r1") is True
    assert app.version() == [("r1",)]
    assert app.tables() == {**HEAD_TABLES, "alembic_version": ["version_num"]}  # only the version

    assert tasks.reset_version.fn(target, expected=["r1"], to=None) is True
    assert app.version() == []
    assert app.sql("SELECT to_regclass('public.alembic_version')::text") == [("alembic_version",)]


def test_reset_version_waits_for_a_concurrent_change_and_then_refuses(app: App) -> None:
    """FOR UPDATE: a version changed by a transaction in flight is read once it commits."""
    app.alembic("upgrade", "head")
    other = psycopg.connect(db_url(app.database))
    other.execute("UPDATE alembic_version SET version_num = 'r2'")  # uncommitted, row locked
    timer = threading.Timer(0.5, other.commit)
    timer.start()
    started = time.monotonic()
    try:
        reset = tasks.reset_version.fn(app.target(), expected=["r3"], to=None)
    finally:
        timer.join()
        other.close()

    assert reset is False
    assert time.monotonic() - started >= 0.45
    assert app.version() == [("r2",)]


def test_version_statements_are_what_reset_version_writes(
    app: App, make_database: Callable[[], str]
) -> None:
    twin = App(app.root, make_database())
    for each in (app, twin):
        each.alembic("upgrade", "head")

    statements = tasks.version_statements("r1")

    assert [s.as_string(None) for s in statements] == [
        "DELETE FROM alembic_version",
        "INSERT INTO alembic_version (version_num) VALUES ('r1')",
    ]
    assert tasks.reset_version.fn(app.target(), expected=["r3"], to="r1") is True
    with psycopg.connect(db_url(twin.database)) as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement)
    assert twin.version() == app.version() == [("r1",)]
    assert twin.tables() == app.tables()


def test_version_statements_to_none_empty_the_table(
    app: App, make_database: Callable[[], str]
) -> None:
    twin = App(app.root, make_database())
    for each in (app, twin):
        each.alembic("upgrade", "head")

    statements = tasks.version_statements(None)

    assert [s.as_string(None) for s in statements] == ["DELETE FROM alembic_version"]
    assert tasks.reset_version.fn(app.target(), expected=["r3"], to=None) is True
    with psycopg.connect(db_url(twin.database)) as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement)
    assert twin.version() == app.version() == []


def test_a_version_with_a_quote_is_a_literal(app: App) -> None:
    app.alembic("upgrade", "head")
    odd = "r'); DROP TABLE account;--"

    (_, insert) = tasks.version_statements(odd)

    assert insert.as_string(None) == (
        "INSERT INTO alembic_version (version_num) VALUES ('r''); DROP TABLE account;--')"
    )
    assert tasks.reset_version.fn(app.target(), expected=["r3"], to=odd) is True
    assert app.version() == [(odd,)]
    assert "account" in app.tables()


# upgrade_head.


def test_upgrade_head_on_an_empty_database(app: App) -> None:
    target = app.target()

    assert tasks.upgrade_head.fn(target) == ["r3"]

    assert app.tables() == {**HEAD_TABLES, "alembic_version": ["version_num"]}
    assert app.version() == [("r3",)]
    assert tasks.config_problem(target) is None


def test_upgrade_head_from_a_middle_revision_keeps_the_rows(app: App) -> None:
    app.alembic("upgrade", "r1")
    app.sql("INSERT INTO account (id, email) VALUES (7, 'kept@school.test')")

    assert tasks.upgrade_head.fn(app.target()) == ["r3"]

    assert app.sql("SELECT id, email FROM account") == [(7, "kept@school.test")]
    assert set(app.tables()) == {*HEAD_TABLES, "alembic_version"}


def test_the_seed_repair_reset_to_base_then_upgrade(app: App) -> None:
    """Stamped at head, no tables: empty the version, then upgrade recreates every table."""
    app.alembic("stamp", "head")
    target = app.target()

    assert tasks.reset_version.fn(target, expected=["r3"], to=None) is True
    assert tasks.upgrade_head.fn(target) == ["r3"]

    assert app.tables() == {**HEAD_TABLES, "alembic_version": ["version_num"]}


def test_a_failing_revision_raises_one_line_and_rolls_back(app: App) -> None:
    app.alembic("upgrade", "r2")
    (app.versions / "r4_fails.py").write_text(R4_FAILS)

    with pytest.raises(RuntimeError) as raised:
        tasks.upgrade_head.fn(app.target())

    assert str(raised.value) == (
        "alembic upgrade head failed: DataError: (psycopg.errors.DivisionByZero) division by zero"
    )
    # One transaction for the whole upgrade (PostgreSQL's transactional DDL): r3 is undone too.
    assert app.version() == [("r2",)]
    assert set(app.tables()) == {"account", "invoice", "alembic_version"}


def test_upgrade_head_on_an_unreachable_database_raises_without_the_password(app: App) -> None:
    parts = urlsplit(app.url)
    dead = urlunsplit(parts._replace(netloc=parts.netloc.replace(":5432", ":1")))
    target = AlembicTarget.from_config(str(app.ini), database=PgTarget.of(SecretStr(dead)))

    with pytest.raises(RuntimeError) as raised:
        tasks.upgrade_head.fn(target)

    assert str(raised.value).startswith(
        "alembic upgrade head failed: OperationalError: (psycopg.OperationalError)"
        ' connection failed: connection to server at "127.0.0.1", port 1 failed:'
    )
    no_secret(raised.value)


# check_drift: `alembic check`, in the product's Python.


def test_no_drift_at_head(app: App) -> None:
    app.alembic("upgrade", "head")

    assert tasks.check_drift.fn(app.target()) == Drift(differences=[], available=True)


def test_drift_names_a_missing_table(app: App) -> None:
    app.alembic("upgrade", "head")
    app.write_models(
        extra='audit = sa.Table("audit", metadata, sa.Column("id", sa.Integer, primary_key=True))'
    )

    assert tasks.check_drift.fn(app.target()) == Drift(differences=["add_table audit"])


def test_drift_names_a_missing_column_as_table_dot_column(app: App) -> None:
    app.alembic("upgrade", "head")
    app.write_models(extra='account.append_column(sa.Column("full_name", sa.String(255)))')

    assert tasks.check_drift.fn(app.target()) == Drift(differences=["add_column account.full_name"])


def test_drift_on_a_database_behind_head(app: App) -> None:
    app.alembic("upgrade", "r1")

    assert tasks.check_drift.fn(app.target()) == Drift(
        differences=["alembic check could not run: Target database is not up to date."]
    )


def test_drift_is_unavailable_without_models(app: App) -> None:
    app.alembic("upgrade", "head")
    (app.root / "models.py").write_text("metadata = None\n")

    assert tasks.check_drift.fn(app.target()) == Drift(differences=[], available=False)


def test_drift_when_env_py_cannot_run(app: App) -> None:
    app.write_env(extra="import app_only_settings_package  # noqa")

    assert tasks.check_drift.fn(app.target()) == Drift(
        differences=[
            "alembic check could not run: ModuleNotFoundError:"
            " No module named 'app_only_settings_package'"
        ]
    )


# The app's own alembic as a local command (its env.py reads DATABASE_URL).


def test_the_app_s_own_alembic_command(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", f"SG.{CANARY}")
    monkeypatch.setenv("TARGET_DATABASE_URL", app.url)
    monkeypatch.setenv("RT_RECORD_ENV", "1")
    target = app.target(f"{sys.executable} -m alembic -c {app.ini}")
    assert target.local is not None and target.config_path == str(app.ini)

    assert tasks.config_problem(target) is None
    assert tasks.upgrade_head.fn(target) == ["r3"]
    assert tasks.check_drift.fn(target) == Drift(differences=[])

    assert app.tables() == {**HEAD_TABLES, "alembic_version": ["version_num"]}
    seen = set(json.loads((app.root / "env-seen.json").read_text()))
    assert {"DATABASE_URL", "POSTGRES_SERVER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= seen
    assert not seen & {"SENDGRID_API_KEY", "TARGET_DATABASE_URL", "ALEMBIC_CONFIG"}


def test_the_app_s_own_alembic_failing_names_no_password(app: App) -> None:
    app.write_env(
        extra='raise RuntimeError("cannot migrate " + __import__("os").environ["DATABASE_URL"])'
    )
    target = app.target(f"{sys.executable} -m alembic -c {app.ini}")

    problem = tasks.config_problem(target)

    # The password is masked; the rest of the URL stays, to say which server it tried.
    assert problem is not None and problem.startswith(
        f"ALEMBIC_CONFIG: `alembic current` failed with {sys.executable}:"
        " RuntimeError: cannot migrate postgresql://postgres:***@127.0.0.1:"
    )
    no_secret(problem)


def test_the_schema_state_as_a_pydantic_model_names_no_password(app: App) -> None:
    app.alembic("upgrade", "head")
    target = app.target()

    state = tasks.read_schema_state.fn(target)

    assert isinstance(state, SchemaState)
    no_secret(state, target.model_dump_json(), repr(target))


def _upgrade_error(target: AlembicTarget) -> str:
    with pytest.raises(RuntimeError) as raised:
        tasks.upgrade_head.fn(target)
    return str(raised.value)


@pytest.mark.parametrize(
    "outcome",
    [
        tasks.config_problem,
        lambda target: tasks.check_drift.fn(target).differences[0],
        _upgrade_error,
    ],
    ids=["config_problem", "check_drift", "upgrade_head"],
)
def test_an_env_py_error_quoting_the_url_names_no_password_in_process(
    app: App, outcome: Callable[[AlembicTarget], str]
) -> None:
    app.write_env(
        extra='raise RuntimeError("cannot migrate "'
        ' + __import__("alembic").context.config.get_main_option("sqlalchemy.url"))'
    )

    text = outcome(app.target())

    assert "RuntimeError: cannot migrate postgresql+psycopg://postgres:" in text
    assert CANARY not in text
