"""The incident store: PostgreSQL under alembic (`migrations/`)."""
