"""The access probe against each shape of Supabase's real `auth.uid()` (drills/supabase.py names
the source of each): the probe's claims must reach every one of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr

from drills.supabase import ALICE, AUTH_UID, build, supabase_roles
from tasks import rls
from tasks.postgres import PgTarget
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
