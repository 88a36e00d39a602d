"""The incident store: incidents, their timeline, known-good snapshots, and operator controls.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migration-safety: create-table confirmed (new table in an empty schema)
    op.create_table(
        "incidents",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("runbook", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("flow_run_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("requested_by", sa.Text(), nullable=True),
        sa.Column(
            "opened_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "incidents_open_idx",
        "incidents",
        ["runbook", "resource"],
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    # migration-safety: create-table confirmed (new table in an empty schema)
    op.create_table(
        "incident_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "incident_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("resource", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column(
            "data", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
    )
    op.create_index("incident_events_incident_idx", "incident_events", ["incident_id", "id"])
    op.create_index("incident_events_resource_idx", "incident_events", ["resource", "kind", "at"])
    # migration-safety: create-table confirmed (new table in an empty schema)
    op.create_table(
        "snapshots",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column(
            "taken_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.Column("data", postgresql.JSONB(), nullable=False),
    )
    op.create_index("snapshots_latest_idx", "snapshots", ["kind", "resource", "taken_at"])
    # migration-safety: create-table confirmed (new table in an empty schema)
    op.create_table(
        "controls",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("value", postgresql.JSONB(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
    )


def downgrade() -> None:
    # migration-safety: drop-table confirmed (reverts this revision's own new tables)
    op.drop_table("controls")
    # migration-safety: drop-table confirmed (reverts this revision's own new tables)
    op.drop_table("snapshots")
    # migration-safety: drop-table confirmed (reverts this revision's own new tables)
    op.drop_table("incident_events")
    # migration-safety: drop-table confirmed (reverts this revision's own new tables)
    op.drop_table("incidents")
