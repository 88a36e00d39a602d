"""Run leases: how the product notices that the process executing an incident's run is gone.

A run renews its lease every few seconds while it executes (waiting for an approval included);
a lease left to expire, and still expired a whole lease later, means the executor is lost
(`remediate/engine/liveness.py`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migration-safety: create-table confirmed (new table, added by this revision)
    op.create_table(
        "run_leases",
        sa.Column(
            "incident_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("flow_run_id", sa.Text(), nullable=True),
        # Which execution of the flow run holds it (Prefect's run_count): a run handed back and
        # executing again is never marked lost for its earlier execution.
        sa.Column("run_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column(
            "renewed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suspected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("run_leases_expires_at", "run_leases", ["expires_at"])


def downgrade() -> None:
    # migration-safety: drop-table confirmed (reverts this revision's own new table)
    op.drop_index("run_leases_expires_at", table_name="run_leases")
    op.drop_table("run_leases")
