"""Alerts the receiver took (routed or not, firing or resolved) and used approval links.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migration-safety: create-table confirmed (new table, added by this revision)
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.Text(), nullable=True),
        sa.Column("runbook", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("flow_run_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column(
            "data", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
    )
    op.create_index("alerts_dedup_idx", "alerts", ["dedup_key", "id"])
    # migration-safety: create-table confirmed (new table, added by this revision)
    op.create_table(
        "approval_links_used",
        sa.Column("nonce", sa.Text(), primary_key=True),
        sa.Column("flow_run_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("used_by", sa.Text(), nullable=False),
        sa.Column(
            "used_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
    )


def downgrade() -> None:
    # migration-safety: drop-table confirmed (reverts this revision's own new tables)
    op.drop_table("approval_links_used")
    # migration-safety: drop-table confirmed (reverts this revision's own new tables)
    op.drop_table("alerts")
