"""API keys looked up, kept for a short time: every /v2 request authenticates, and looking the
key up in the database was a third of the CPU of a simple GET (bench/README in
docs/performance.md).

Entries live `ttl_secs` (60 s) and at most `max_entries` are kept (oldest out first), so memory
stays bounded whatever keys are tried; failed lookups are never cached. Each entry carries the
credentials generation read *before* the key was looked up, and counts only while the
generation is still that one: revoking a key deletes its row, and a database trigger moves the
generation (migration 0008_review). A request checks against a generation read that started at
most `REVOCATION_LAG_SECS` before it (generation.py `recent`: on SQLite read on the
loop every time, on PostgreSQL one shared round trip per second at most, not one per request),
and whatever revokes a key waits that long before it says "revoked" — so from then on every
process refuses the key.

It also remembers when this process last wrote a key's `last_used_at`, so that the column is
written at most once per `USE_MARK_SECS` per key and process, not on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from callvault.accounts.models import KeyHolder
from callvault.runtime import Runtime

DEFAULT_TTL_SECS = 60.0
DEFAULT_MAX_ENTRIES = 1024
USE_MARK_SECS = 60.0
# how old the generation a cached key is checked against may be; revocations wait this long
REVOCATION_LAG_SECS = 1.0


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
        self._entries: OrderedDict[str, tuple[float, int, KeyHolder]] = OrderedDict()
        self._marked: OrderedDict[str, float] = OrderedDict()

    def get(self, api_key_hash: str, generation: int) -> KeyHolder | None:
        entry = self._entries.get(api_key_hash)
        if entry is None:
            return None
        expires, cached_generation, holder = entry
        if self._clock() >= expires or cached_generation != generation:
            del self._entries[api_key_hash]
            return None
        return holder

    def put(self, api_key_hash: str, holder: KeyHolder, generation: int) -> None:
        self._entries[api_key_hash] = (self._clock() + self.ttl_secs, generation, holder)
        self._entries.move_to_end(api_key_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, api_key_hash: str) -> None:
        self._entries.pop(api_key_hash, None)

    def clear(self) -> None:
        self._entries.clear()

    def use_mark_due(self, key_id: str) -> bool:
        """True (and noted) when this process has not written the key's last use for a minute."""
        now = self._clock()
        last = self._marked.get(key_id)
        if last is not None and now - last < USE_MARK_SECS:
            return False
        self._marked[key_id] = now
        self._marked.move_to_end(key_id)
        while len(self._marked) > self.max_entries:
            self._marked.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._entries)


def account_cache(runtime: Runtime) -> AccountCache:
    """This process's API-key cache, kept with its runtime (runtime.py `domain_part`)."""
    return runtime.domain_part(AccountCache, _new_account_cache)


def _new_account_cache(_runtime: Runtime) -> AccountCache:
    return AccountCache()
