"""PostgreSQL row-level security: read policies, RLS flags and the functions the policies call,
probe access, apply a rollback.

Identifiers always go through `psycopg.sql.Identifier`; the only SQL text taken as is are the
`USING` / `WITH CHECK` expressions of the known-good snapshot, which PostgreSQL itself printed
(`pg_policies`) when the snapshot was taken, and the definitions of the functions the policies
call, which PostgreSQL printed too (`pg_get_functiondef`, a whole `CREATE OR REPLACE FUNCTION`).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from prefect.cache_policies import NONE
from psycopg import sql
from pydantic import BaseModel, model_validator

from remediate.tasks.postgres import PgTarget
from remediate.tasks.steps import task

__all__ = [
    "INTERNAL_SCHEMAS",
    "Function",
    "Policy",
    "ProbeAccess",
    "RlsState",
    "apply_rollback",
    "create_policy_sql",
    "probe_access",
    "qualified",
    "read_rls_state",
    "rollback_statements",
    "split_table",
]

# Watched when RLS_SCHEMAS is empty: every schema but PostgreSQL's own (also `pg_toast*`,
# `pg_temp*`) and those Supabase's services own, which hold no user data under the app's
# policies: `auth` (GoTrue: its tables have no policies by design), the extensions' schemas,
# Realtime's, the functions' hooks, Vault, pg_net, pg_cron, the pooler's. `storage` is watched:
# the app's policies on `storage.objects` guard the users' files.
INTERNAL_SCHEMAS = (
    "pg_catalog",
    "information_schema",
    "auth",
    "extensions",
    "graphql",
    "graphql_public",
    "realtime",
    "_realtime",
    "supabase_functions",
    "supabase_migrations",
    "vault",
    "pgsodium",
    "pgsodium_masks",
    "net",
    "cron",
    "pgbouncer",
    "_analytics",
)


def qualified(schema: str, table: str) -> str:
    return f"{schema}.{table}"


def split_table(name: str) -> tuple[str, str]:
    """`storage.objects` → (`storage`, `objects`); a bare name is a table of `public` (what
    snapshots taken before RLS_SCHEMAS held). A schema name with a dot is not supported."""
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else ("public", name)


class Policy(BaseModel):
    schema_name: str = "public"  # absent from snapshots taken when only `public` was watched
    table: str
    name: str
    permissive: str
    roles: list[str]
    cmd: str
    qual: str | None
    with_check: str | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.schema_name, self.table, self.name)

    @property
    def qualified_table(self) -> str:
        return qualified(self.schema_name, self.table)

    @property
    def label(self) -> str:
        return f"{self.qualified_table}.{self.name}"


class Function(BaseModel):
    """A function a policy's expression calls (`pg_depend` of `pg_policy` on `pg_proc`)."""

    signature: str  # schema.name(argument types), as `to_regprocedure` reads it back
    schema_name: str
    definition: str  # pg_get_functiondef: CREATE OR REPLACE FUNCTION …
    # Who owns it (SECURITY DEFINER runs as the owner) and its EXECUTE grants: role names, ""
    # for PUBLIC. None in snapshots taken before they were kept (then not compared or restored).
    owner: str | None = None
    executors: list[str] | None = None

    def restore_statements(self) -> list[sql.Composable]:
        """The snapshot's definition, owner and EXECUTE grants, exactly: a function recreated
        by the product's role would otherwise be the product's, executable by everyone."""
        name = sql.SQL(self.signature)  # PostgreSQL's own quoting (quote_ident), read back
        out: list[sql.Composable] = [sql.SQL(self.definition)]
        if self.owner is not None:
            out.append(
                sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(name, sql.Identifier(self.owner))
            )
        if self.executors is not None:
            out.append(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(name))
            out += [
                sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                    name, sql.Identifier(role) if role else sql.SQL("PUBLIC")
                )
                for role in self.executors
            ]
        return out


class RlsState(BaseModel):
    """Policies and RLS flags of the watched schemas' tables, and the functions they call."""

    policies: list[Policy]
    rls: dict[str, bool]  # schema.table -> relrowsecurity
    functions: list[Function] = []
    # 2: tables keyed `schema.table`. Snapshots without it (1) were of `public`, keyed bare.
    format: int = 2

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if isinstance(data, dict) and "format" not in data:
            data = {
                **data,
                "rls": {qualified(*split_table(t)): on for t, on in data.get("rls", {}).items()},
                "format": 2,
            }
        return data

    def by_key(self) -> dict[tuple[str, str, str], Policy]:
        return {p.key: p for p in self.policies}

    def by_signature(self) -> dict[str, Function]:
        return {f.signature: f for f in self.functions}

    def kept_with(self, previous: RlsState | None, schemas: list[str]) -> RlsState:
        """This state read of `schemas` only (RLS_SCHEMAS narrowed), with what `previous` knew of
        the other schemas kept: narrowing the watch for a while never forgets their known-good
        policies. Without `schemas` (every schema read) this state stands alone."""
        if previous is None or not schemas:
            return self
        other = [p for p in previous.policies if p.schema_name not in schemas]
        flags = {t: on for t, on in previous.rls.items() if split_table(t)[0] not in schemas}
        mine = self.by_signature()
        return self.model_copy(
            update={
                "policies": sorted(self.policies + other, key=lambda p: p.key),
                "rls": dict(sorted({**flags, **self.rls}.items())),
                "functions": sorted(
                    [*mine.values(), *(f for f in previous.functions if f.signature not in mine)],
                    key=lambda f: f.signature,
                ),
            }
        )


class ProbeAccess(BaseModel):
    ok: bool
    own_rows: int
    other_rows: int
    detail: str


def _schema_filter(column: str, schemas: list[str]) -> tuple[sql.Composable, list[Any]]:
    # A schema whose name holds a dot is never read: its `schema.table` keys would be ambiguous
    # (schema `a.b`, table `c` against schema `a`, table `b.c`), and a rollback could then name
    # another table than the one it saw.
    col = sql.SQL(column)
    if schemas:
        return (
            sql.SQL("{c}::text = ANY(%s) AND strpos({c}::text, '.') = 0").format(c=col),
            [list(schemas)],
        )
    return (
        sql.SQL(
            "{c}::text <> ALL(%s) AND {c}::text !~ '^pg_(toast|temp)'"
            " AND strpos({c}::text, '.') = 0"
        ).format(c=col),
        [list(INTERNAL_SCHEMAS)],
    )


@task(
    name="read-rls-state",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["postgres", "read-only"],
)
def read_rls_state(
    target: PgTarget, *, schemas: list[str] | None = None, functions: list[str] | None = None
) -> RlsState:
    """The policies and RLS flags of `schemas` (empty: every schema but the internal ones), and
    the definitions of the functions those policies call, plus of `functions` (signatures of a
    snapshot: a function a policy no longer calls is still compared)."""
    policy_where, policy_args = _schema_filter("schemaname", schemas or [])
    table_where, table_args = _schema_filter("n.nspname", schemas or [])
    with target.connect() as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT schemaname, tablename, policyname, permissive, roles::text[], cmd, qual,"
                " with_check FROM pg_policies WHERE {} ORDER BY 1, 2, 3"
            ).format(policy_where),
            policy_args,
        ).fetchall()
        flags = conn.execute(
            sql.SQL(
                "SELECT n.nspname, c.relname, c.relrowsecurity FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE {} AND c.relkind IN ('r', 'p') ORDER BY 1, 2"
            ).format(table_where),
            table_args,
        ).fetchall()
        called = conn.execute(
            sql.SQL(
                "WITH used AS ("
                " SELECT d.refobjid AS oid FROM pg_policy pol"
                " JOIN pg_class c ON c.oid = pol.polrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid"
                " AND d.refclassid = 'pg_proc'::regclass"
                " WHERE {}"
                " UNION SELECT to_regprocedure(s)::oid FROM unnest(%s::text[]) s)"
                " SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname)"
                " || '(' || oidvectortypes(p.proargtypes) || ')', n.nspname,"
                " pg_get_functiondef(p.oid), pg_get_userbyid(p.proowner),"
                " ARRAY(SELECT DISTINCT CASE WHEN a.grantee = 0 THEN '' ELSE"
                " pg_get_userbyid(a.grantee) END FROM aclexplode(coalesce(p.proacl,"
                " acldefault('f', p.proowner))) a WHERE a.privilege_type = 'EXECUTE' ORDER BY 1)"
                " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE p.oid IN (SELECT oid FROM used WHERE oid IS NOT NULL)"
                " AND p.prokind = 'f' AND n.nspname <> 'pg_catalog' ORDER BY 1"
            ).format(table_where),
            [*table_args, list(functions or [])],
        ).fetchall()
    return RlsState(
        policies=[
            Policy(
                schema_name=s,
                table=t,
                name=n,
                permissive=p,
                roles=list(r),
                cmd=c,
                qual=q,
                with_check=w,
            )
            for s, t, n, p, r, c, q, w in rows
        ],
        rls={qualified(s, t): bool(enabled) for s, t, enabled in flags},
        functions=[
            Function(signature=g, schema_name=s, definition=d, owner=o, executors=list(x or []))
            for g, s, d, o, x in called
        ],
        format=2,
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
            sql.Identifier(policy.schema_name, policy.table),
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
    *,
    drop: list[Policy],
    create: list[Policy],
    enable_rls: list[str],
    functions: list[Function] | None = None,
) -> list[sql.Composed]:
    """`enable_rls`: `schema.table` names; `functions`: snapshot definitions to put back first
    (a recreated policy calls them)."""
    # Every policy dropped or (re)created is dropped first, IF EXISTS: the same statements run
    # twice (a migration file replayed by `supabase db reset`) end in the same state.
    dropped: list[Policy] = []
    for p in [*drop, *create]:
        if p.key not in {d.key for d in dropped}:
            dropped.append(p)
    statements: list[sql.Composable] = [
        statement for f in functions or [] for statement in f.restore_statements()
    ]
    statements += [
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(
            sql.Identifier(p.name), sql.Identifier(p.schema_name, p.table)
        )
        for p in dropped
    ]
    statements += [create_policy_sql(p) for p in create]
    statements += [
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(sql.Identifier(*split_table(t)))
        for t in enable_rls
    ]
    return [s if isinstance(s, sql.Composed) else sql.Composed([s]) for s in statements]


@task(name="apply-rls-rollback", cache_policy=NONE, tags=["postgres", "destructive"])
def apply_rollback(
    target: PgTarget,
    *,
    drop: list[Policy],
    create: list[Policy],
    enable_rls: list[str],
    functions: list[Function] | None = None,
) -> int:
    """Put back the snapshot's functions, drop the broken policies, recreate the known-good ones,
    re-enable RLS: one transaction."""
    statements = rollback_statements(
        drop=drop, create=create, enable_rls=enable_rls, functions=functions
    )
    with target.connect() as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement)
    return len(statements)
