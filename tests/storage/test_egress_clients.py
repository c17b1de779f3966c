"""Every provider's client really connects through the egress guard when private networks are
refused, and works through it: obstore (s3, azure reads), azure-storage-blob (azure uploads),
google-cloud-storage (gcs), against the real servers. Their endpoints are the operator's
overrides (AWS_ENDPOINT_URL, CALLVAULT_AZURE_BLOB_ENDPOINT, STORAGE_EMULATOR_HOST), which the
guard trusts although they are on loopback; redirects and customer endpoints are refused in
tests/security/test_egress_guard.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from callvault.outbound.egress import shared_proxy
from callvault.storage import open_custom_store


@pytest.mark.parametrize("name", ["s3", "azure", "gcs"])
async def test_a_store_works_through_the_guard(name: str, make_backend, tmp_path: Path):
    backend = make_backend(name)
    bucket = backend.new_bucket()
    store = open_custom_store(
        backend.name, backend.configuration(bucket), allow_private_networks=False
    )
    guard = shared_proxy(allow_private=False)
    before = guard.connected
    source = tmp_path / "rec.wav"
    source.write_bytes(b"RIFF" + bytes(range(256)) * 64)
    await store.put_file("a/rec.wav", source, content_type="audio/wav", metadata={"x": "1"})
    info = await store.head("a/rec.wav")
    assert info is not None and info.size == source.stat().st_size
    body = b"".join([chunk async for chunk in store.get_stream("a/rec.wav")])
    assert body == source.read_bytes()
    await store.delete("a/rec.wav")
    assert await store.head("a/rec.wav") is None
    # the five requests went through the guard, kept alive: a connection per client library
    # (azure: the SDK's uploads and obstore's reads; gcs: the token endpoint and the API), where
    # a connection per request made 5 to 7
    assert 0 < guard.connected - before <= 2
