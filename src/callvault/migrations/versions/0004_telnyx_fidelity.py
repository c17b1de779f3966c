"""Telnyx fidelity: recording call facts and filter indexes, every application field, the
webhook delivery record of each attempt.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import callvault.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RECORDING_FILTERED = (
    "call_control_id",
    "call_leg_id",
    "call_session_id",
    "conference_id",
    "conference_region",
    "from_number",
    "to_number",
    "sip_call_id",
    "recording_started_at",
    "recording_ended_at",
)


def upgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("from_number", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("to_number", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("conference_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("conference_region", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("initiated_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("sip_call_id", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), server_default="call", nullable=False)
        )
        for column in RECORDING_FILTERED:
            batch_op.create_index(
                f"ix_recordings_account_{column}", ["account_id", column], unique=False
            )

    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "anchorsite_override",
                sa.String(length=32),
                server_default="Latency",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "call_cost_in_webhooks", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("dtmf_type", sa.String(length=16), server_default="RFC 2833", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "first_command_timeout", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "first_command_timeout_secs", sa.Integer(), server_default="30", nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "redact_dtmf_debug_logging", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("tags", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )
        batch_op.add_column(sa.Column("inbound_channel_limit", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "inbound_shaken_stir_enabled",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("inbound_sip_subdomain", sa.String(length=63), nullable=True))
        batch_op.add_column(
            sa.Column(
                "inbound_sip_subdomain_receive_settings",
                sa.String(length=32),
                server_default="from_anyone",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("outbound_channel_limit", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("outbound_voice_profile_id", sa.String(length=24), nullable=True)
        )
        batch_op.create_index(
            "ix_applications_account_outbound_profile",
            ["account_id", "outbound_voice_profile_id"],
            unique=False,
        )

    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("started_at", callvault.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("finished_at", callvault.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("request_headers", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("response_headers", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("response_body", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        for column in (
            "response_body",
            "response_headers",
            "request_headers",
            "finished_at",
            "started_at",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_index("ix_applications_account_outbound_profile")
        for column in (
            "outbound_voice_profile_id",
            "outbound_channel_limit",
            "inbound_sip_subdomain_receive_settings",
            "inbound_sip_subdomain",
            "inbound_shaken_stir_enabled",
            "inbound_channel_limit",
            "tags",
            "redact_dtmf_debug_logging",
            "first_command_timeout_secs",
            "first_command_timeout",
            "dtmf_type",
            "call_cost_in_webhooks",
            "anchorsite_override",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        for column in RECORDING_FILTERED:
            batch_op.drop_index(f"ix_recordings_account_{column}")
        for column in (
            "source",
            "sip_call_id",
            "initiated_by",
            "conference_region",
            "conference_id",
            "to_number",
            "from_number",
        ):
            batch_op.drop_column(column)
