"""Pure decisions of tables-missing-after-migration over a described schema state."""

from __future__ import annotations

from flows.tables_missing_after_migration import (
    buggy_migrations,
    detect,
    diagnose,
    expected_at,
    last_good_revision,
    plan_recovery,
    refusal,
)
from tasks.alembic import Revision, SchemaState


def rev(revision: str, down: str | None, **ops: object) -> Revision:
    values: dict[str, object] = dict(
        revision=revision,
        down_revision=down,
        path=f"{revision}.py",
        doc=revision,
        create_tables={},
        add_columns=[],
        drop_tables=[],
        drop_columns=[],
    )
    values.update(ops)
    return Revision(**values)  # type: ignore[arg-type]


HISTORY = [
    rev("a1", None, create_tables={"user": ['sa.Column("id")', 'sa.Column("email")']}),
    rev("b2", "a1", create_tables={"ingestions": ['sa.Column("id")', 'sa.Column("user_id")']}),
    rev("c3", "b2", add_columns=[("ingestions", "ocr_provider")]),
]


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
    findings = {f.check: f.ok for f in detect(s, drift=[])}
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
            create_tables={"ingestions": ['sa.Column("id")', 'sa.Column("status", sa.String(20))']},
        ),
    ]
    (bug,) = buggy_migrations(state(FULL, ["d4"], revisions=revisions))
    assert (bug.revision, bug.table, bug.created_by) == ("d4", "ingestions", "b2")
    assert bug.replacement == ["op.add_column('ingestions', sa.Column(\"status\", sa.String(20)))"]
    assert "re-create an existing table" in refusal(state(FULL, ["d4"], revisions=revisions), "c3")


def test_pending_drop_of_a_table_with_rows_is_refused() -> None:
    revisions = [*HISTORY, rev("d4", "c3", drop_tables=["ingestions"])]
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

    from core.settings import ConfigError, Settings
    from tasks.alembic import parse_command_prefix

    settings = Settings(docker_host="unix:///run/podman/podman.sock", compose_project_name="app")
    parsed = parse_command_prefix("docker compose exec -T backend uv run alembic", settings)
    assert parsed is not None
    assert (parsed.service.service, parsed.argv) == ("backend", ["uv", "run", "alembic"])
    assert parse_command_prefix("docker-compose exec backend alembic", settings) is not None
    assert parse_command_prefix("rm -rf /; alembic", settings) is None
    assert parse_command_prefix("docker compose exec backend", settings) is None
    with pytest.raises(ConfigError, match="set DOCKER_HOST and COMPOSE_PROJECT_NAME"):
        parse_command_prefix("docker compose exec backend alembic", Settings())
