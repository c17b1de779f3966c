"""The entry points' wiring of the domains: who hears of what (and, for the worker, which
jobs it runs). Only entry points import this module."""

from __future__ import annotations

from callvault.credentials import events as credential_events
from callvault.recordings.redelivery import requeue_for_new_credentials


def wire_domains() -> None:
    """New or replaced custom-storage credentials put the connection's failed recordings back
    on the queue (credentials announce; recordings act)."""
    credential_events.subscribe(requeue_for_new_credentials)
