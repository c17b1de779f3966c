"""s3-generic endpoints (a customer's choice of host) are checked before every request, against
the real SeaweedFS server: obstore has no connect hook, so the check runs per operation."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

import pytest

from callvault.jobs import make_worker
from callvault.recordings.models import RecordingStatus
from callvault.storage import StorageError, StorageErrorKind, layout, open_custom_store
from callvault.storage.checked_endpoint import EndpointCheckedStore
from tests.recordings.samples import make_wav
from tests.security.test_outbound_transport import ScriptedResolver
from tests.servers import SeaweedFS
from tests.worker.flow import (
    create_application,
    events_for,
    ingest,
    set_credentials,
    wait_for_status,
    wait_until,
)


def configuration(server: SeaweedFS, bucket: str, endpoint: str) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "region": server.region,
        "endpoint": endpoint,
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
    }


@pytest.fixture
def bucket(seaweedfs: SeaweedFS) -> str:
    name = f"endpoint-{secrets.token_hex(4)}"
    seaweedfs.create_bucket(name)
    return name


@pytest.fixture
def probe_file(tmp_path: Path) -> Path:
    path = tmp_path / "object"
    path.write_bytes(b"endpoint check")
    return path


async def test_a_private_endpoint_is_refused_before_any_request(seaweedfs, bucket, probe_file):
    config = configuration(seaweedfs, bucket, seaweedfs.endpoint)
    store = open_custom_store("s3-generic", config, allow_private_networks=False)
    with pytest.raises(StorageError) as refused:
        await store.put_file("k", probe_file, content_type="text/plain", metadata={})
    assert refused.value.kind is StorageErrorKind.PERMANENT_AUTH
    assert "endpoint refused" in refused.value.reason
    unchecked = open_custom_store("s3-generic", config, allow_private_networks=True)
    assert await unchecked.head("k") is None  # nothing reached the server


async def test_an_endpoint_that_rebinds_is_refused_at_the_next_request(
    seaweedfs, bucket, probe_file
):
    endpoint = f"http://localhost:{seaweedfs.port}"
    # public for the upload and its check, then the name points at loopback
    resolver = ScriptedResolver(["93.184.216.34"], ["93.184.216.34"], ["127.0.0.1"])
    inner = open_custom_store(
        "s3-generic", configuration(seaweedfs, bucket, endpoint), allow_private_networks=True
    )
    store = EndpointCheckedStore(inner, endpoint, resolver=resolver)
    await store.put_file("k", probe_file, content_type="text/plain", metadata={})
    assert (await store.head("k")) is not None
    with pytest.raises(StorageError, match="endpoint refused"):
        await store.delete("k")
    assert (await inner.head("k")) is not None  # the delete never went out
    assert [host for host, _ in resolver.lookups] == ["localhost"] * 3


async def test_the_endpoint_check_is_off_when_private_networks_are_allowed(
    seaweedfs, bucket, probe_file
):
    config = configuration(seaweedfs, bucket, seaweedfs.endpoint)
    store = open_custom_store("s3-generic", config, allow_private_networks=True)
    assert not isinstance(store, EndpointCheckedStore)
    await store.put_file("k", probe_file, content_type="text/plain", metadata={})
    assert (await store.head("k")) is not None


async def test_the_worker_keeps_the_recording_when_the_endpoint_turns_private(
    api, runtime, account, seaweedfs, bucket
):
    # saved while allowed (as if the name had resolved to a public address then)
    connection_id = await create_application(api, account.api_key, "http://127.0.0.1:9/hooks")
    await set_credentials(
        api,
        account.api_key,
        connection_id,
        "s3-generic",
        configuration(seaweedfs, bucket, seaweedfs.endpoint),
    )
    refusing = dataclasses.replace(
        runtime, settings=dataclasses.replace(runtime.settings, allow_private_networks=False)
    )
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))
    worker = make_worker(refusing, poll_seconds=0.05, webhook_schedule=(60.0,))
    await worker.start()
    try:
        row = await wait_for_status(refusing, recording_id, RecordingStatus.FAILED)

        async def error_event() -> bool:
            events = await events_for(runtime, recording_id)
            return any(e.event_type == "call.recording.error" for e in events)

        await wait_until(error_event, what="call.recording.error event")
    finally:
        await worker.stop()
    assert row.error_detail and "endpoint refused" in row.error_detail
    assert row.default_store_key  # kept in the default store: nothing lost
    key = layout.object_key(row.account_id, row.recording_started_at, row.call_leg_id, None)
    unchecked = open_custom_store(
        "s3-generic",
        configuration(seaweedfs, bucket, seaweedfs.endpoint),
        allow_private_networks=True,
    )
    assert await unchecked.head(key) is None  # nothing was written to the endpoint


# Redirects, subdomains and rebinding under the egress guard: test_egress_guard.py (a private
# network namespace, so that a public address and an internal one both exist on this machine).
