"""The access probe against each shape of Supabase's real `auth.uid()` (drills/supabase.py names
the source of each): the probe's claims must reach every one of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr

from remediate.drills.supabase import ALICE, AUTH_UID, build, supabase_roles
from remediate.tasks import rls
from remediate.tasks.postgres import PgTarget
from tests.conftest import PG_ADMIN_URL, db_url


@pytest.fixture(scope="module")
def roles() -> Iterator[None]:
    with supabase_roles(PG_ADMIN_URL):
        yield


@pytest.mark.parametrize("shape", sorted(AUTH_UID))
def test_the_probe_is_seen_by_every_real_auth_uid(
    roles: None, make_database: Callable[[], str], shape: str
) -> None:
    name = make_database()
    build(db_url(name), auth_uid=shape)
    probe = rls.probe_access.fn(PgTarget(url=SecretStr(db_url(name))), table="users", user_id=ALICE)
    assert probe.ok, probe.detail
    assert (probe.own_rows, probe.other_rows) == (1, 0)


def test_a_schema_with_a_dot_in_its_name_is_never_read(make_database: Callable[[], str]) -> None:
    """Its `schema.table` keys would be ambiguous: schema `a.b`, table `c` reads as schema `a`,
    table `b.c`, and a rollback could then alter a table it never saw."""
    import psycopg

    name = make_database()
    with psycopg.connect(db_url(name), autocommit=True) as conn:
        conn.execute(
            'CREATE SCHEMA a; CREATE TABLE a."b.c" (id int); ALTER TABLE a."b.c" ENABLE ROW'
            ' LEVEL SECURITY; CREATE SCHEMA "a.b"; CREATE TABLE "a.b".c (id int);'
            ' ALTER TABLE "a.b".c ENABLE ROW LEVEL SECURITY;'
            ' CREATE POLICY p ON "a.b".c USING (true)'
        )
    state = rls.read_rls_state.fn(PgTarget(url=SecretStr(db_url(name))))
    assert state.rls == {"a.b.c": True}  # a's "b.c" only
    assert [p.schema_name for p in state.policies] == []
    named = rls.read_rls_state.fn(PgTarget(url=SecretStr(db_url(name))), schemas=["a.b", "a"])
    assert named.rls == {"a.b.c": True} and named.policies == []
