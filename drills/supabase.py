"""A Supabase-shaped database on a real PostgreSQL: roles, auth.uid(), RLS like seed 002's.

Used by the rls-auth-failure drill and by the tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

ROLES = ("anon", "authenticated", "service_role")
ALICE = str(uuid.UUID(int=1))
BOB = str(uuid.UUID(int=2))

# `auth.uid()` as Supabase has defined it over time (our own text, same behaviour):
# - "claim-sub": supabase/auth `migrations/tenant/00_init_auth_schema.up.sql` and the Supabase
#   Postgres image: only `request.jwt.claim.sub`;
# - "either": supabase/auth `20211202183645_update_auth_uid.up.sql`: `request.jwt.claim.sub`, else
#   the `sub` of `request.jwt.claims`, empty as NULL;
# - "claims": only the JSON `request.jwt.claims` (what PostgREST 9+ sets; some projects' own).
AUTH_UID = {
    "claim-sub": "SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid",
    "either": "SELECT nullif(coalesce(current_setting('request.jwt.claim.sub', true),"
    " (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')), '')::uuid",
    "claims": "SELECT nullif(current_setting('request.jwt.claims', true)::json ->> 'sub', '')"
    "::uuid",
}

SCHEMA = f"""
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  {AUTH_UID["either"]}
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE TABLE users (id uuid PRIMARY KEY, email text NOT NULL, role text NOT NULL DEFAULT 'user');
CREATE TABLE teachers (id uuid PRIMARY KEY REFERENCES users (id));
CREATE TABLE classes (id serial PRIMARY KEY, teacher_id uuid REFERENCES teachers (id));
CREATE TABLE students (id uuid PRIMARY KEY REFERENCES users (id), class_id int REFERENCES classes);
INSERT INTO users VALUES ('{ALICE}', 'alice@school.test', 'user'),
                         ('{BOB}', 'bob@school.test', 'user');
INSERT INTO teachers VALUES ('{ALICE}');
INSERT INTO classes (teacher_id) VALUES ('{ALICE}');
INSERT INTO students VALUES ('{BOB}', 1);
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE teachers ENABLE ROW LEVEL SECURITY;
ALTER TABLE classes ENABLE ROW LEVEL SECURITY;
ALTER TABLE students ENABLE ROW LEVEL SECURITY;
CREATE POLICY auth_policy_select ON users FOR SELECT USING (auth.uid() = id OR role = 'admin');
CREATE POLICY auth_policy_update ON users FOR UPDATE USING (auth.uid() = id OR role = 'admin');
CREATE POLICY teachers_select ON teachers FOR SELECT TO authenticated USING (auth.uid() = id);
CREATE POLICY classes_teacher ON classes FOR ALL TO authenticated USING (teacher_id = auth.uid());
CREATE POLICY students_select ON students FOR SELECT TO authenticated USING (id = auth.uid());
GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA public TO authenticated;
"""


@contextmanager
def supabase_roles(admin_url: str, *, database_prefix: str = "rt\\_") -> Iterator[None]:
    """The roles are cluster-wide: create the missing ones, drop only those created here."""
    created = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in ROLES:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
                created.append(role)
    try:
        yield
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for role in created:
                for (db,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s",
                    (database_prefix + "%",),
                ).fetchall():
                    with psycopg.connect(
                        admin_url.rsplit("/", 1)[0] + f"/{db}", autocommit=True
                    ) as other:
                        other.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def build(url: str, *, auth_uid: str = "either") -> None:
    """The Supabase-shaped schema, with `auth.uid()` in one of Supabase's real shapes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            f"CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$"
            f" {AUTH_UID[auth_uid]} $$"
        )
