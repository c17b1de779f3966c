"""What happens when a connection's storage credentials change.

Credentials only announce the change; who acts on it (recordings: failed recordings go back to
the queue) is wired by the entry point (`subscribe`), so credentials import no other domain.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from callvault.runtime import Runtime


class CredentialsReplaced(Protocol):
    def __call__(
        self, runtime: Runtime, connection_id: str, *, created: bool = False
    ) -> Awaitable[object]: ...


_listeners: list[CredentialsReplaced] = []


def subscribe(listener: CredentialsReplaced) -> None:
    """Have `listener` told of every committed change (once, however often it subscribes)."""
    if listener not in _listeners:
        _listeners.append(listener)


async def on_credentials_replaced(
    runtime: Runtime, connection_id: str, *, created: bool = False
) -> None:
    """Called by the API once a POST created (`created`) or a PUT replaced the credentials of
    `connection_id` is committed; the listeners run in the order they subscribed."""
    for listener in _listeners:
        await listener(runtime, connection_id, created=created)
