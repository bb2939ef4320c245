"""jobs.worker: the GPU worker that claimed a running job, so its jobs are released when it dies (issue 22)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No index: the reaper looks it up among running jobs only when a worker has died, and an index touching
    # every claim would cost the hot path more than those rare scans.
    op.add_column('jobs', sa.Column('worker', sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'worker')
