"""api keys: several per account, with a name and their last use; sessions tied to their key

Revision ID: 0008_review
Revises: 0007_review
Create Date: 2026-12-06 04:10:00.000000

Each account's existing key hash moves into `api_keys` (named "default"), so every key that
worked before works after; console sessions open at the time are tied to it. Deleting a key
(revoking it) moves the credentials generation (migration 0006), which every process checks
its cached keys against (accounts/cache.py).

Expand, then contract: `accounts.api_key_hash` stays, nullable and no longer written, so that
processes of the previous release (which load it with every account) keep working during a
rolling upgrade; revoking a key clears it there too. The release after drops it
(docs/deploy.md). On SQLite, making it nullable rebuilds `accounts`. That is safe only with
foreign keys off, as they are on the migration's own connection (migrations/env.py sets no
pragma): with them on, dropping the old table would cascade into every account's rows. The
migration checks it and stops otherwise.
"""

import uuid

import sqlalchemy as sa
from alembic import op

import callvault.db

revision = "0008_review"
down_revision = "0007_review"
branch_labels = None
depends_on = None

FK_NAME = "fk_console_sessions_api_key_id_api_keys"
BUMP = "UPDATE credentials_generation SET value = value + 1 WHERE id = 1"

accounts = sa.table(
    "accounts",
    sa.column("id", sa.String()),
    sa.column("api_key_hash", sa.String()),
    sa.column("created_at", callvault.db.UTCDateTime(timezone=True)),
)
api_keys = sa.table(
    "api_keys",
    sa.column("id", sa.String()),
    sa.column("account_id", sa.String()),
    sa.column("name", sa.String()),
    sa.column("key_hash", sa.String()),
    sa.column("created_at", callvault.db.UTCDateTime(timezone=True)),
)
console_sessions = sa.table(
    "console_sessions", sa.column("account_id", sa.String()), sa.column("api_key_id", sa.String())
)


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _refuse_foreign_keys_on() -> None:
    if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("0008_review rebuilds accounts: run it with SQLite foreign keys off")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", callvault.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", callvault.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_api_keys_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_account_id"), "api_keys", ["account_id"], unique=False)
    if _is_sqlite():
        # an inline REFERENCES adds the column without rebuilding the table (as in 0002)
        op.execute(
            "ALTER TABLE console_sessions ADD COLUMN api_key_id VARCHAR(36) "
            f"CONSTRAINT {FK_NAME} REFERENCES api_keys (id) ON DELETE CASCADE"
        )
    else:
        op.add_column(
            "console_sessions", sa.Column("api_key_id", sa.String(length=36), nullable=True)
        )
        op.create_foreign_key(
            FK_NAME, "console_sessions", "api_keys", ["api_key_id"], ["id"], ondelete="CASCADE"
        )
    op.create_index(
        op.f("ix_console_sessions_api_key_id"), "console_sessions", ["api_key_id"], unique=False
    )

    bind = op.get_bind()
    for account_id, key_hash, created_at in bind.execute(
        sa.select(accounts.c.id, accounts.c.api_key_hash, accounts.c.created_at)
    ).all():
        key_id = str(uuid.uuid4())
        bind.execute(
            api_keys.insert().values(
                id=key_id,
                account_id=account_id,
                name="default",
                key_hash=key_hash,
                created_at=created_at,
            )
        )
        bind.execute(
            console_sessions.update()
            .where(console_sessions.c.account_id == account_id)
            .values(api_key_id=key_id)
        )

    if _is_sqlite():
        _refuse_foreign_keys_on()
        with op.batch_alter_table("accounts") as batch_op:
            batch_op.alter_column("api_key_hash", existing_type=sa.String(64), nullable=True)
        op.execute(
            f"CREATE TRIGGER api_keys_generation_delete AFTER DELETE ON api_keys BEGIN {BUMP}; END"
        )
    else:
        op.alter_column("accounts", "api_key_hash", existing_type=sa.String(64), nullable=True)
        # the function of 0006
        op.execute(
            "CREATE TRIGGER api_keys_generation_bump AFTER DELETE ON api_keys "
            "FOR EACH STATEMENT EXECUTE FUNCTION bump_credentials_generation()"
        )


def downgrade() -> None:
    # each account gets back its oldest remaining key; an account without one cannot sign in
    if _is_sqlite():
        op.execute("DROP TRIGGER api_keys_generation_delete")
    else:
        op.execute("DROP TRIGGER api_keys_generation_bump ON api_keys")
    op.execute(
        "UPDATE accounts SET api_key_hash = (SELECT key_hash FROM api_keys "
        "WHERE api_keys.account_id = accounts.id ORDER BY created_at, id LIMIT 1)"
    )
    op.drop_index(op.f("ix_console_sessions_api_key_id"), table_name="console_sessions")
    if _is_sqlite():
        _refuse_foreign_keys_on()
        with op.batch_alter_table("console_sessions") as batch_op:
            batch_op.drop_column("api_key_id")
    else:
        op.drop_constraint(FK_NAME, "console_sessions", type_="foreignkey")
        op.drop_column("console_sessions", "api_key_id")
    op.drop_index(op.f("ix_api_keys_account_id"), table_name="api_keys")
    op.drop_table("api_keys")
