"""Rendered `GET /v2/custom_storage_credentials/{id}` answers, served while the credentials
generation stays what it was when they were rendered.

Why: the GET cost 5-8 times the CPU of `GET /health` (a read through SQLite's thread, the AES-GCM
open, masking, the response model; docs/performance.md). Served from here it costs one read of
the generation — on SQLite a few microseconds on the event loop (db.LoopReader).

Why a generation and not invalidation calls: database triggers bump it on every insert,
update and delete of storage_credentials (migration 0006), so every writer is seen — another
`serve` process, the CLI, the rows an application's or account's deletion cascades away —
and an answer never outlives the row it was rendered from. The generation is read *before*
the row: a change committed in between leaves the entry labelled with the older generation,
so it is never served. Each entry names its account: another account's key never gets it.
Bounded, oldest out first; only masked answers are held (never a secret in clear)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from callvault.runtime import Runtime

DEFAULT_MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Answer:
    account_id: str
    generation: int
    body: bytes


class AnswerCache:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Answer] = OrderedDict()

    def get(self, connection_id: str, account_id: str, generation: int) -> bytes | None:
        answer = self._entries.get(connection_id)
        if answer is None or answer.account_id != account_id:
            return None
        if answer.generation != generation:
            del self._entries[connection_id]
            return None
        return answer.body

    def put(self, connection_id: str, account_id: str, generation: int, body: bytes) -> None:
        self._entries[connection_id] = Answer(account_id, generation, body)
        self._entries.move_to_end(connection_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def answer_cache(runtime: Runtime) -> AnswerCache:
    """This process's rendered answers, kept with its runtime (runtime.py `domain_part`)."""
    return runtime.domain_part(AnswerCache, _new_answer_cache)


def _new_answer_cache(_runtime: Runtime) -> AnswerCache:
    return AnswerCache()
