"""Custom storage credentials: one sealed configuration per connection (Call Control application).

The configuration is stored as JSON sealed with the active encryption key and the connection id
as associated data, so a sealed value copied onto another connection's row does not open.
Secrets are write-only: answers mask them, and a PUT that sends a mask back keeps the secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.applications import repository as applications
from callvault.credentials import events, repository
from callvault.credentials.encryption import KeyRing
from callvault.credentials.masking import masked_configuration, unmask
from callvault.credentials.models import StorageCredentials
from callvault.credentials.schemas import CredentialsRequest, CredentialsResponse, ValidationResult
from callvault.db import transaction, utcnow
from callvault.errors import duplicate, invalid, not_found
from callvault.outbound.addresses import refuse_reason
from callvault.runtime import Runtime
from callvault.storage.base import StorageError
from callvault.storage.factory import open_custom_store
from callvault.storage.probe import probe_store

PROBE_TIMEOUT_SECS = 15


@dataclass(frozen=True)
class StoredCredentials:
    """A connection's storage settings, decrypted, for the pipeline."""

    backend: str
    configuration: dict[str, Any]  # the backend's fields (bucket, region, secrets...), no backend
    revision: int
    account_id: str


def seal_configuration(keyring: KeyRing, connection_id: str, configuration: dict[str, Any]) -> str:
    plaintext = json.dumps(configuration, sort_keys=True, separators=(",", ":")).encode()
    return keyring.seal(plaintext, connection_id)


def open_configuration(keyring: KeyRing, connection_id: str, sealed: str) -> dict[str, Any]:
    configuration: dict[str, Any] = json.loads(keyring.open(sealed, connection_id))
    return configuration


async def load_configuration(
    session: AsyncSession, keyring: KeyRing, connection_id: str
) -> StoredCredentials | None:
    """The decrypted storage settings of `connection_id`, or None when it has none."""
    row = await repository.by_connection(session, connection_id)
    if row is None:
        return None
    return StoredCredentials(
        backend=row.backend,
        configuration=open_configuration(keyring, connection_id, row.configuration_sealed),
        revision=row.revision,
        account_id=row.account_id,
    )


def _connection_not_found() -> Exception:
    return not_found(pointer="/connection_id")


def _response(
    connection_id: str, backend: str, configuration: dict[str, Any]
) -> CredentialsResponse:
    return CredentialsResponse.build(
        connection_id, backend, masked_configuration(backend, configuration)
    )


async def _owned_row(
    session: AsyncSession, account_id: str, connection_id: str
) -> StorageCredentials | None:
    """The connection's credentials row; 404 when the connection is not the account's."""
    if await applications.for_account(session, account_id, connection_id) is None:
        raise _connection_not_found()
    return await repository.for_account(session, account_id, connection_id)


def _resolved_configuration(
    keyring: KeyRing,
    connection_id: str,
    request: CredentialsRequest,
    existing: StorageCredentials | None,
) -> dict[str, Any]:
    """The configuration to store: masks sent back replaced by the stored secrets."""
    stored = (
        open_configuration(keyring, connection_id, existing.configuration_sealed)
        if existing is not None
        else None
    )
    configuration, unresolved = unmask(request.backend, request.configuration_fields(), stored)
    if unresolved:
        name = unresolved[0]
        raise invalid(
            f"{name} is a masked value that does not match the stored secret: send the full "
            "secret (a masked value is accepted only as answered by GET, to keep the secret)",
            pointer=f"/configuration/{name}",
        )
    return configuration


async def _check_endpoint(runtime: Runtime, configuration: dict[str, Any]) -> None:
    endpoint = configuration.get("endpoint")
    if isinstance(endpoint, str):
        reason = await refuse_reason(
            endpoint, allow_private=runtime.settings.allow_private_networks
        )
        if reason is not None:
            raise invalid(f"endpoint: {reason}", pointer="/configuration/endpoint")


async def create(
    runtime: Runtime, account_id: str, connection_id: str, request: CredentialsRequest
) -> CredentialsResponse:
    """Store the first configuration of a connection; 409 when it has one (use PUT)."""
    keyring = runtime.settings.keyring
    async with runtime.sessions() as session:
        if await _owned_row(session, account_id, connection_id) is not None:
            raise _already_exists()
    configuration = _resolved_configuration(keyring, connection_id, request, None)
    # resolving the endpoint's name happens outside the write transaction
    await _check_endpoint(runtime, configuration)
    now = utcnow()
    try:
        async with transaction(runtime.sessions) as session:
            if await _owned_row(session, account_id, connection_id) is not None:
                raise _already_exists()
            await repository.add(
                session,
                StorageCredentials(
                    connection_id=connection_id,
                    account_id=account_id,
                    backend=request.backend,
                    configuration_sealed=seal_configuration(keyring, connection_id, configuration),
                    revision=1,
                    created_at=now,
                    updated_at=now,
                ),
            )
    except IntegrityError:  # a concurrent POST for the same connection won
        raise _already_exists() from None
    await events.on_credentials_replaced(runtime, connection_id, created=True)
    return _response(connection_id, request.backend, configuration)


def _already_exists() -> Exception:
    return duplicate(
        "This connection already has custom storage credentials: replace them with PUT.",
        pointer="/connection_id",
    )


async def retrieve(runtime: Runtime, account_id: str, connection_id: str) -> CredentialsResponse:
    keyring = runtime.settings.keyring
    async with runtime.sessions() as session:
        # one query: the row names its account and goes with its application (ON DELETE
        # CASCADE), and a missing application answers the same 404 as missing credentials
        row = await repository.for_account(session, account_id, connection_id)
    if row is None:
        raise _connection_not_found()
    configuration = open_configuration(keyring, connection_id, row.configuration_sealed)
    return _response(connection_id, row.backend, configuration)


async def replace(
    runtime: Runtime, account_id: str, connection_id: str, request: CredentialsRequest
) -> CredentialsResponse:
    """Replace the whole configuration (404 when there is none), bump the revision."""
    keyring = runtime.settings.keyring
    async with runtime.sessions() as session:
        row = await _owned_row(session, account_id, connection_id)
    if row is None:
        raise _connection_not_found()
    configuration = _resolved_configuration(keyring, connection_id, request, row)
    await _check_endpoint(runtime, configuration)
    async with transaction(runtime.sessions) as session:
        row = await _owned_row(session, account_id, connection_id)
        if row is None:
            raise _connection_not_found()
        # resolved again against the row as it is now, in case another PUT came in between
        configuration = _resolved_configuration(keyring, connection_id, request, row)
        row.backend = request.backend
        row.configuration_sealed = seal_configuration(keyring, connection_id, configuration)
        row.revision += 1
        row.updated_at = utcnow()
        await session.flush()
    await events.on_credentials_replaced(runtime, connection_id)
    return _response(connection_id, request.backend, configuration)


async def delete(runtime: Runtime, account_id: str, connection_id: str) -> None:
    async with transaction(runtime.sessions) as session:
        row = await _owned_row(session, account_id, connection_id)
        if row is None:
            raise _connection_not_found()
        await repository.delete(session, row)


async def validate(runtime: Runtime, account_id: str, connection_id: str) -> ValidationResult:
    """Probe the stored configuration live: write, read back and delete a small object."""
    async with runtime.sessions() as session:
        row = await _owned_row(session, account_id, connection_id)
    if row is None:
        raise _connection_not_found()
    configuration = open_configuration(
        runtime.settings.keyring, connection_id, row.configuration_sealed
    )
    endpoint = configuration.get("endpoint")
    if isinstance(endpoint, str):
        # the name may resolve elsewhere now than when it was saved
        reason = await refuse_reason(
            endpoint, allow_private=runtime.settings.allow_private_networks
        )
        if reason is not None:
            return ValidationResult(status="failed", detail=f"endpoint: {reason}")
    try:
        store = open_custom_store(
            row.backend,
            configuration,
            timeout_secs=PROBE_TIMEOUT_SECS,
            allow_private_networks=runtime.settings.allow_private_networks,
        )
    except StorageError as exc:
        return ValidationResult(status="failed", detail=exc.reason)
    reason = await probe_store(store, timeout_secs=PROBE_TIMEOUT_SECS)
    if reason is not None:
        return ValidationResult(status="failed", detail=reason)
    return ValidationResult(status="ok")
