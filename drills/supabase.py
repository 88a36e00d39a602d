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

# `storage.foldername()` as Supabase Storage defines it (supabase/storage
# `migrations/tenant/0002-storage-schema.sql`; our own text, same behaviour): the folders of an
# object's path, the usual key of a per-user folder policy.
STORAGE_FOLDERNAME = """
CREATE FUNCTION storage.foldername(name text) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE _parts text[];
BEGIN
  SELECT string_to_array(name, '/') INTO _parts;
  RETURN _parts[1:array_length(_parts, 1) - 1];
END $$;
"""

# The app's own helper, called by a policy (what Supabase's docs advise for policies that join).
IS_CLASS_TEACHER = (
    "CREATE OR REPLACE FUNCTION public.is_class_teacher(teacher uuid) RETURNS boolean"
    " LANGUAGE sql STABLE AS $$ SELECT teacher = auth.uid() $$"
)

SCHEMA = f"""
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  {AUTH_UID["either"]}
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
-- GoTrue's own table: RLS on, no policy (only its own role reads it), a schema not watched.
CREATE TABLE auth.users (id uuid PRIMARY KEY, email text);
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
INSERT INTO auth.users VALUES ('{ALICE}', 'alice@school.test'), ('{BOB}', 'bob@school.test');
-- Supabase Storage: buckets and objects, RLS on both (the service enables it), granted to the
-- API roles; the app's policies decide. buckets keeps RLS with no policy (the default lock-down).
CREATE SCHEMA storage;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;
CREATE TABLE storage.buckets (id text PRIMARY KEY, name text NOT NULL, owner uuid,
  public boolean DEFAULT false, created_at timestamptz DEFAULT now());
CREATE TABLE storage.objects (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  bucket_id text REFERENCES storage.buckets (id), name text, owner uuid,
  created_at timestamptz DEFAULT now(), metadata jsonb,
  path_tokens text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED);
ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
GRANT ALL ON ALL TABLES IN SCHEMA storage TO anon, authenticated, service_role;
{STORAGE_FOLDERNAME}
INSERT INTO storage.buckets (id, name) VALUES ('avatars', 'avatars');
INSERT INTO storage.objects (bucket_id, name, owner) VALUES
  ('avatars', '{ALICE}/avatar.png', '{ALICE}'), ('avatars', '{BOB}/avatar.png', '{BOB}');
CREATE POLICY avatars_own_folder ON storage.objects FOR SELECT TO authenticated
  USING (bucket_id = 'avatars' AND (storage.foldername(name))[1] = auth.uid()::text);
{IS_CLASS_TEACHER};
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
CREATE POLICY classes_teacher ON classes FOR ALL TO authenticated
  USING (public.is_class_teacher(teacher_id));
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
