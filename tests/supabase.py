"""The Supabase-shaped database of the drills, for the tests (defined in drills/supabase.py)."""

from drills.supabase import ALICE, BOB, ROLES, SCHEMA, build, supabase_roles

__all__ = ["ALICE", "BOB", "ROLES", "SCHEMA", "build", "supabase_roles"]
