"""Checks for other repositories' alembic migrations (seed 000): the linter and env.py hooks.
Stands apart: imports only the domain's SQL scanner."""
