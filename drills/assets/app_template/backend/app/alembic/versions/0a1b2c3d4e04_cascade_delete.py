"""Items deleted with their owner

Revision ID: 0a1b2c3d4e04
Revises: 0a1b2c3d4e03
"""

import sqlalchemy as sa
from alembic import op

revision = "0a1b2c3d4e04"
down_revision = "0a1b2c3d4e03"
branch_labels = None
depends_on = None


def upgrade():
    op.alter_column("item", "owner_id", existing_type=sa.UUID(), nullable=False)
    op.drop_constraint("item_owner_id_fkey", "item", type_="foreignkey")
    op.create_foreign_key(None, "item", "user", ["owner_id"], ["id"], ondelete="CASCADE")


def downgrade():
    op.drop_constraint("item_owner_id_fkey", "item", type_="foreignkey")
    op.create_foreign_key("item_owner_id_fkey", "item", "user", ["owner_id"], ["id"])
    op.alter_column("item", "owner_id", existing_type=sa.UUID(), nullable=True)
