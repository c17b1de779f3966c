"""The decrypted storage settings a worker uploads with, held per connection and labelled
with the credentials generation (migration 0006: triggers bump it on every insert, update or
delete of storage_credentials, whoever makes it) read *before* the row. Reused while the
generation is unchanged, so a recording costs no credentials read; never reused after any
change (another process, the CLI, a cascade, a key rotation re-sealing the row).

Only where the generation is read on the event loop (SQLite: generation.py
`now()`, microseconds). On PostgreSQL that read would cost the round trip it saves, so every
upload reads the row, as before.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncSession

from callvault.credentials.service import StoredCredentials, load_configuration
from callvault.crypto import KeyRing
from callvault.generation import GenerationReader

HELD_CONNECTIONS = 1024


class HeldCredentials:
    def __init__(
        self, generation: GenerationReader, keyring: KeyRing, size: int = HELD_CONNECTIONS
    ) -> None:
        self._generation = generation
        self._keyring = keyring
        self._size = size
        self._held: OrderedDict[str, tuple[int, StoredCredentials | None]] = OrderedDict()

    async def load(self, session: AsyncSession, connection_id: str) -> StoredCredentials | None:
        """`load_configuration`, or what it gave at the current generation. `session` is only
        used (a statement run) when the row has to be read."""
        generation = self._generation.now()  # before the row: a change committing meanwhile
        if generation is not None:  # leaves the answer under an older generation
            held = self._held.get(connection_id)
            if held is not None and held[0] == generation:
                self._held.move_to_end(connection_id)
                return held[1]
        credentials = await load_configuration(session, self._keyring, connection_id)
        if generation is not None:
            self._held[connection_id] = (generation, credentials)
            self._held.move_to_end(connection_id)
            while len(self._held) > self._size:
                self._held.popitem(last=False)
        return credentials
