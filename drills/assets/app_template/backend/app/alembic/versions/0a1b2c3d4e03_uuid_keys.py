"""UUID keys instead of integers

Revision ID: 0a1b2c3d4e03
Revises: 0a1b2c3d4e02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0a1b2c3d4e03"
down_revision = "0a1b2c3d4e02"
branch_labels = None
depends_on = None


def upgrade():
    op.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"')
    op.add_column("user", sa.Column("new_id", postgresql.UUID(as_uuid=True)))
    op.add_column("item", sa.Column("new_id", postgresql.UUID(as_uuid=True)))
    op.add_column("item", sa.Column("new_owner_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.execute('UPDATE "user" SET new_id = uuid_generate_v4()')
    op.execute("UPDATE item SET new_id = uuid_generate_v4()")
    op.execute(
        'UPDATE item SET new_owner_id = (SELECT u.new_id FROM "user" u WHERE u.id = item.owner_id)'
    )
    op.alter_column("user", "new_id", nullable=False)
    op.alter_column("item", "new_id", nullable=False)
    op.drop_constraint("item_owner_id_fkey", "item", type_="foreignkey")
    op.drop_column("item", "owner_id")
    op.alter_column("item", "new_owner_id", new_column_name="owner_id")
    op.drop_column("user", "id")
    op.alter_column("user", "new_id", new_column_name="id")
    op.drop_column("item", "id")
    op.alter_column("item", "new_id", new_column_name="id")
    op.create_primary_key("user_pkey", "user", ["id"])
    op.create_primary_key("item_pkey", "item", ["id"])
    op.create_foreign_key("item_owner_id_fkey", "item", "user", ["owner_id"], ["id"])


def downgrade():
    raise NotImplementedError("UUID keys cannot be turned back into the old integers")
