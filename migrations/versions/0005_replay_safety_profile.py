"""replay steps record the robot profile that judged them (issue 21: every action is judged)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 10:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('replay_steps', sa.Column('safety_profile', sa.String(length=80), nullable=True))


def downgrade() -> None:
    op.drop_column('replay_steps', 'safety_profile')
