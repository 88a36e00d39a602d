"""Pure decisions of tables-missing-after-migration over a described schema state."""

from __future__ import annotations

import tempfile
from pathlib import Path

from remediate.engine.approval import ApprovalPolicy, auto_approval_rule
from remediate.flows.tables_missing_after_migration import (
    buggy_migrations,
    detect,
    diagnose,
    expected_at,
    last_good_revision,
    plan_recovery,
    refusal,
    review_pending,
)
from remediate.lint.migration_safety import operations
from remediate.tasks.alembic import Drift, Revision, SchemaState

SCRATCH = Path(tempfile.mkdtemp(prefix="revisions-"))
CLEAN = Drift(differences=[])


def rev(revision: str, down: str | None, upgrade: str) -> Revision:
    """A revision whose upgrade() is `upgrade` (indented body lines), read as the runbook reads
    a real file: its syntax, never imported."""
    path = SCRATCH / f"{revision}.py"
    body = "\n".join(f"    {line}" for line in upgrade.strip().splitlines())
    path.write_text(
        "from alembic import op\nimport sqlalchemy as sa\n\n"
        f"def upgrade():\n{body}\n\ndef downgrade():\n    pass\n"
    )
    return Revision(
        revision=revision,
        down_revision=down,
        path=str(path),
        doc=revision,
        steps=operations(path).steps,
    )


HISTORY = [
    rev("a1", None, "op.create_table('user', sa.Column('id', sa.Integer()), sa.Column('email'))"),
    rev(
        "b2",
        "a1",
        "op.create_table('ingestions', sa.Column('id', sa.Integer()), sa.Column('user_id'))",
    ),
    rev("c3", "b2", "op.add_column('ingestions', sa.Column('ocr_provider', sa.String()))"),
]

# The FastAPI full-stack template's history has this shape (its d98dd8ec85a3): integer ids
# swapped for UUIDs by adding new columns, copying with raw UPDATEs, dropping the old columns and
# renaming the new ones onto their names; then created_at added.
TEMPLATE = [
    rev(
        "t1",
        None,
        "op.create_table('user', sa.Column('email', sa.String()), sa.Column('id', sa.Integer()))\n"
        "op.create_index(op.f('ix_user_email'), 'user', ['email'], unique=True)\n"
        "op.create_table('item', sa.Column('id', sa.Integer()), sa.Column('owner_id'))",
    ),
    rev("t2", "t1", "op.alter_column('user', 'email', type_=sa.String(length=255))"),
    rev(
        "t3",
        "t2",
        """op.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"')
op.add_column('user', sa.Column('new_id', sa.Uuid()))
op.add_column('item', sa.Column('new_id', sa.Uuid()))
op.add_column('item', sa.Column('new_owner_id', sa.Uuid(), nullable=True))
op.execute('UPDATE "user" SET new_id = uuid_generate_v4()')
op.execute('UPDATE item SET new_owner_id = (SELECT new_id FROM "user" WHERE id = owner_id)')
op.alter_column('user', 'new_id', nullable=False)
op.drop_constraint('item_owner_id_fkey', 'item', type_='foreignkey')
op.drop_column('item', 'owner_id')
op.alter_column('item', 'new_owner_id', new_column_name='owner_id')
op.drop_column('user', 'id')
op.alter_column('user', 'new_id', new_column_name='id')
op.drop_column('item', 'id')
op.alter_column('item', 'new_id', new_column_name='id')
op.create_primary_key('user_pkey', 'user', ['id'])""",
    ),
    rev(
        "t4",
        "t3",
        "op.add_column('item', sa.Column('created_at', sa.DateTime()))\n"
        "op.add_column('user', sa.Column('created_at', sa.DateTime()))",
    ),
]
TEMPLATE_AT_HEAD = {
    "alembic_version": ["version_num"],
    "user": ["email", "id", "created_at"],
    "item": ["owner_id", "id", "created_at"],
}


def state(
    tables: dict[str, list[str]],
    current: list[str] | None,
    *,
    revisions: list[Revision] = HISTORY,
    rows: dict[str, bool] | None = None,
    supabase: bool = False,
) -> SchemaState:
    return SchemaState(
        heads=[revisions[-1].revision],
        branched=False,
        revisions=revisions,
        current=current,
        tables=tables,
        has_rows=rows or {},
        supabase=supabase,
    )


FULL = {
    "alembic_version": ["version_num"],
    "user": ["id", "email"],
    "ingestions": ["id", "user_id", "ocr_provider"],
}


def test_expected_objects_and_what_is_missing() -> None:
    s = state(
        {
            "alembic_version": ["version_num"],
            "user": ["id", "email"],
            "ingestions": ["id", "user_id"],
        },
        ["c3"],
    )
    assert expected_at(s, "c3").missing(s.tables) == ["column ingestions.ocr_provider"]
    assert expected_at(s, "b2").missing(s.tables) == []
    assert last_good_revision(s) == "b2"
    findings = {f.check: f.ok for f in detect(s, drift=CLEAN)}
    assert findings == {
        "alembic-version": True,
        "schema-objects": False,
        "only-alembic-version": True,
        "alembic-check": True,
    }


def test_only_alembic_version_left_resets_to_base() -> None:
    s = state({"alembic_version": ["version_num"]}, ["c3"])
    assert last_good_revision(s) is None
    diagnosis, good = diagnose(s)
    assert diagnosis.causes == ["stamp-without-upgrade"] and good is None
    plan = plan_recovery(s, good, resource="r")
    assert [a.name for a in plan.actions] == ["reset-alembic-version", "alembic-upgrade-head"]
    assert plan.actions[0].statements == ["DELETE FROM alembic_version;"]
    assert plan.actions[1].targets == ["revision a1: a1", "revision b2: b2", "revision c3: c3"]


def test_supabase_plan_enables_rls_only_on_recreated_tables() -> None:
    s = state({"alembic_version": ["version_num"], "user": ["id", "email"]}, ["c3"], supabase=True)
    plan = plan_recovery(s, "a1", resource="r")
    assert plan.actions[-1].name == "enable-rls"
    assert plan.actions[-1].targets == ["table ingestions"]
    assert all("TO service_role" in st for st in plan.actions[-1].statements if "POLICY" in st)


def test_buggy_create_table_gets_an_add_column_replacement() -> None:
    revisions = [
        *HISTORY,
        rev(
            "d4",
            "c3",
            "op.create_table('ingestions', sa.Column('id'), sa.Column('status', sa.String(20)))",
        ),
    ]
    (bug,) = buggy_migrations(state(FULL, ["d4"], revisions=revisions))
    assert (bug.revision, bug.table, bug.created_by) == ("d4", "ingestions", "b2")
    assert bug.replacement == ["op.add_column('ingestions', sa.Column('status', sa.String(20)))"]
    assert "re-create an existing table" in refusal(state(FULL, ["d4"], revisions=revisions), "c3")


def test_pending_drop_of_a_table_with_rows_is_refused() -> None:
    revisions = [*HISTORY, rev("d4", "c3", "op.drop_table('ingestions')")]
    s = state(FULL, ["d4"], revisions=revisions, rows={"ingestions": True})
    assert refusal(s, "c3") == "revision d4 drops table ingestions, which holds rows"
    s = state(FULL, ["d4"], revisions=revisions, rows={"ingestions": False})
    assert refusal(s, "c3") is None


def test_unknown_version_and_branches_are_refused() -> None:
    assert "no migration file defines" in refusal(state(FULL, ["zz"]), None)
    branched = state(FULL, ["c3"]).model_copy(update={"branched": True})
    assert "several heads" in refusal(branched, "c3")


def test_alembic_command_prefix_runs_in_the_named_service() -> None:
    import pytest

    from remediate.domain.errors import ConfigError
    from remediate.tasks.alembic import parse_command_prefix

    settings = {"docker_host": "unix:///run/podman/podman.sock", "project": "app"}
    parsed = parse_command_prefix("docker compose exec -T backend uv run alembic", **settings)
    assert parsed is not None
    assert (parsed.service.service, parsed.argv) == ("backend", ["uv", "run", "alembic"])
    assert parse_command_prefix("docker-compose exec backend alembic", **settings) is not None
    assert parse_command_prefix("rm -rf /; alembic", **settings) is None
    assert parse_command_prefix("docker compose exec backend", **settings) is None
    with pytest.raises(ConfigError, match="set DOCKER_HOST and COMPOSE_PROJECT_NAME"):
        parse_command_prefix("docker compose exec backend alembic", docker_host=None, project=None)


def test_the_templates_history_at_head_is_healthy() -> None:
    s = state(TEMPLATE_AT_HEAD, ["t4"], revisions=TEMPLATE)
    assert all(f.ok for f in detect(s, drift=CLEAN))
    assert not Drift(differences=[], available=False).differences


def test_template_with_only_the_newest_revision_undone_reapplies_only_it() -> None:
    tables = {**TEMPLATE_AT_HEAD, "user": ["email", "id"], "item": ["owner_id", "id"]}
    s = state(tables, ["t4"], revisions=TEMPLATE, rows={"user": True, "item": True})
    assert last_good_revision(s) == "t3"
    assert refusal(s, "t3") is None
    plan = plan_recovery(s, "t3", resource="r")
    assert plan.actions[1].targets == ["revision t4: t4"] and plan.manual_only == []


def test_template_with_every_table_dropped_rebuilds_from_base_automatically() -> None:
    s = state({"alembic_version": ["version_num"]}, ["t4"], revisions=TEMPLATE)
    assert last_good_revision(s) is None
    assert refusal(s, None) is None
    plan = plan_recovery(s, None, resource="r")
    # Drops, rewrites and renames touch only tables these revisions create: nothing to lose.
    assert plan.manual_only == []


def test_template_uuid_swap_on_tables_with_rows_needs_a_person() -> None:
    tables = {
        "alembic_version": ["version_num"],
        "user": ["email", "id"],
        "item": ["id", "owner_id"],
    }
    s = state(tables, ["t4"], revisions=TEMPLATE, rows={"user": True, "item": True})
    # Names alone cannot tell t2 from t3 (t3 swaps columns for ones of the same names), so the
    # newest is taken as good; were t3 to be applied again, a person must approve it.
    assert last_good_revision(s) == "t3"
    assert refusal(s, "t2") is None  # the dropped columns are replaced, not lost
    review = review_pending(s, TEMPLATE[2:])
    assert any("rewrites rows of table user" in line for line in review.manual)
    assert any("replaces column item.owner_id" in line for line in review.manual)
    plan = plan_recovery(s, "t2", resource="r")
    assert plan.manual_only
    policy = ApprovalPolicy(
        environment="production",
        approvers=frozenset(),
        require_distinct_approver=False,
        timeout_seconds=60,
        poll_seconds=1,
        auto_rules=("*:*:*",),
    )
    assert auto_approval_rule(policy, plan) is None
    assert "Only a person may approve this" in plan.to_markdown()


def test_raw_sql_that_loses_rows_is_refused_and_sql_it_cannot_read_needs_a_person() -> None:
    def with_pending(upgrade: str) -> SchemaState:
        # `legacy`: a table no revision made (created by hand, or by another tool) with rows.
        tables = {**FULL, "ingestions": ["id", "user_id"], "legacy": ["id"]}
        revisions = [*HISTORY[:2], rev("c3", "b2", upgrade)]
        rows = {"ingestions": True, "user": True, "legacy": True}
        return state(tables, ["c3"], revisions=revisions, rows=rows)

    add = "op.add_column('ingestions', sa.Column('ocr_provider'))\n"
    cases = {
        "op.execute('DROP TABLE legacy')": "drops table legacy, which holds rows",
        "op.execute(sa.text('TRUNCATE legacy'))": "deletes the rows of table legacy",
        "op.execute('DELETE FROM public.legacy')": "deletes the rows of table legacy",
        "op.execute('ALTER TABLE \"user\" DROP COLUMN email')": "drops column user.email",
        "with op.batch_alter_table('user') as batch_op:\n    batch_op.drop_column('email')": (
            "drops column user.email"
        ),
    }
    for upgrade, why in cases.items():
        s = with_pending(add + upgrade)
        assert last_good_revision(s) == "b2", upgrade
        assert why in (refusal(s, "b2") or ""), upgrade

    opaque = with_pending(add + "table = 'legacy'\nop.execute(f'DELETE FROM {table}')")
    assert refusal(opaque, "b2") is None
    plan = plan_recovery(opaque, "b2", resource="r")
    assert plan.manual_only and "SQL built at run time" in plan.manual_only[0]
    assert "op.execute(f'DELETE FROM {table}')" in plan.manual_only[0]


def test_renames_batch_ops_and_schemas_are_modelled() -> None:
    revisions = [
        rev("a1", None, "op.create_table('doc', sa.Column('id'), sa.Column('body'), schema='app')"),
        rev("b2", "a1", "op.rename_table('doc', 'document', schema='app')"),
        rev(
            "c3",
            "b2",
            "with op.batch_alter_table('document', schema='app') as batch_op:\n"
            "    batch_op.alter_column('body', new_column_name='text')\n"
            "    batch_op.add_column(sa.Column('title'))",
        ),
        rev("d4", "c3", "op.execute('ALTER TABLE app.document RENAME COLUMN title TO heading')"),
    ]
    s = state({"app.document": ["id", "text", "heading"]}, ["d4"], revisions=revisions)
    assert expected_at(s, "d4").tables == {"app.document": {"id", "text", "heading"}}
    assert all(f.ok for f in detect(s, drift=CLEAN))
