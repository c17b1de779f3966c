"""The ObjectStore contract, run against every backend's real server (and the local store)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from callvault.storage import ObjectStore, StorageError, StorageErrorKind, verify_link
from tests.servers import GcsAuthGateway
from tests.storage.conftest import LINK_SECRET, Backend

ACCOUNT = "047e057e-cb46-4b11-bb31-37987e753ed7"
KEY = f"{ACCOUNT}/2022-02-02/d9d877c6-8424-11ec-b0b1-02420a0d7e68-1643805460"
METADATA = {"call_leg_id": "d9d877c6-8424-11ec-b0b1-02420a0d7e68", "sha256": "ab" * 32}
MiB = 1024 * 1024


async def read_all(store: ObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get_stream(key)])


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "recording.bin"
    path.write_bytes(data)
    return path


async def test_put_head_get_delete(any_store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    await any_store.put_file(
        KEY, write(tmp_path, data), content_type="audio/wav", metadata=METADATA
    )

    info = await any_store.head(KEY)
    assert info is not None
    assert info.size == len(data)
    assert info.content_type == "audio/wav"
    assert info.metadata == METADATA
    assert await read_all(any_store, KEY) == data

    await any_store.delete(KEY)
    assert await any_store.head(KEY) is None
    await any_store.delete(KEY)  # idempotent
    with pytest.raises(StorageError) as caught:
        await read_all(any_store, KEY)
    assert caught.value.kind is StorageErrorKind.PERMANENT_NOT_FOUND


async def test_put_from_bytes_is_the_same_object(any_store: ObjectStore) -> None:
    # what the worker uploads a small recording from (no temp file)
    data = os.urandom(100_000)
    await any_store.put_file(KEY, data, content_type="audio/wav", metadata=METADATA)
    info = await any_store.head(KEY)
    assert info is not None
    assert (info.size, info.content_type, info.metadata) == (len(data), "audio/wav", METADATA)
    assert await read_all(any_store, KEY) == data


async def test_move_stores_the_object_and_says_where_a_local_one_lives(
    any_store: ObjectStore, tmp_path: Path
) -> None:
    # what ingest hands the default store: a local directory takes the file by a rename
    data = os.urandom(100_000)
    source = write(tmp_path, data)
    await any_store.move_file(KEY, source, content_type="audio/wav", metadata=METADATA)
    info = await any_store.head(KEY)
    assert info is not None
    assert (info.size, info.content_type, info.metadata) == (len(data), "audio/wav", METADATA)
    assert await read_all(any_store, KEY) == data
    local = any_store.local_path(KEY)
    if any_store.backend == "local":
        assert local is not None and local.read_bytes() == data
    else:
        assert local is None
        assert source.read_bytes() == data  # uploaded, left to the caller


async def test_head_of_missing_object_is_none(any_store: ObjectStore) -> None:
    assert await any_store.head("acct/2022-02-02/never-written-1") is None


async def test_overwrite_replaces_content_and_metadata(
    any_store: ObjectStore, tmp_path: Path
) -> None:
    await any_store.put_file(
        KEY, write(tmp_path, b"first"), content_type="audio/wav", metadata={"v": "1"}
    )
    await any_store.put_file(
        KEY, write(tmp_path, b"second!"), content_type="audio/mpeg", metadata={"v": "2"}
    )
    info = await any_store.head(KEY)
    assert info is not None
    assert (info.size, info.content_type, info.metadata) == (7, "audio/mpeg", {"v": "2"})
    assert await read_all(any_store, KEY) == b"second!"


async def test_multipart_upload_reads_back_identical(
    any_store: ObjectStore, tmp_path: Path
) -> None:
    # parts of 5 MiB (S3's minimum) for an 11 MiB file: three parts. GCS uploads in one
    # request up to 8 MiB, above that in resumable chunks of part_size.
    part = 5 * MiB if any_store.backend != "gcs" else 1 * MiB
    any_store.part_size = part  # type: ignore[attr-defined]
    data = os.urandom(11 * MiB)
    await any_store.put_file(
        KEY, write(tmp_path, data), content_type="audio/wav", metadata=METADATA
    )

    assert await read_all(any_store, KEY) == data
    info = await any_store.head(KEY)
    assert info is not None
    assert (info.size, info.content_type, info.metadata) == (len(data), "audio/wav", METADATA)

    if any_store.backend in ("s3", "s3-generic"):
        # a multipart object's ETag is "md5-of-part-md5s-{number of parts}"
        url = await any_store.signed_get_url(KEY, 60)
        async with httpx.AsyncClient() as client:
            response = await client.get(url, headers={"Range": "bytes=0-0"})
        assert response.headers["ETag"].strip('"').endswith("-3")


async def test_gcs_large_upload_is_resumable_in_chunks(
    make_backend: Callable[[str], Backend], tmp_path: Path, gcs_gateway: GcsAuthGateway
) -> None:
    store = make_backend("gcs").open()
    store.part_size = 1 * MiB  # type: ignore[attr-defined]
    before = len(gcs_gateway.requests)
    data = os.urandom(9 * MiB)
    await store.put_file(KEY, write(tmp_path, data), content_type="audio/wav", metadata=METADATA)
    requests = gcs_gateway.requests[before:]
    assert any("uploadType=resumable" in line for line in requests)
    assert sum(line.startswith("PUT ") for line in requests) == 9
    assert await read_all(store, KEY) == data


async def test_signed_url_downloads_and_tampered_one_does_not(
    any_store: ObjectStore, tmp_path: Path
) -> None:
    data = os.urandom(5000)
    await any_store.put_file(KEY, write(tmp_path, data), content_type="audio/wav", metadata={})
    now = time.time()
    url = await any_store.signed_get_url(KEY, 600)
    query = parse_qs(urlsplit(url).query)

    if any_store.backend == "local":
        # served by the HTTP layer; here: the link's own fields and signature
        assert url.startswith(f"https://vault.test/v2/recording_files/{KEY}?")
        expires = int(query["expires"][0])
        assert abs(expires - (now + 600)) <= 2
        assert verify_link(LINK_SECRET, KEY, expires, query["signature"][0], now=now)
        assert not verify_link(LINK_SECRET, KEY + "x", expires, query["signature"][0], now=now)
        assert not verify_link(LINK_SECRET, KEY, expires, query["signature"][0], now=expires + 1)
        return

    if any_store.backend in ("s3", "s3-generic"):
        assert query["X-Amz-Expires"] == ["600"]
        signature_field = "X-Amz-Signature"
    elif any_store.backend == "gcs":
        assert query["X-Goog-Expires"] == ["600"]
        assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
        signature_field = "X-Goog-Signature"
    else:
        starts, ends = query["st"][0], query["se"][0]
        assert (
            time.mktime(time.strptime(ends, "%Y-%m-%dT%H:%M:%SZ"))
            - time.mktime(time.strptime(starts, "%Y-%m-%dT%H:%M:%SZ"))
            == 600
        )
        signature_field = "sig"

    signature = query[signature_field][0]
    forged = "A" * len(signature) if not signature.startswith("A") else "B" * len(signature)
    tampered = url.replace(signature, forged) if signature in url else url + "0"
    other_key = url.replace("1643805460", "1643805461")
    async with httpx.AsyncClient() as client:
        good = await client.get(url)
        assert good.status_code == 200
        assert good.content == data
        assert (await client.get(tampered)).status_code == 403
        assert (await client.get(other_key)).status_code == 403


async def test_canonical_url(any_store: ObjectStore) -> None:
    url = any_store.canonical_url(KEY)
    bucket = any_store.bucket
    expected = {
        "s3": f"s3://{bucket}/{KEY}",
        "gcs": f"gs://{bucket}/{KEY}",
    }
    if any_store.backend in expected:
        assert url == expected[any_store.backend]
    elif any_store.backend == "azure":
        assert url.endswith(f"/devstoreaccount1/{bucket}/{KEY}")
        assert url.startswith("http://127.0.0.1:")
    elif any_store.backend == "s3-generic":
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith(f"/{bucket}/{KEY}")
    else:
        assert url == Path(any_store.bucket, KEY).as_uri()


async def test_invalid_metadata_key_is_refused_before_upload(
    any_store: ObjectStore, tmp_path: Path
) -> None:
    with pytest.raises(ValueError):
        await any_store.put_file(
            KEY, write(tmp_path, b"x"), content_type="audio/wav", metadata={"Call-Id": "x"}
        )
    assert await any_store.head(KEY) is None


async def test_empty_file(any_store: ObjectStore, tmp_path: Path) -> None:
    await any_store.put_file(KEY, write(tmp_path, b""), content_type="audio/wav", metadata={})
    info = await any_store.head(KEY)
    assert info is not None
    assert info.size == 0
    assert await read_all(any_store, KEY) == b""
