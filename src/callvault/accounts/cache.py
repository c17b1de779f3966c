"""Accounts by API-key hash, kept for a short time: every /v2 request authenticates, and
looking the key up in the database was a third of the CPU of a simple GET (bench/README in
docs/performance.md).

Entries live `ttl_secs` (60 s) and at most `max_entries` are kept (oldest out first), so memory
stays bounded whatever keys are tried; failed lookups are never cached. API keys cannot be
revoked or rotated today; whatever revokes one must call `forget` (or `clear`) in every
process, or accept that a revoked key keeps working for up to `ttl_secs`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from callvault.accounts.models import Account

DEFAULT_TTL_SECS = 60.0
DEFAULT_MAX_ENTRIES = 1024


class AccountCache:
    def __init__(
        self,
        ttl_secs: float = DEFAULT_TTL_SECS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_secs = ttl_secs
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Account]] = OrderedDict()

    def get(self, api_key_hash: str) -> Account | None:
        entry = self._entries.get(api_key_hash)
        if entry is None:
            return None
        expires, account = entry
        if self._clock() >= expires:
            del self._entries[api_key_hash]
            return None
        return account

    def put(self, api_key_hash: str, account: Account) -> None:
        self._entries[api_key_hash] = (self._clock() + self.ttl_secs, account)
        self._entries.move_to_end(api_key_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, api_key_hash: str) -> None:
        self._entries.pop(api_key_hash, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
