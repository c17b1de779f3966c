"""What happens when a connection's storage credentials change."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from callvault.runtime import Runtime


async def on_credentials_replaced(
    runtime: Runtime, connection_id: str, *, created: bool = False
) -> None:
    """Recordings kept in the default store after a permanent failure are retried here.

    Called by the API once a POST created (`created`) or a PUT replaced the credentials of
    `connection_id` is committed. Failed recordings go back to `received` (for a PUT, those
    that failed under an older revision; worker/redelivery.py) and the worker is woken.
    """
    from callvault.worker.redelivery import requeue_for_new_credentials

    await requeue_for_new_credentials(runtime, connection_id, created=created)
