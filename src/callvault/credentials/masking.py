"""Write-only secrets: how a stored secret is shown, and how a shown value is recognised.

GET answers every secret field with all but its last 4 characters replaced by `*`, so a customer
can tell which key is configured without the API ever handing the key out. A PUT that sends
such a masked value back unchanged keeps the stored secret, so read-modify-write clients (and
the SDK's update after a retrieve) work without knowing the secret. Pure functions; which fields
are secret is each provider's to say (storage/registry.py), the rule itself is in
storage/configuration.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callvault.storage.configuration import looks_masked, mask
from callvault.storage.registry import BY_BACKEND

__all__ = ["looks_masked", "mask", "masked_configuration", "secret_fields", "unmask"]


def secret_fields(backend: str) -> tuple[str, ...]:
    provider = BY_BACKEND.get(backend)
    return provider.secret_fields if provider is not None else ()


def masked_configuration(backend: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `configuration` fit to answer: every secret field masked."""
    provider = BY_BACKEND.get(backend)
    if provider is None:
        return dict(configuration)
    return provider.masked(configuration)


def unmask(
    backend: str, submitted: Mapping[str, Any], stored: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """Put the stored secrets back where `submitted` carries their masks.

    Returns the configuration to store and the names of secret fields whose value looks masked
    but is not the mask of the stored secret (the caller answers 422 for those).
    """
    resolved = dict(submitted)
    unresolved: list[str] = []
    for name in secret_fields(backend):
        value = submitted.get(name)
        if not isinstance(value, str) or not looks_masked(value):
            continue
        previous = stored.get(name) if stored is not None else None
        if isinstance(previous, str) and mask(previous) == value:
            resolved[name] = previous
        else:
            unresolved.append(name)
    return resolved, unresolved
