"""Pure decisions of rls-auth-failure: the diff against the snapshot, the no-widening rule, what
only a person may approve, and snapshots taken before schemas were part of the keys."""

from __future__ import annotations

from remediate.flows.rls_auth_failure import (
    conjuncts,
    function_change,
    manual_reasons,
    plan_rollback,
    policy_diff,
    protected_tables,
    widens,
)
from remediate.tasks.rls import Function, Policy, RlsState


def pol(
    table: str,
    name: str,
    qual: str | None = "(auth.uid() = id)",
    roles: list[str] | None = None,
    cmd: str = "SELECT",
    permissive: str = "PERMISSIVE",
    schema: str = "public",
) -> Policy:
    return Policy(
        schema_name=schema,
        table=table,
        name=name,
        permissive=permissive,
        roles=roles or ["public"],
        cmd=cmd,
        qual=qual,
        with_check=None,
    )


def fn(signature: str, schema: str, body: str = "SELECT 1") -> Function:
    return Function(
        signature=signature,
        schema_name=schema,
        definition=f"CREATE OR REPLACE FUNCTION {signature}\n RETURNS integer\n LANGUAGE sql\n"
        f"AS $function$ {body} $function$\n",
    )


GOOD = RlsState(
    policies=[pol("users", "sel"), pol("users", "upd", cmd="UPDATE"), pol("students", "own")],
    rls={"users": True, "students": True, "audit": False},
)
TABLES = ["public.students", "public.users"]


def test_protected_tables_come_from_the_snapshot() -> None:
    assert protected_tables(GOOD, None) == TABLES
    assert protected_tables(None, None) == [
        "public.classes",
        "public.students",
        "public.teachers",
        "public.users",
    ]
    assert protected_tables(GOOD, ["users"]) == ["public.users"]
    assert protected_tables(GOOD, ["storage.objects"]) == ["storage.objects"]


def test_a_snapshot_of_bare_table_names_reads_as_public() -> None:
    old = {
        "policies": [
            {
                "table": "users",
                "name": "sel",
                "permissive": "PERMISSIVE",
                "roles": ["public"],
                "cmd": "SELECT",
                "qual": "(auth.uid() = id)",
                "with_check": None,
            }
        ],
        "rls": {"users": True},
    }
    state = RlsState(**old)
    assert state.rls == {"public.users": True}
    assert state.policies[0].label == "public.users.sel" and state.functions == []
    # Read back from the store as it was saved: unchanged.
    assert RlsState(**state.model_dump()) == state
    now = RlsState(
        policies=[pol("users", "sel")], rls={"public.users": True, "storage.objects": True}
    )
    assert policy_diff(state, now, protected_tables(state, None)).empty


def test_schemas_are_part_of_the_keys() -> None:
    good = RlsState(
        policies=[pol("objects", "own", schema="storage"), pol("objects", "own")],
        rls={"storage.objects": True, "public.objects": True},
    )
    now = RlsState(
        policies=[pol("objects", "own", schema="storage", qual="true"), pol("objects", "own")],
        rls=dict(good.rls),
    )
    diff = policy_diff(good, now, protected_tables(good, None))
    assert [old.label for old, _ in diff.changed] == ["storage.objects.own"]
    plan = plan_rollback(diff, good, resource="r", migrations_dir=None)
    assert 'CREATE POLICY "own" ON "storage"."objects"' in "".join(plan.actions[0].statements)
    # RLS_SCHEMAS narrowed to public since the snapshot: storage is no longer compared.
    assert protected_tables(good, None, ["public"]) == ["public.objects"]


def test_diff_names_missing_changed_extra_and_rls_off() -> None:
    now = RlsState(
        policies=[
            pol("users", "upd", qual="true", cmd="UPDATE"),
            pol("users", "open", qual="true"),
        ],
        rls={"users": True, "students": False},
    )
    diff = policy_diff(GOOD, now, TABLES)
    assert [p.name for p in diff.missing] == ["own", "sel"]
    assert [(old.name, new.qual) for old, new in diff.changed] == [("upd", "true")]
    assert [p.name for p in diff.extra] == ["open"]
    assert diff.rls_off == ["public.students"] and diff.no_policy == []


def test_plan_restores_only_the_snapshot() -> None:
    now = RlsState(
        policies=[pol("users", "upd", qual="true", cmd="UPDATE")],
        rls={"users": True, "students": True},
    )
    diff = policy_diff(GOOD, now, TABLES)
    assert diff.no_policy == ["public.students"]
    plan = plan_rollback(diff, GOOD, resource="r", migrations_dir=None)
    assert plan.actions[0].targets == [
        "drop policy public.users.upd",
        "create policy public.students.own",
        "create policy public.users.sel",
        "create policy public.users.upd",
    ]
    assert any(
        'CREATE POLICY "own" ON "public"."students"' in s for s in plan.actions[0].statements
    )
    assert widens(plan, GOOD) == []
    # The live policy was unconditional: the snapshot's is not wider; nothing is dropped that
    # is RESTRICTIVE: a rule or --auto-approve may approve it.
    assert plan.manual_only == []

    tampered = plan.model_copy(deep=True)
    tampered.actions[0].params["create"][0]["qual"] = "true"
    assert widens(tampered, GOOD) == ["public.students.own"]


def test_a_policy_opening_a_table_to_anon_is_a_security_incident() -> None:
    from remediate.engine import lifecycle

    now = RlsState(
        policies=[*GOOD.policies, pol("users", "anyone", qual="true", roles=["anon"])],
        rls=dict(GOOD.rls),
    )
    diff = policy_diff(GOOD, now, TABLES)
    assert [p.name for p in diff.opened] == ["anyone"]
    severity, reasons = lifecycle.raised_severity("P2", ["access-opened"])
    assert severity == "P1" and any("security" in r for r in reasons)


def test_rls_on_with_no_policy_is_a_valid_lock_down() -> None:
    locked = RlsState(policies=list(GOOD.policies), rls={**GOOD.rls, "audit_log": True})
    assert policy_diff(locked, locked, ["public.audit_log", *TABLES]).empty


def changed(good: Policy, live: Policy) -> list[str]:
    snapshot = RlsState(policies=[good], rls={"users": True})
    now = RlsState(policies=[live], rls={"users": True})
    return manual_reasons(policy_diff(snapshot, now, ["public.users"]))


def test_dropping_a_restrictive_policy_is_for_a_person() -> None:
    block = pol("users", "no_bob", qual="(id <> auth.uid())", permissive="RESTRICTIVE")
    now = RlsState(policies=[*GOOD.policies, block], rls=dict(GOOD.rls))
    diff = policy_diff(GOOD, now, TABLES)
    plan = plan_rollback(diff, GOOD, resource="r", migrations_dir=None)
    (reason,) = plan.manual_only
    assert "RESTRICTIVE policy public.users.no_bob" in reason
    assert any("only a person may approve" in d for d in plan.actions[0].details)
    # A restrictive policy changed in place is dropped too (then recreated from the snapshot).
    assert changed(block, block.model_copy(update={"qual": "false"}))


def test_a_snapshot_policy_wider_than_the_live_one_is_for_a_person() -> None:
    live = pol("users", "sel", roles=["authenticated"])
    assert changed(live, live) == []
    # More roles, a role everyone has, an unconditional USING, a command set covering more.
    assert changed(pol("users", "sel", roles=["authenticated", "anon"]), live)
    assert changed(pol("users", "sel", roles=["public"]), live)
    assert changed(pol("users", "sel", roles=["authenticated"], qual="true"), live)
    assert changed(pol("users", "sel", roles=["authenticated"], cmd="ALL"), live)
    # Anything not provably narrower counts as wider: another condition; a condition where the
    # live policy has none (a PERMISSIVE policy without USING admits nothing for it); literals
    # and quoted names differing only in case are different conditions.
    assert changed(pol("users", "sel", roles=["authenticated"], qual="(role = 'admin')"), live)
    no_using = pol("users", "sel", roles=["authenticated"], qual=None)
    assert changed(pol("users", "sel", roles=["authenticated"], qual="true"), no_using)
    assert changed(live, no_using)
    assert changed(no_using, live) == []  # putting back "admits nothing" widens nothing
    tenant = pol("users", "sel", roles=["authenticated"], qual="(tenant = 'Acme'::text)")
    assert changed(tenant.model_copy(update={"qual": "(tenant = 'acme'::text)"}), tenant)
    assert changed(
        tenant.model_copy(update={"qual": '("Tenant" = tenant)'}),
        tenant.model_copy(update={"qual": "(tenant = tenant)"}),
    )
    # Narrower: fewer roles than a live policy for everyone, a condition replacing `true`, one
    # command of a live ALL, a RESTRICTIVE policy replacing a permissive one.
    assert changed(live, pol("users", "sel", roles=["public"])) == []
    assert changed(live, pol("users", "sel", roles=["authenticated"], qual="true")) == []
    assert changed(live, pol("users", "sel", roles=["authenticated"], cmd="ALL")) == []
    assert changed(live.model_copy(update={"permissive": "RESTRICTIVE"}), live) == []


def test_a_condition_anded_onto_the_live_one_is_narrower() -> None:
    """The usual loosening: a migration drops a term of the policy's condition (Supabase's
    per-user folder on storage.objects). Putting the term back narrows: no person needed."""
    owner = "(storage.foldername(name))[1] = (auth.uid())::text"
    good = pol(
        "objects", "own", schema="storage", qual=f"((bucket_id = 'avatars'::text) AND ({owner}))"
    )
    live = good.model_copy(update={"qual": "(bucket_id = 'avatars'::text)"})
    assert conjuncts(good.qual or "") == {"bucket_id = 'avatars'::text", owner}
    snapshot = RlsState(policies=[good], rls={"storage.objects": True})
    now = RlsState(policies=[live], rls={"storage.objects": True})
    assert manual_reasons(policy_diff(snapshot, now, ["storage.objects"])) == []
    # The other way round (the snapshot's condition drops a term of the live one): wider.
    assert manual_reasons(policy_diff(now, snapshot, ["storage.objects"]))
    # An OR, or an AND inside a literal, is one term, never split.
    assert len(conjuncts("((a = 1) OR (b = 2 AND c = 3))")) == 1
    assert conjuncts("(name = 'x AND y'::text)") == {"name = 'x AND y'::text"}


def test_changed_functions_app_ones_are_rolled_back_auth_ones_are_not() -> None:
    app, auth = fn("public.is_teacher(uuid)", "public"), fn("auth.uid()", "auth")
    good = GOOD.model_copy(update={"functions": [app, auth]})
    broken_app = good.model_copy(update={"functions": [fn(app.signature, "public", "1"), auth]})
    diff = policy_diff(good, broken_app, TABLES)
    assert [f.signature for f in diff.app_functions] == [app.signature]
    assert diff.managed_functions == [] and not diff.empty
    plan = plan_rollback(diff, good, resource="r", migrations_dir=None)
    action = plan.actions[0]
    assert action.targets == ["replace function public.is_teacher(uuid)"]
    assert action.statements == [app.definition + ";"]
    assert any(app.definition in d for d in action.details)
    assert plan.manual_only and "public.is_teacher(uuid)" in plan.manual_only[0]
    assert widens(plan, good) == []

    broken_auth = good.model_copy(update={"functions": [app, fn("auth.uid()", "auth", "NULL")]})
    diff = policy_diff(good, broken_auth, TABLES)
    assert [f.signature for f in diff.managed_functions] == ["auth.uid()"]
    assert diff.app_functions == []
    tampered = plan_rollback(diff, good, resource="r", migrations_dir=None)
    tampered.actions[0].params["functions"] = [auth.model_dump()]
    assert widens(tampered, good) == ["auth.uid()"]


def test_a_function_is_put_back_with_its_owner_and_grants() -> None:
    """A helper recreated by the product's role would be the product's and executable by all:
    the snapshot keeps its owner and EXECUTE grants, compares them, and restores them."""
    good = Function(
        signature="public.is_teacher(uuid)",
        schema_name="public",
        definition="CREATE OR REPLACE FUNCTION public.is_teacher(uuid) ...",
        owner="app_owner",
        executors=["authenticated"],
    )
    assert function_change(good, good) == ""
    assert function_change(good, None) == "is gone"
    opened = good.model_copy(update={"executors": ["", "authenticated"]})
    assert function_change(good, opened) == (
        "may be executed by PUBLIC, authenticated instead of authenticated"
    )
    assert "owned by postgres" in function_change(
        good, good.model_copy(update={"owner": "postgres"})
    )
    rendered = [s.as_string(None) for s in good.restore_statements()]
    assert rendered == [
        good.definition,
        'ALTER FUNCTION public.is_teacher(uuid) OWNER TO "app_owner"',
        "REVOKE ALL ON FUNCTION public.is_teacher(uuid) FROM PUBLIC",
        'GRANT EXECUTE ON FUNCTION public.is_teacher(uuid) TO "authenticated"',
    ]
    # A snapshot from before owners were kept compares and restores the definition only.
    legacy = good.model_copy(update={"owner": None, "executors": None})
    assert function_change(legacy, opened) == ""
    assert [s.as_string(None) for s in legacy.restore_statements()] == [good.definition]
