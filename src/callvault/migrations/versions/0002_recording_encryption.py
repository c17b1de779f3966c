"""recording encryption: customers' public keys, the application's key, the recording's details

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:30:00
"""

import sqlalchemy as sa
from alembic import op

import callvault.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FK_NAME = "fk_applications_recording_encryption_key_id"  # the convention's is > 63 chars


def upgrade() -> None:
    op.create_table(
        "recording_encryption_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("key_size", sa.Integer(), nullable=False),
        sa.Column("created_at", callvault.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_recording_encryption_keys_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_encryption_keys")),
    )
    op.create_index(
        op.f("ix_recording_encryption_keys_account_id"),
        "recording_encryption_keys",
        ["account_id"],
        unique=False,
    )
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with an inline REFERENCES without rebuilding the table (a batch
        # rebuild would drop `applications`, which other tables reference)
        op.execute(
            "ALTER TABLE applications ADD COLUMN recording_encryption_key_id VARCHAR(36) "
            f"CONSTRAINT {FK_NAME} REFERENCES recording_encryption_keys (id)"
        )
    else:
        op.add_column(
            "applications",
            sa.Column("recording_encryption_key_id", sa.String(length=36), nullable=True),
        )
        op.create_foreign_key(
            FK_NAME,
            "applications",
            "recording_encryption_keys",
            ["recording_encryption_key_id"],
            ["id"],
        )
    op.create_index(
        op.f("ix_applications_recording_encryption_key_id"),
        "applications",
        ["recording_encryption_key_id"],
        unique=False,
    )
    op.add_column("recordings", sa.Column("encryption_details", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("recordings", "encryption_details")
    op.drop_index(op.f("ix_applications_recording_encryption_key_id"), table_name="applications")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("applications") as batch_op:
            batch_op.drop_column("recording_encryption_key_id")
    else:
        op.drop_constraint(FK_NAME, "applications", type_="foreignkey")
        op.drop_column("applications", "recording_encryption_key_id")
    op.drop_index(
        op.f("ix_recording_encryption_keys_account_id"), table_name="recording_encryption_keys"
    )
    op.drop_table("recording_encryption_keys")
