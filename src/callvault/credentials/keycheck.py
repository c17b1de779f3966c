"""Do the configured encryption keys open the stored data? Checked at start (`serve`, `worker`
refuse to run when not) and by `GET /ready`.

Every sealed value names its key (`{key_id}:…`, encryption.py). The check lists the key ids
the data uses, refuses one that CALLVAULT_ENCRYPTION_KEYS does not hold — naming it — and
opens one value per key id, which proves the key behind an id is the right one. A database
without sealed values passes: there is nothing the keys could fail to open yet.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.credentials.rotation import SEALED_COLUMNS
from callvault.crypto import KeyError_, KeyRing, key_id_for

KEY_ID_CHARS = 12  # key_id_for(): the first 12 hex digits of a sha256


class KeysDoNotOpenData(Exception):
    """The message is one line naming the key id and the fix."""


async def check_keys(session: AsyncSession, keyring: KeyRing) -> None:
    configured = {key_id_for(key) for key in keyring.keys}
    for column in SEALED_COLUMNS:
        key_ids = (
            await session.scalars(
                select(func.substr(column.sealed_column, 1, KEY_ID_CHARS)).distinct()
            )
        ).all()
        for key_id in key_ids:
            if key_id not in configured:
                raise KeysDoNotOpenData(
                    f"the stored {column.label} are sealed with encryption key id {key_id}, "
                    "which CALLVAULT_ENCRYPTION_KEYS does not hold: configure the keys this "
                    "data was written with (the active one first)"
                )
            row_id, sealed = (
                await session.execute(
                    select(column.id_column, column.sealed_column)
                    .where(column.sealed_column.startswith(key_id + ":"))
                    .limit(1)
                )
            ).one()
            try:
                keyring.open(sealed, row_id)
            except (KeyError_, InvalidTag, ValueError):
                raise KeysDoNotOpenData(
                    f"encryption key id {key_id} does not open the stored {column.label} "
                    f"(row {row_id}): the data was written with other keys"
                ) from None
