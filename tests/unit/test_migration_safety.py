"""The migration safety checker (seed 000's preventive measure) on good and bad revisions."""

from __future__ import annotations

from pathlib import Path

from core.migration_safety import check_path
from tests.conftest import ROOT

HEADER = "from alembic import op\nimport sqlalchemy as sa\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "0002_x.py"
    path.write_text(HEADER + body)
    return path


def messages(path: Path) -> list[str]:
    return [p.message for p in check_path(path)]


def test_the_products_own_migrations_pass() -> None:
    assert check_path(ROOT / "migrations" / "versions") == []


def test_unconfirmed_create_table_is_the_seed_000_bug(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "def upgrade():\n    op.create_table('ingestions', sa.Column('id', sa.Integer()))\n"
        "def downgrade():\n    pass\n",
    )
    (problem,) = check_path(path)
    assert problem.line == 4 and "op.create_table needs a confirmation" in problem.message
    assert "add_column" in problem.message


def test_confirmed_operations_pass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "def upgrade():\n    # migration-safety: create-table confirmed (new)\n"
        "    op.create_table('t')\n"
        "def downgrade():\n    # migration-safety: drop-table confirmed\n"
        "    op.drop_table('t')\n",
    )
    assert check_path(path) == []


def test_drops_raw_sql_missing_functions_and_empty_migrations(tmp_path: Path) -> None:
    found = messages(
        write(
            tmp_path,
            "def upgrade():\n    op.drop_column('user', 'email')\n"
            "    op.execute('DROP TABLE ingestions')\n",
        )
    )
    assert any("op.drop_column" in m for m in found)
    assert any("raw CREATE/DROP" in m for m in found)
    assert "no downgrade() function" in found
    assert "empty migration: upgrade() does nothing" in messages(
        write(tmp_path, 'def upgrade():\n    """nothing"""\n    pass\ndef downgrade():\n    pass\n')
    )


def test_pre_commit_hooks_for_app_repositories() -> None:
    import yaml

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert hooks["migration-safety"]["entry"] == "remediate check-migrations"
    assert hooks["alembic-check"]["entry"] == "alembic check"
