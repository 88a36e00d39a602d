"""Alembic environment of the product's own incident store (see core/store.py)."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the store always passes its connection
    raise RuntimeError("run these migrations through core.store.migrate()")

context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
