"""Run leases from a run's first step: a lease has an id of its own, and an incident only once
the run opens one (`remediate/engine/liveness.py`). A run lost while it still detects is then
noticed too,
and its flow run marked Crashed, which frees the alert's claim.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "run_leases",
        sa.Column(
            "id",
            postgresql.UUID(as_uuid=True),
            nullable=False,
            server_default=sa.text("gen_random_uuid()"),
        ),
    )
    op.drop_constraint("run_leases_pkey", "run_leases", type_="primary")
    op.create_primary_key("run_leases_pkey", "run_leases", ["id"])
    op.alter_column("run_leases", "incident_id", nullable=True)
    op.create_unique_constraint("run_leases_incident_id_key", "run_leases", ["incident_id"])


def downgrade() -> None:
    # migration-safety: delete confirmed (leases of runs still detecting have no incident to key)
    op.execute("DELETE FROM run_leases WHERE incident_id IS NULL")
    op.drop_constraint("run_leases_incident_id_key", "run_leases", type_="unique")
    op.drop_constraint("run_leases_pkey", "run_leases", type_="primary")
    op.alter_column("run_leases", "incident_id", nullable=False)
    op.create_primary_key("run_leases_pkey", "run_leases", ["incident_id"])
    # migration-safety: drop-column confirmed (reverts this revision's own new column)
    op.drop_column("run_leases", "id")
