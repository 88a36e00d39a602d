"""PostgreSQL row-level security: read policies and RLS flags, probe access, apply a rollback.

Identifiers always go through `psycopg.sql.Identifier`; the only SQL text taken as is are the
`USING` / `WITH CHECK` expressions of the known-good snapshot, which PostgreSQL itself printed
(`pg_policies`) when the snapshot was taken.
"""

from __future__ import annotations

import json

import psycopg
from prefect import task
from prefect.cache_policies import NONE
from psycopg import sql
from pydantic import BaseModel

from tasks.postgres import PgTarget

__all__ = [
    "Policy",
    "ProbeAccess",
    "RlsState",
    "apply_rollback",
    "create_policy_sql",
    "probe_access",
    "read_rls_state",
    "rollback_statements",
]


class Policy(BaseModel):
    table: str
    name: str
    permissive: str
    roles: list[str]
    cmd: str
    qual: str | None
    with_check: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.table, self.name)


class RlsState(BaseModel):
    """Policies and RLS flags of the public schema's tables."""

    policies: list[Policy]
    rls: dict[str, bool]  # table -> relrowsecurity

    def by_key(self) -> dict[tuple[str, str], Policy]:
        return {p.key: p for p in self.policies}


class ProbeAccess(BaseModel):
    ok: bool
    own_rows: int
    other_rows: int
    detail: str


@task(
    name="read-rls-state",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["postgres", "read-only"],
)
def read_rls_state(target: PgTarget) -> RlsState:
    with target.connect() as conn:
        rows = conn.execute(
            "SELECT tablename, policyname, permissive, roles::text[], cmd, qual, with_check"
            " FROM pg_policies WHERE schemaname = 'public' ORDER BY tablename, policyname"
        ).fetchall()
        flags = conn.execute(
            "SELECT c.relname, c.relrowsecurity FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname"
        ).fetchall()
    return RlsState(
        policies=[
            Policy(table=t, name=n, permissive=p, roles=list(r), cmd=c, qual=q, with_check=w)
            for t, n, p, r, c, q, w in rows
        ],
        rls={table: bool(enabled) for table, enabled in flags},
    )


@task(name="probe-access", cache_policy=NONE, tags=["postgres", "read-only"])
def probe_access(
    target: PgTarget, *, table: str, user_id: str, role: str = "authenticated"
) -> ProbeAccess:
    """Query `table` as `role` with a test user's JWT claims: it must see its own row, no other.

    The claims are set as PostgREST sets them, in both shapes: `request.jwt.claims` (one JSON,
    PostgREST 9+) and `request.jwt.claim.sub` / `.role` (older PostgREST). Supabase's own
    `auth.uid()` reads the second (supabase/auth `00_init_auth_schema`, the Supabase image) or
    either (supabase/auth `20211202183645_update_auth_uid`); setting only one left the real
    function NULL and the probe failing for ever.

    Runs in a transaction that is rolled back; `SET LOCAL ROLE` ends with it.
    """
    claims = json.dumps({"sub": user_id, "role": role})
    try:
        with target.connect() as conn, conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute(
                "SELECT set_config('request.jwt.claims', %s, true),"
                " set_config('request.jwt.claim.sub', %s, true),"
                " set_config('request.jwt.claim.role', %s, true)",
                (claims, user_id, role),
            )
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE id::text = %s),"
                    " count(*) FILTER (WHERE id::text <> %s) FROM {}"
                ).format(sql.Identifier("public", table)),
                (user_id, user_id),
            ).fetchone()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ProbeAccess(
            ok=False, own_rows=0, other_rows=0, detail=f"as {role} on {table}: {first}"
        )
    own, other = row or (0, 0)
    ok = own >= 1 and other == 0
    return ProbeAccess(
        ok=ok,
        own_rows=own,
        other_rows=other,
        detail=f"as {role} on {table}: sees {own} own row(s), {other} other row(s)",
    )


def create_policy_sql(policy: Policy) -> sql.Composed:
    parts = [
        sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
            sql.Identifier(policy.name),
            sql.Identifier("public", policy.table),
            sql.SQL("PERMISSIVE" if policy.permissive == "PERMISSIVE" else "RESTRICTIVE"),
            sql.SQL(
                {
                    "SELECT": "SELECT",
                    "INSERT": "INSERT",
                    "UPDATE": "UPDATE",
                    "DELETE": "DELETE",
                }.get(policy.cmd, "ALL")
            ),
            sql.SQL(", ").join(
                sql.SQL("PUBLIC") if r == "public" else sql.Identifier(r) for r in policy.roles
            ),
        )
    ]
    if policy.qual is not None:
        parts.append(sql.SQL(" USING ({})").format(sql.SQL(policy.qual)))
    if policy.with_check is not None:
        parts.append(sql.SQL(" WITH CHECK ({})").format(sql.SQL(policy.with_check)))
    return sql.Composed(parts)


def rollback_statements(
    *, drop: list[Policy], create: list[Policy], enable_rls: list[str]
) -> list[sql.Composed]:
    # Every policy dropped or (re)created is dropped first, IF EXISTS: the same statements run
    # twice (a migration file replayed by `supabase db reset`) end in the same state.
    dropped: list[Policy] = []
    for p in [*drop, *create]:
        if p.key not in {d.key for d in dropped}:
            dropped.append(p)
    statements = [
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(
            sql.Identifier(p.name), sql.Identifier("public", p.table)
        )
        for p in dropped
    ]
    statements += [create_policy_sql(p) for p in create]
    statements += [
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(sql.Identifier("public", t))
        for t in enable_rls
    ]
    return [s if isinstance(s, sql.Composed) else sql.Composed([s]) for s in statements]


@task(name="apply-rls-rollback", cache_policy=NONE, tags=["postgres", "destructive"])
def apply_rollback(
    target: PgTarget, *, drop: list[Policy], create: list[Policy], enable_rls: list[str]
) -> int:
    """Drop the broken policies, recreate the known-good ones, re-enable RLS: one transaction."""
    statements = rollback_statements(drop=drop, create=create, enable_rls=enable_rls)
    with target.connect() as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement)
    return len(statements)
