"""work rows keep the time of their last error (shown with it by the API)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.db import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORK_TABLES = ("datasets", "jobs", "evaluations", "events", "deliveries")


def upgrade() -> None:
    for table in WORK_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("last_error_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in WORK_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("last_error_at")
