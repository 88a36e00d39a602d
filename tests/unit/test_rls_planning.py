"""Pure decisions of rls-auth-failure: the diff against the snapshot and the no-widening rule."""

from __future__ import annotations

from flows.rls_auth_failure import plan_rollback, policy_diff, protected_tables, widens
from tasks.rls import Policy, RlsState


def pol(
    table: str,
    name: str,
    qual: str = "(auth.uid() = id)",
    roles: list[str] | None = None,
    cmd: str = "SELECT",
) -> Policy:
    return Policy(
        table=table,
        name=name,
        permissive="PERMISSIVE",
        roles=roles or ["public"],
        cmd=cmd,
        qual=qual,
        with_check=None,
    )


GOOD = RlsState(
    policies=[pol("users", "sel"), pol("users", "upd", cmd="UPDATE"), pol("students", "own")],
    rls={"users": True, "students": True, "audit": False},
)


def test_protected_tables_come_from_the_snapshot() -> None:
    assert protected_tables(GOOD, None) == ["students", "users"]
    assert protected_tables(None, None) == ["classes", "students", "teachers", "users"]
    assert protected_tables(GOOD, ["users"]) == ["users"]


def test_diff_names_missing_changed_extra_and_rls_off() -> None:
    now = RlsState(
        policies=[
            pol("users", "upd", qual="true", cmd="UPDATE"),
            pol("users", "open", qual="true"),
        ],
        rls={"users": True, "students": False},
    )
    diff = policy_diff(GOOD, now, ["students", "users"])
    assert [p.name for p in diff.missing] == ["own", "sel"]
    assert [(old.name, new.qual) for old, new in diff.changed] == [("upd", "true")]
    assert [p.name for p in diff.extra] == ["open"]
    assert diff.rls_off == ["students"] and diff.no_policy == []


def test_plan_restores_only_the_snapshot() -> None:
    now = RlsState(
        policies=[pol("users", "upd", qual="true", cmd="UPDATE")],
        rls={"users": True, "students": True},
    )
    diff = policy_diff(GOOD, now, ["students", "users"])
    assert diff.no_policy == ["students"]
    plan = plan_rollback(diff, GOOD, resource="r", migrations_dir=None)
    assert plan.actions[0].targets == [
        "drop policy users.upd",
        "create policy students.own",
        "create policy users.sel",
        "create policy users.upd",
    ]
    assert any(
        'CREATE POLICY "own" ON "public"."students"' in s for s in plan.actions[0].statements
    )
    assert widens(plan, GOOD) == []

    tampered = plan.model_copy(deep=True)
    tampered.actions[0].params["create"][0]["qual"] = "true"
    assert widens(tampered, GOOD) == ["students.own"]


def test_a_policy_opening_a_table_to_anon_is_a_security_incident() -> None:
    from core import lifecycle

    now = RlsState(
        policies=[*GOOD.policies, pol("users", "anyone", qual="true", roles=["anon"])],
        rls=dict(GOOD.rls),
    )
    diff = policy_diff(GOOD, now, ["students", "users"])
    assert [p.name for p in diff.opened] == ["anyone"]
    severity, reasons = lifecycle.raised_severity("P2", ["access-opened"])
    assert severity == "P1" and any("security" in r for r in reasons)


def test_rls_on_with_no_policy_is_a_valid_lock_down() -> None:
    locked = RlsState(policies=list(GOOD.policies), rls={**GOOD.rls, "audit_log": True})
    assert policy_diff(locked, locked, ["audit_log", "students", "users"]).empty
