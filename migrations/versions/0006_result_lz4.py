"""jobs.result is compressed with lz4 instead of pglz (issue 26: the hot path)

A pi0 job's result (a 50-step chunk, its original and the safety report) is about 38 KB of JSON, over
PostgreSQL's TOAST threshold, so every job's final UPDATE compresses it. pglz took about 1.3 ms of the safety
stage's critical path per job on the development VM; lz4 compresses as well for this data in a fraction of
the time (docs/benchmarks.md, issue 26). Only values written from now on use lz4; old rows keep pglz and read
as before. A server built without lz4 (`--with-lz4` is standard in PostgreSQL >= 14 packages, not in every
build) keeps pglz: the upgrade says so and goes on, since nothing depends on it but speed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 23:00:00
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_SET = """
DO $$
BEGIN
    ALTER TABLE jobs ALTER COLUMN result SET COMPRESSION {method};
EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
    RAISE NOTICE 'jobs.result keeps the default compression: %', SQLERRM;
END
$$;
"""


def upgrade() -> None:
    op.execute(_SET.format(method="lz4"))


def downgrade() -> None:
    op.execute(_SET.format(method="pglz"))
