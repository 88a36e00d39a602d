"""The migration safety checker (seed 000's preventive measure) on good and bad revisions."""

from __future__ import annotations

from pathlib import Path

from remediate.lint.migration_safety import check_path
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
    write(
        tmp_path,
        "revision = 'a'\ndown_revision = None\n"
        "def upgrade():\n    op.create_table('ingestions', sa.Column('id', sa.Integer()))\n"
        "def downgrade():\n    pass\n",
    ).rename(tmp_path / "0001_a.py")
    path = write(
        tmp_path,
        "revision = 'b'\ndown_revision = 'a'\n"
        "def upgrade():\n    op.create_table('ingestions', sa.Column('id', sa.Integer()))\n"
        "def downgrade():\n    pass\n",
    )
    (problem,) = check_path(path)
    assert problem.line == 6 and "create_table('ingestions')" in problem.message
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
    assert any("drop of column user.email" in m for m in found)
    assert any("drop of table ingestions" in m for m in found)
    assert "no downgrade() function" in found
    assert "empty migration: upgrade() does nothing" in messages(
        write(tmp_path, 'def upgrade():\n    """nothing"""\n    pass\ndef downgrade():\n    pass\n')
    )


def test_pre_commit_hooks_for_app_repositories() -> None:
    import yaml

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert hooks["migration-safety"]["entry"] == "remediate check-migrations"
    assert hooks["alembic-check"]["entry"] == "alembic check"


def history(tmp_path: Path, *revisions: tuple[str, str | None, str, str]) -> Path:
    """Revision files (id, parent, upgrade body, downgrade body) in one versions folder."""
    for revision, down, upgrade, downgrade in revisions:
        (tmp_path / f"{revision}_x.py").write_text(
            HEADER
            + f"revision = {revision!r}\ndown_revision = {down!r}\n"
            + f"def upgrade():\n    {upgrade}\ndef downgrade():\n    {downgrade}\n"
        )
    return tmp_path


def test_silent_on_the_fastapi_templates_kind_of_history(tmp_path: Path) -> None:
    """The template's own migrations: an initial create_table of new tables, drops inside
    downgrade(), and its UUID swap (old columns dropped, new ones renamed onto their names)."""
    folder = history(
        tmp_path,
        ("a1", None, "op.create_table('user', sa.Column('id'))", "op.drop_table('user')"),
        (
            "b2",
            "a1",
            "op.add_column('user', sa.Column('new_id'))\n"
            "    op.execute('UPDATE \"user\" SET new_id = uuid_generate_v4()')\n"
            "    op.drop_column('user', 'id')\n"
            "    op.alter_column('user', 'new_id', new_column_name='id')",
            "op.drop_column('user', 'id')",
        ),
        (
            "c3",
            "b2",
            "op.add_column('user', sa.Column('created_at'))",
            "op.drop_column('user', 'created_at')",
        ),
    )
    assert check_path(folder) == []


def test_create_table_of_a_table_an_earlier_revision_made_is_caught_alone_too(
    tmp_path: Path,
) -> None:
    folder = history(
        tmp_path,
        ("a1", None, "op.create_table('ingestions', sa.Column('id'))", "pass"),
        ("b2", "a1", "op.create_table('ingestions', sa.Column('id'), sa.Column('ocr'))", "pass"),
    )
    (problem,) = check_path(folder)
    assert problem.path.name == "b2_x.py" and "earlier revision created" in problem.message
    # A pre-commit hook passes only the changed file: its folder gives the history.
    assert [p.message for p in check_path(folder / "b2_x.py")] == [problem.message]


def test_raw_sql_drops_deletes_and_sql_built_at_run_time(tmp_path: Path) -> None:
    folder = history(
        tmp_path,
        (
            "a1",
            None,
            "op.execute(sa.text('TRUNCATE ingestions')); op.execute('DROP TABLE legacy')\n"
            "    op.execute(f'DELETE FROM {name}')",
            "pass",
        ),
    )
    found = messages(folder)
    assert any("deleting the rows of ingestions" in m for m in found)
    assert any("drop of table legacy" in m for m in found)
    assert any("SQL built at run time" in m for m in found)
