"""Keyless storage end to end on real servers: recordings through an assumed role (SeaweedFS
STS), the ExternalId enforced (moto with auth on), a container SAS (Azurite); sessions refreshed
when a bucket rejects them; precise failures; no session credential or SAS token in the
database, the logs or a response."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.credentials.service import load_configuration
from callvault.runtime import Runtime
from callvault.storage import aws_roles
from callvault.storage.base import StorageError, StorageErrorKind
from callvault.storage.factory import open_custom_store
from callvault.storage.probe import probe_store
from callvault.storage.s3 import RoleS3ObjectStore
from callvault.worker.runner import Worker
from tests.conftest import auth
from tests.credentials.test_at_rest import database_text
from tests.receiver import WebhookReceiver
from tests.security.test_secrets_never_logged import captured_logs
from tests.servers import Azurite, MotoWithAuth, SeaweedFSWithSTS
from tests.storage.environment import set_storage_env
from tests.worker.flow import (
    bearer,
    create_application,
    ingest,
    make_wav,
    recording_row,
    set_credentials,
    wait_for_status,
)

AUTH_REASON = "Failed to authorize with storage using custom credentials"


@pytest.fixture
def operator_identity(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """Set callvault's own AWS identity (the standard credential chain: env variables)."""

    def use(access_key: str, secret_key: str) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_PROFILE", raising=False)

    return use


@pytest.fixture(autouse=True)
def seaweed_sts_allowed(monkeypatch: pytest.MonkeyPatch, seaweedfs_sts: SeaweedFSWithSTS) -> None:
    """The operator allows SeaweedFS's STS (CALLVAULT_STS_ENDPOINTS): AssumeRole goes there."""
    set_storage_env(monkeypatch, "CALLVAULT_STS_ENDPOINTS", seaweedfs_sts.endpoint)


def seaweed_role(server: SeaweedFSWithSTS, **overrides: Any) -> dict[str, Any]:
    return {
        "bucket": server.bucket,
        "region": "us-east-1",
        "endpoint": server.endpoint,
        "role_arn": server.role_arn,
        **overrides,
    }


async def opening_configuration(runtime: Runtime, connection_id: str) -> dict[str, Any]:
    async with runtime.sessions() as session:
        stored = await load_configuration(session, runtime.settings.keyring, connection_id)
    assert stored is not None
    return stored.configuration


async def read_back(backend: str, configuration: dict[str, Any], key: str) -> bytes:
    store = open_custom_store(backend, configuration, allow_private_networks=True)
    return b"".join([chunk async for chunk in store.get_stream(key)])


async def test_recording_lands_in_seaweedfs_through_an_assumed_role(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs_sts: SeaweedFSWithSTS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Any],
    operator_identity: Callable[[str, str], None],
) -> None:
    operator_identity(seaweedfs_sts.operator_access_key, seaweedfs_sts.operator_secret_key)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    await set_credentials(
        api, account.api_key, connection_id, "s3-generic", seaweed_role(seaweedfs_sts)
    )
    audio = make_wav(0.4)
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, audio)
    [saved] = await webhook_receiver.wait_for(1, within=30)
    webhook_receiver.verify(saved, account.webhook_public_key)
    assert saved.event_type == "call.recording.saved", saved.body
    row = await wait_for_status(runtime, recording_id, "stored")
    assert row.backend == "s3-generic" and row.bucket == seaweedfs_sts.bucket
    url = f"{seaweedfs_sts.endpoint}/{seaweedfs_sts.bucket}/{row.object_key}"
    assert saved.payload["recording_urls"] == {"wav": url}
    configuration = await opening_configuration(runtime, connection_id)
    assert await read_back("s3-generic", configuration, f"{row.object_key}") == audio


async def test_the_role_policy_scopes_the_session(
    runtime: Runtime,
    api: httpx.AsyncClient,
    account: NewAccount,
    seaweedfs_sts: SeaweedFSWithSTS,
    operator_identity: Callable[[str, str], None],
) -> None:
    """The validate action says which step failed: the role may put and get, not delete."""
    operator_identity(seaweedfs_sts.operator_access_key, seaweedfs_sts.operator_secret_key)
    connection_id = await create_application(api, account.api_key, "https://hooks.example.com/x")
    await set_credentials(
        api, account.api_key, connection_id, "s3-generic", seaweed_role(seaweedfs_sts)
    )
    response = await api.post(
        f"/v2/custom_storage_credentials/{connection_id}/actions/validate",
        headers=bearer(account.api_key),
    )
    result = response.json()["data"]
    assert result["status"] == "failed"
    assert result["detail"].endswith(
        "AccessDenied — the credentials may not use this bucket (failed at: delete)"
    ), result

    # a role that does not exist: the step is the AssumeRole, the reason names the role
    missing = "arn:aws:iam::role/NoSuchRole"
    await set_credentials(
        api,
        account.api_key,
        connection_id,
        "s3-generic",
        seaweed_role(seaweedfs_sts, role_arn=missing),
        replace=True,
    )
    response = await api.post(
        f"/v2/custom_storage_credentials/{connection_id}/actions/validate",
        headers=bearer(account.api_key),
    )
    detail = response.json()["data"]["detail"]
    assert f"AssumeRole of {missing} failed: AccessDenied — check that the role exists" in detail
    assert detail.endswith("(failed at: assume role)")


async def test_a_session_the_bucket_rejects_is_refreshed_and_the_upload_retried(
    runtime: Runtime,
    api: httpx.AsyncClient,
    account: NewAccount,
    seaweedfs_sts: SeaweedFSWithSTS,
    operator_identity: Callable[[str, str], None],
    tmp_path: Any,
) -> None:
    operator_identity(seaweedfs_sts.operator_access_key, seaweedfs_sts.operator_secret_key)
    connection_id = await create_application(api, account.api_key, "https://hooks.example.com/x")
    await set_credentials(
        api, account.api_key, connection_id, "s3-generic", seaweed_role(seaweedfs_sts)
    )
    store = open_custom_store(
        "s3-generic",
        await opening_configuration(runtime, connection_id),
        allow_private_networks=True,
    )
    assert isinstance(store, RoleS3ObjectStore)
    path = tmp_path / "audio.wav"
    path.write_bytes(make_wav(0.2))
    await store.put_file("a/first", path, content_type="audio/wav", metadata={})
    session = store.sessions.cached(store.target)
    assert session is not None
    assumed = store.sessions.assumed

    # the session ends early (revoked, or the clock was wrong): the bucket rejects its token
    ended = aws_roles.Session(
        session.access_key_id,
        session.secret_access_key,
        session.token[:-6] + "AAAAAA",
        session.expires_at,
    )
    store.sessions.put(store.target, ended)
    store.rebuild()  # obstore must ask for credentials again, as it does when they expire
    await store.put_file("a/second", path, content_type="audio/wav", metadata={})
    assert store.sessions.assumed == assumed + 1
    info = await store.head("a/second")
    assert info is not None and info.size == path.stat().st_size
    renewed = store.sessions.cached(store.target)
    assert renewed is not None and renewed.token not in (session.token, ended.token)


async def test_moto_refuses_a_wrong_external_id_then_delivers_once_the_trust_policy_names_it(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    moto_with_auth: MotoWithAuth,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
    operator_identity: Callable[[str, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = "moto-recordings"
    role_arn = moto_with_auth.bootstrap(
        bucket=bucket, role_name="callvault-recordings", external_id="not-callvaults-id"
    )
    operator_identity(moto_with_auth.operator_access_key, moto_with_auth.operator_secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_with_auth.endpoint)  # the s3 backend's override
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_with_auth.endpoint)
    set_storage_env(monkeypatch, "CALLVAULT_AWS_PRINCIPAL_ARN")

    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    configuration = {"bucket": bucket, "region": "us-east-1", "role_arn": role_arn}
    await set_credentials(api, account.api_key, connection_id, "s3", configuration)
    audio = make_wav(0.3)
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, audio)
    [error] = await webhook_receiver.wait_for(1, within=30)
    webhook_receiver.verify(error, account.webhook_public_key)
    assert error.event_type == "call.recording.error", error.body
    assert error.payload["reason"] == AUTH_REASON
    detail = error.payload["detail"]
    assert f"AssumeRole of {role_arn} failed: AccessDenied" in detail, detail
    assert "sts:ExternalId" in detail
    await wait_for_status(runtime, recording_id, "failed")

    # the customer pastes the trust policy aws_role_setup answers (principal: GetCallerIdentity)
    setup = await api.get(
        f"/v2/custom_storage_credentials/{connection_id}/aws_role_setup",
        params={"bucket": bucket},
        headers=bearer(account.api_key),
    )
    assert setup.status_code == 200, setup.text
    data = setup.json()["data"]
    assert data["principal_arn"] == moto_with_auth.operator_arn
    # the reason said which ExternalId the trust policy must name
    assert f"sts:ExternalId condition is {data['external_id']}" in detail
    admin = moto_with_auth.admin_client("iam")
    admin.update_assume_role_policy(
        RoleName="callvault-recordings", PolicyDocument=json.dumps(data["trust_policy"])
    )
    # saving the credentials again redelivers the failed recording
    await set_credentials(api, account.api_key, connection_id, "s3", configuration, replace=True)
    [_, saved] = await webhook_receiver.wait_for(2, within=30)
    webhook_receiver.verify(saved, account.webhook_public_key)
    assert saved.event_type == "call.recording.saved", saved.body
    row = await wait_for_status(runtime, recording_id, "stored")
    assert saved.payload["recording_urls"] == {"wav": f"s3://{bucket}/{row.object_key}"}
    opened = await opening_configuration(runtime, connection_id)
    assert await read_back("s3", opened, f"{row.object_key}") == audio


def azure_sas_configuration(azurite: Azurite, container: str, token: str) -> dict[str, Any]:
    return {"bucket": container, "account_name": azurite.account_name, "sas_token": token}


async def test_azurite_container_sas_stores_a_recording(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    azure_endpoint_env: Azurite,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    azurite = azure_endpoint_env
    container = "sas-recordings"
    azurite.create_container(container)
    token = azurite.container_sas(container, "rcwd", datetime.now(UTC) + timedelta(hours=1))
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    await set_credentials(
        api,
        account.api_key,
        connection_id,
        "azure",
        azure_sas_configuration(azurite, container, "?" + token),
    )
    audio = make_wav(0.3)
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, audio)
    [saved] = await webhook_receiver.wait_for(1, within=30)
    webhook_receiver.verify(saved, account.webhook_public_key)
    assert saved.event_type == "call.recording.saved", saved.body
    row = await wait_for_status(runtime, recording_id, "stored")
    assert saved.payload["recording_urls"]["wav"].startswith(f"{azurite.endpoint}/{container}/")
    configuration = await opening_configuration(runtime, connection_id)
    assert await read_back("azure", configuration, f"{row.object_key}") == audio

    # the probe passes with this token; download links cannot be signed with it
    validate = await api.post(
        f"/v2/custom_storage_credentials/{connection_id}/actions/validate",
        headers=bearer(account.api_key),
    )
    assert validate.json()["data"] == {"status": "ok"}
    store = open_custom_store("azure", configuration, allow_private_networks=True)
    with pytest.raises(StorageError) as refused:
        await store.signed_get_url(f"{row.object_key}", 60)
    assert "SAS token" in refused.value.reason and token not in refused.value.reason


async def test_an_expired_sas_fails_permanently_and_says_when(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    azure_endpoint_env: Azurite,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
    tmp_path: Any,
) -> None:
    azurite = azure_endpoint_env
    container = "sas-expiring"
    azurite.create_container(container)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    token = azurite.container_sas(container, "rcwd", expires)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    await set_credentials(
        api,
        account.api_key,
        connection_id,
        "azure",
        azure_sas_configuration(azurite, container, token),
    )
    got = await api.get(
        f"/v2/custom_storage_credentials/{connection_id}", headers=bearer(account.api_key)
    )
    when = expires.isoformat().replace("+00:00", "Z")
    assert got.json()["data"]["configuration"]["sas_expires_at"] == when

    # a store opened while the token was good, then used after it expired (the worker's cache)
    store = open_custom_store(
        "azure", await opening_configuration(runtime, connection_id), allow_private_networks=True
    )
    path = tmp_path / "a.wav"
    path.write_bytes(make_wav(0.1))
    await store.put_file("before/expiry", path, content_type="audio/wav", metadata={})
    while datetime.now(UTC) <= expires:
        await _sleep(0.1)
    with pytest.raises(StorageError) as expired:
        await store.put_file("after/expiry", path, content_type="audio/wav", metadata={})
    assert expired.value.kind is StorageErrorKind.PERMANENT_AUTH
    assert expired.value.reason == (
        f"azure container {container}: the SAS token expired at {when} — save a new sas_token"
    )

    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))
    [error] = await webhook_receiver.wait_for(1, within=30)
    assert error.event_type == "call.recording.error", error.body
    assert error.payload["reason"] == AUTH_REASON
    assert f"the SAS token expired at {when}" in error.payload["detail"]
    await wait_for_status(runtime, recording_id, "failed")


async def test_a_read_only_sas_gives_a_precise_error_from_azurite(
    azure_endpoint_env: Azurite, tmp_path: Any
) -> None:
    """What Azurite itself answers when a token lacks write (the API refuses such a token at
    once; a token whose permissions were narrowed later reads like this)."""
    azurite = azure_endpoint_env
    container = "sas-readonly"
    azurite.create_container(container)
    token = azurite.container_sas(container, "r", datetime.now(UTC) + timedelta(hours=1))
    store = open_custom_store(
        "azure", azure_sas_configuration(azurite, container, token), allow_private_networks=True
    )
    reason = await probe_store(store)
    assert reason == (
        f"azure container {container}: AuthorizationPermissionMismatch — the credentials may "
        "not use this container (failed at: write)"
    )


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_session_credentials_and_sas_tokens_never_leave(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs_sts: SeaweedFSWithSTS,
    azure_endpoint_env: Azurite,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
    operator_identity: Callable[[str, str], None],
) -> None:
    operator_identity(seaweedfs_sts.operator_access_key, seaweedfs_sts.operator_secret_key)
    azurite = azure_endpoint_env
    container = "sas-secrets"
    azurite.create_container(container)
    token = azurite.container_sas(container, "rcwd", datetime.now(UTC) + timedelta(hours=1))
    signature = dict(pair.split("=", 1) for pair in token.split("&"))["sig"]
    role_connection = await create_application(api, account.api_key, webhook_receiver.url())
    sas_connection = await create_application(api, account.api_key, webhook_receiver.url())
    responses = [
        await api.post(
            f"/v2/custom_storage_credentials/{role_connection}",
            json={"backend": "s3-generic", "configuration": seaweed_role(seaweedfs_sts)},
            headers=auth(account),
        ),
        await api.post(
            f"/v2/custom_storage_credentials/{sas_connection}",
            json={
                "backend": "azure",
                "configuration": azure_sas_configuration(azurite, container, token),
            },
            headers=auth(account),
        ),
    ]
    with captured_logs() as logs:
        await start_worker()
        for connection_id in (role_connection, sas_connection):
            await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))
        deliveries = await webhook_receiver.wait_for(2, within=30)
        assert {d.event_type for d in deliveries} == {"call.recording.saved"}
        for connection_id in (role_connection, sas_connection):
            responses.append(
                await api.get(
                    f"/v2/custom_storage_credentials/{connection_id}", headers=auth(account)
                )
            )
            responses.append(
                await api.post(
                    f"/v2/custom_storage_credentials/{connection_id}/actions/validate",
                    headers=auth(account),
                )
            )
            responses.append(await api.get("/v2/recordings", headers=auth(account)))
        logged = logs.getvalue()

    configuration = await opening_configuration(runtime, role_connection)
    store = open_custom_store("s3-generic", configuration, allow_private_networks=True)
    assert isinstance(store, RoleS3ObjectStore)
    session = store.sessions.get(store.target)
    secrets = [session.secret_access_key, session.token, token, signature]

    stored = await database_text(runtime)
    assert "upload started" in logged  # the capture works
    # a presigned download link made with session credentials must carry the session token
    # (AWS's rule for temporary credentials; the token signs nothing without the secret key):
    # that one place is allowed, and the link must have it to work
    answers = [r.text for r in responses]
    assert any(f"X-Amz-Security-Token={session.token}" in text for text in answers)
    answers = [
        re.sub(r"X-Amz-Security-Token=[^&\"\s]+", "X-Amz-Security-Token=", t) for t in answers
    ]
    everything = answers + [d.body for d in deliveries] + [logged]
    for secret in secrets:
        assert secret.encode() not in stored
        for text in everything:
            at = text.find(secret)
            assert at < 0, text[max(0, at - 300) : at + 20]
    row = await recording_row(runtime, deliveries[0].payload["recording_id"])
    assert row.status == "stored"


async def test_no_sts_request_reaches_a_private_endpoint_unless_allowed(
    seaweedfs_sts: SeaweedFSWithSTS,
    operator_identity: Callable[[str, str], None],
    tmp_path: Any,
) -> None:
    """An s3-generic endpoint is the role's STS endpoint too: the private-network check comes
    before AssumeRole (which carries callvault's own signature), for links as well."""
    operator_identity(seaweedfs_sts.operator_access_key, seaweedfs_sts.operator_secret_key)
    configuration = {
        **seaweed_role(seaweedfs_sts),
        "external_id": "callvault-test",
        "connection_id": "private-endpoint-test",
    }
    store = open_custom_store("s3-generic", configuration, allow_private_networks=False)
    before = aws_roles.SESSIONS.assumed
    path = tmp_path / "a.wav"
    path.write_bytes(make_wav(0.1))
    with pytest.raises(StorageError) as refused:
        await store.put_file("k", path, content_type="audio/wav", metadata={})
    assert "endpoint refused" in refused.value.reason
    with pytest.raises(StorageError):
        await store.signed_get_url("k", 60)
    assert aws_roles.SESSIONS.assumed == before
