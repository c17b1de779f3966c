"""Write-only secrets: how a stored secret is shown, and how a shown value is recognised.

GET answers every secret field with all but its last 4 characters replaced by `*`, so a customer
can tell which key is configured without the API ever handing the key out. A PUT that sends
such a masked value back unchanged keeps the stored secret, so read-modify-write clients (and
the SDK's update after a retrieve) work without knowing the secret. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MASK_CHAR = "*"
VISIBLE_CHARS = 4
# a secret this short would be given away by its last 4 characters: mask it whole
MIN_LENGTH_TO_SHOW_TAIL = 12

# aws_access_key_id is not a secret (AWS prints it in logs and consoles, and customers need it to
# tell which key is configured): it is answered in clear
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "s3": ("aws_secret_access_key",),
    "s3-generic": ("aws_secret_access_key",),
    "gcs": ("credentials",),
    "azure": ("account_key",),
}


def mask(secret: str) -> str:
    """`secret` with all but its last 4 characters replaced by `*` (all of it when short)."""
    if len(secret) < MIN_LENGTH_TO_SHOW_TAIL:
        return MASK_CHAR * len(secret)
    return MASK_CHAR * (len(secret) - VISIBLE_CHARS) + secret[-VISIBLE_CHARS:]


def looks_masked(value: str) -> bool:
    """True for a value that is a mask rather than a secret (it starts with `****`)."""
    return value.startswith(MASK_CHAR * VISIBLE_CHARS)


def masked_configuration(backend: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `configuration` fit to answer: every secret field masked."""
    secrets = SECRET_FIELDS.get(backend, ())
    return {
        name: mask(value) if name in secrets and isinstance(value, str) else value
        for name, value in configuration.items()
    }


def unmask(
    backend: str, submitted: Mapping[str, Any], stored: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """Put the stored secrets back where `submitted` carries their masks.

    Returns the configuration to store and the names of secret fields whose value looks masked
    but is not the mask of the stored secret (the caller answers 422 for those).
    """
    resolved = dict(submitted)
    unresolved: list[str] = []
    for name in SECRET_FIELDS.get(backend, ()):
        value = submitted.get(name)
        if not isinstance(value, str) or not looks_masked(value):
            continue
        previous = stored.get(name) if stored is not None else None
        if isinstance(previous, str) and mask(previous) == value:
            resolved[name] = previous
        else:
            unresolved.append(name)
    return resolved, unresolved
