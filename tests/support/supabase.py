"""The Supabase-shaped database of the drills, for the tests (defined in drills/supabase.py)."""

from remediate.drills.supabase import (
    ALICE,
    BOB,
    IS_CLASS_TEACHER,
    ROLES,
    SCHEMA,
    build,
    supabase_roles,
)

__all__ = ["ALICE", "BOB", "IS_CLASS_TEACHER", "ROLES", "SCHEMA", "build", "supabase_roles"]
