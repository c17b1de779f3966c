"""Re-encrypting every secret at rest under the active key, so old keys can be retired.

Sealed values name their key (`{key_id}:...`), so rotation is: put the new key first in
CALLVAULT_ENCRYPTION_KEYS (old ones after it, still readable) on every process, re-seal every
value that is not under the active key, then drop the old keys. Rows are handled in batches of
one short transaction each, so the API keeps serving meanwhile; each write is a compare-and-swap
on the old sealed value, so a credentials PUT that lands mid-rotation is never overwritten with
the older configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from callvault.accounts.models import Account
from callvault.credentials.models import StorageCredentials
from callvault.crypto import KeyError_, KeyRing
from callvault.db import transaction

DEFAULT_BATCH_SIZE = 200


@dataclass(frozen=True)
class SealedColumn:
    """A column of sealed values: the row's id is the associated data it was sealed with."""

    label: str
    model: Any
    id_column: InstrumentedAttribute[str]
    sealed_column: InstrumentedAttribute[str]
    # columns to write back unchanged, so `onupdate` hooks do not mark the row as edited
    keep_columns: tuple[str, ...] = ()


SEALED_COLUMNS = (
    SealedColumn(
        "storage credentials",
        StorageCredentials,
        StorageCredentials.connection_id,
        StorageCredentials.configuration_sealed,
        keep_columns=("updated_at",),
    ),
    SealedColumn("webhook signing keys", Account, Account.id, Account.webhook_private_key_sealed),
)


@dataclass
class RotationReport:
    rotated: int = 0
    already_current: int = 0
    # rows changed by someone else between our read and our write: they were re-read next pass
    raced: int = 0
    # (table label, row id) of values no configured key opens: left untouched, never guessed at
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unreadable


Progress = Callable[[int], None]


async def count_rows(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        total = 0
        for column in SEALED_COLUMNS:
            total += int(await session.scalar(select(func.count()).select_from(column.model)) or 0)
        return total


async def rotate_all(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> RotationReport:
    """Re-seal every sealed value under `keyring`'s active key; `progress(n)` after each batch."""
    report = RotationReport()
    for column in SEALED_COLUMNS:
        await _rotate_column(sessions, keyring, column, batch_size, report, progress)
    return report


async def _rotate_column(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    column: SealedColumn,
    batch_size: int,
    report: RotationReport,
    progress: Progress | None,
) -> None:
    after = ""
    while True:
        async with transaction(sessions) as session:
            # keyset pagination on the primary key: stable while rows are added or deleted
            rows = (
                await session.execute(
                    select(column.id_column, column.sealed_column)
                    .where(column.id_column > after)
                    .order_by(column.id_column)
                    .limit(batch_size)
                )
            ).all()
            if not rows:
                return
            for row_id, sealed in rows:
                await _rotate_one(session, keyring, column, row_id, sealed, report)
            after = rows[-1][0]
        if progress is not None:
            progress(len(rows))


async def _rotate_one(
    session: AsyncSession,
    keyring: KeyRing,
    column: SealedColumn,
    row_id: str,
    sealed: str,
    report: RotationReport,
) -> None:
    while True:
        if not keyring.needs_rotation(sealed):
            report.already_current += 1
            return
        try:
            plaintext = keyring.open(sealed, row_id)
        except (KeyError_, InvalidTag, ValueError):
            report.unreadable.append((column.label, row_id))
            return
        resealed = keyring.seal(plaintext, row_id)
        kept = {name: getattr(column.model, name) for name in column.keep_columns}
        result = await session.execute(
            update(column.model)
            .where(column.id_column == row_id, column.sealed_column == sealed)
            .values({column.sealed_column.key: resealed, **kept})
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            report.rotated += 1
            return
        # changed (or deleted) since we read it: read the current value and try again
        report.raced += 1
        current = await session.scalar(
            select(column.sealed_column).where(column.id_column == row_id)
        )
        if current is None:
            return
        sealed = current
