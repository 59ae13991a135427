"""budgets in cost: budgets.max_cost (max_tokens optional), spend.cost_micros

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 04:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_cost", sa.Float(), nullable=True))
        batch_op.alter_column("max_tokens", existing_type=sa.BigInteger(), nullable=True)
    with op.batch_alter_table("spend", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_micros", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("spend", schema=None) as batch_op:
        batch_op.drop_column("cost_micros")
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.alter_column("max_tokens", existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_column("max_cost")
