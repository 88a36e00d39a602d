"""created_at on user and item

Revision ID: 0a1b2c3d4e05
Revises: 0a1b2c3d4e04
"""

import sqlalchemy as sa
from alembic import op

revision = "0a1b2c3d4e05"
down_revision = "0a1b2c3d4e04"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("item", sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("user", sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    op.drop_column("user", "created_at")
    op.drop_column("item", "created_at")
