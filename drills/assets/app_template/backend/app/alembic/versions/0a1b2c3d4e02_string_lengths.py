"""String lengths

Revision ID: 0a1b2c3d4e02
Revises: 0a1b2c3d4e01
"""

import sqlalchemy as sa
from alembic import op

revision = "0a1b2c3d4e02"
down_revision = "0a1b2c3d4e01"
branch_labels = None
depends_on = None

COLUMNS = [
    ("user", "email", False),
    ("user", "full_name", True),
    ("item", "title", False),
    ("item", "description", True),
]


def upgrade():
    op.alter_column(
        "user",
        "email",
        existing_type=sa.String(),
        type_=sa.String(length=255),
        existing_nullable=False,
    )
    op.alter_column(
        "user",
        "full_name",
        existing_type=sa.String(),
        type_=sa.String(length=255),
        existing_nullable=True,
    )
    op.alter_column(
        "item",
        "title",
        existing_type=sa.String(),
        type_=sa.String(length=255),
        existing_nullable=False,
    )
    op.alter_column(
        "item",
        "description",
        existing_type=sa.String(),
        type_=sa.String(length=255),
        existing_nullable=True,
    )


def downgrade():
    for table, column, nullable in COLUMNS:
        op.alter_column(
            table,
            column,
            existing_type=sa.String(length=255),
            type_=sa.String(),
            existing_nullable=nullable,
        )
