"""per-tier replay caps: steps per replay, concurrent replays, upload storage (issue 11)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 02:50:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# NULL means unlimited, as for the other tier limits; operators edit these rows.
CAPS = {
    "free": {"max_replay_steps": 5_000, "max_concurrent_replays": 1, "max_upload_mb": 16},
    "pro": {"max_replay_steps": 50_000, "max_concurrent_replays": 4, "max_upload_mb": 64},
    "enterprise": {"max_replay_steps": 500_000, "max_concurrent_replays": 16, "max_upload_mb": 64},
}


def upgrade() -> None:
    op.add_column('tiers', sa.Column('max_replay_steps', sa.Integer(), nullable=True))
    op.add_column('tiers', sa.Column('max_concurrent_replays', sa.Integer(), nullable=True))
    op.add_column('tiers', sa.Column('max_upload_mb', sa.Integer(), nullable=True))
    tiers = sa.table("tiers", sa.column("name", sa.String), *(sa.column(c, sa.Integer) for c in CAPS["free"]))
    for name, caps in CAPS.items():
        op.execute(tiers.update().where(tiers.c.name == name).values(**caps))


def downgrade() -> None:
    op.drop_column('tiers', 'max_upload_mb')
    op.drop_column('tiers', 'max_concurrent_replays')
    op.drop_column('tiers', 'max_replay_steps')
