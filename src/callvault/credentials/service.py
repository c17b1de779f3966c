"""Custom storage credentials: one sealed configuration per connection (Call Control application).

The configuration is stored as JSON sealed with the active encryption key and the connection id
as associated data, so a sealed value copied onto another connection's row does not open.
Secrets are write-only: answers mask them, and a PUT that sends a mask back keeps the secret.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.applications import repository as applications
from callvault.credentials import events, repository
from callvault.credentials.answers import answer_cache
from callvault.credentials.masking import masked_configuration, unmask
from callvault.credentials.models import ExternalId, StorageCredentials
from callvault.credentials.schemas import (
    AwsRoleSetup,
    CredentialsRequest,
    CredentialsResponse,
    ValidationResult,
)
from callvault.crypto import KeyRing
from callvault.db import transaction, utcnow
from callvault.errors import duplicate, invalid, not_found, unavailable
from callvault.generation import generation_reader
from callvault.outbound.addresses import refuse_reason
from callvault.runtime import Runtime
from callvault.storage import aws_roles
from callvault.storage.base import StorageError
from callvault.storage.configuration import CONNECTION_ID_KEY, EXTERNAL_ID_KEY
from callvault.storage.factory import open_custom_store
from callvault.storage.probe import probe_store
from callvault.storage.registry import BY_BACKEND
from callvault.storage.s3 import generic_bucket_error

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
    configuration = open_configuration(keyring, connection_id, row.configuration_sealed)
    return StoredCredentials(
        backend=row.backend,
        configuration=await _for_opening(session, row.backend, connection_id, configuration),
        revision=row.revision,
        account_id=row.account_id,
    )


def _uses_external_id(backend: str, configuration: dict[str, Any]) -> bool:
    provider = BY_BACKEND.get(backend)
    return provider is not None and provider.uses_external_id(configuration)


async def _for_opening(
    session: AsyncSession, backend: str, connection_id: str, configuration: dict[str, Any]
) -> dict[str, Any]:
    """The stored configuration plus what opening its store needs besides: for an assumed
    role, the connection's ExternalId and id (never stored in the configuration, never
    answered)."""
    if not _uses_external_id(backend, configuration):
        return configuration
    found = await repository.external_id(session, connection_id)
    return {
        **configuration,
        EXTERNAL_ID_KEY: found.external_id if found is not None else None,
        CONNECTION_ID_KEY: connection_id,
    }


def new_external_id() -> str:
    r"""AWS allows 2-1224 characters of [\w+=,.@:/-]; 128 random bits."""
    return f"callvault-{secrets.token_hex(16)}"


async def _ensure_external_id(session: AsyncSession, account_id: str, connection_id: str) -> str:
    found = await repository.external_id(session, connection_id)
    if found is not None:
        return found.external_id
    row = ExternalId(
        connection_id=connection_id,
        account_id=account_id,
        external_id=new_external_id(),
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row.external_id


def _connection_not_found() -> Exception:
    return not_found(pointer="/connection_id")


def _response(
    connection_id: str, backend: str, configuration: dict[str, Any]
) -> CredentialsResponse:
    provider = BY_BACKEND.get(backend)
    derived = provider.derived_fields(configuration) if provider is not None else {}
    return CredentialsResponse.build(
        connection_id, backend, {**masked_configuration(backend, configuration), **derived}
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
            if _uses_external_id(request.backend, configuration):
                await _ensure_external_id(session, account_id, connection_id)
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


async def retrieve_rendered(runtime: Runtime, account_id: str, connection_id: str) -> bytes:
    """`retrieve` as the JSON body of the answer, from the answer cache while the
    credentials generation has not moved (credentials/answers.py). The generation is read
    before the row: a change committed in between leaves the answer under the older one."""
    generation = await generation_reader(runtime).current()
    body = answer_cache(runtime).get(connection_id, account_id, generation)
    if body is None:
        response = await retrieve(runtime, account_id, connection_id)
        body = response.model_dump_json(exclude_none=True).encode()
        answer_cache(runtime).put(connection_id, account_id, generation, body)
    return body


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
        if _uses_external_id(request.backend, configuration):
            await _ensure_external_id(session, account_id, connection_id)
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
        configuration = await _for_opening(
            session,
            row.backend,
            connection_id,
            open_configuration(runtime.settings.keyring, connection_id, row.configuration_sealed),
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


async def aws_role_setup(
    runtime: Runtime, account_id: str, connection_id: str, bucket: str | None
) -> AwsRoleSetup:
    """What a customer needs to let callvault assume a role: the connection's ExternalId (made
    now if it has none yet; works before any credentials exist), callvault's principal, the
    trust policy and the least-privilege bucket policy."""
    if bucket is not None and (reason := generic_bucket_error(bucket)) is not None:
        raise invalid(f"bucket: {reason}", parameter="bucket")
    try:
        async with transaction(runtime.sessions) as session:
            if await applications.for_account(session, account_id, connection_id) is None:
                raise _connection_not_found()
            external_id = await _ensure_external_id(session, account_id, connection_id)
    except IntegrityError:  # a concurrent request made it first
        async with runtime.sessions() as session:
            found = await repository.external_id(session, connection_id)
        if found is None:
            raise
        external_id = found.external_id
    # callvault's own identity: asked of AWS_ENDPOINT_URL_STS or AWS's STS, never of a
    # customer's s3-generic endpoint (no operator-signed request to an address nobody checked)
    try:
        principal = await asyncio.to_thread(aws_roles.principal_arn)
    except aws_roles.RoleError as exc:
        # the operator's setup, not the customer's request: answered as unavailable
        raise unavailable(exc.reason) from None
    return AwsRoleSetup(
        external_id=external_id,
        principal_arn=principal,
        trust_policy=aws_roles.trust_policy(principal, external_id),
        permissions_policy=aws_roles.permissions_policy(bucket),
    )
