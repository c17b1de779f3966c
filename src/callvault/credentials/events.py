"""What happens when a connection's storage credentials change."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from callvault.runtime import Runtime


async def on_credentials_replaced(
    runtime: Runtime, connection_id: str, *, created: bool = False
) -> None:
    """Recordings kept in the default store after a permanent failure are retried here.

    Called by the API after a POST created (`created`) or a PUT replaced the credentials of `connection_id` and the new
    revision is committed. Failed recordings whose credentials_revision differs from the stored
    one go back to `received` (worker/redelivery.py) and the worker is woken.
    """
    from callvault.worker.redelivery import requeue_for_new_credentials

    await requeue_for_new_credentials(runtime, connection_id, created=created)
