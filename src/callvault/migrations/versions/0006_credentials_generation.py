"""credentials generation: a counter every change to storage_credentials bumps

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 23:00:00.000000

The API caches rendered GET /v2/custom_storage_credentials answers against this counter
(credentials/answers.py). Triggers bump it, so every writer is covered — any process, the
CLI, and the rows an application's or account's deletion cascades away. A later migration
that rebuilds storage_credentials on SQLite (batch "move and copy") drops these triggers and
must create them again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BUMP = "UPDATE credentials_generation SET value = value + 1 WHERE id = 1"
SQLITE_EVENTS = ("insert", "update", "delete")


def upgrade() -> None:
    op.create_table(
        "credentials_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials_generation")),
    )
    op.execute("INSERT INTO credentials_generation (id, value) VALUES (1, 0)")
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION bump_credentials_generation() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER credentials_generation_bump "
            "AFTER INSERT OR UPDATE OR DELETE ON storage_credentials "
            "FOR EACH STATEMENT EXECUTE FUNCTION bump_credentials_generation()"
        )
    else:
        for event in SQLITE_EVENTS:
            op.execute(
                f"CREATE TRIGGER credentials_generation_{event} AFTER {event.upper()} "
                f"ON storage_credentials BEGIN {BUMP}; END"
            )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER credentials_generation_bump ON storage_credentials")
        op.execute("DROP FUNCTION bump_credentials_generation()")
    else:
        for event in SQLITE_EVENTS:
            op.execute(f"DROP TRIGGER credentials_generation_{event}")
    op.drop_table("credentials_generation")
