"""keyless access: the ExternalId callvault generates per connection

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:30:00
"""

import sqlalchemy as sa
from alembic import op

import callvault.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "storage_external_ids",
        sa.Column("connection_id", sa.String(length=24), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("external_id", sa.String(length=96), nullable=False),
        sa.Column("created_at", callvault.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_storage_external_ids_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["applications.id"],
            name=op.f("fk_storage_external_ids_connection_id_applications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_storage_external_ids")),
        sa.UniqueConstraint("external_id", name=op.f("uq_storage_external_ids_external_id")),
    )


def downgrade() -> None:
    op.drop_table("storage_external_ids")
