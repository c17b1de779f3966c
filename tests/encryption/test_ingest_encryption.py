"""Ingest with encryption on: the default store holds only ciphertext, the row and the object's
metadata carry the details, the audio checks still run on the plaintext (local default store,
SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest
from cryptography.exceptions import InvalidTag

from callvault.accounts.service import NewAccount
from callvault.encryption_keys.scheme import ALGORITHM
from callvault.runtime import Runtime
from tests.conftest import auth
from tests.encryption.customer import customer_decrypt
from tests.encryption.keys import register_key, rsa_private, use_key
from tests.encryption.samples import files_holding, noisy_wav
from tests.recordings.conftest import (
    add_application,
    local_store,
    metadata_for,
    post_recording,
    recording_row,
)


async def encrypted_connection(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, which: int = 0
) -> tuple[str, dict[str, str]]:
    connection_id = await add_application(runtime, account.account_id)
    key = await register_key(api, account.api_key, rsa_private(2048, which))
    await use_key(api, account.api_key, connection_id, key["id"])
    return connection_id, key


@pytest.mark.parametrize("audio_first", [False, True], ids=["metadata-first", "audio-first"])
async def test_stored_bytes_are_ciphertext_that_the_customer_decrypts(
    audio_first: bool, api: httpx.AsyncClient, runtime: Runtime, account: NewAccount
) -> None:
    connection_id, key = await encrypted_connection(api, runtime, account)
    audio = noisy_wav(150)  # 2.4 MB: several 1 MiB flushes through the encryptor
    response = await post_recording(
        api, runtime, metadata_for(connection_id), audio, audio_first=audio_first
    )
    assert response.status_code == 202, response.text
    row = await recording_row(runtime, response.json()["data"]["id"])
    details = row.encryption_details
    assert details is not None
    assert details["algorithm"] == ALGORITHM
    assert details["public_key_id"] == key["id"]
    assert details["fingerprint"] == key["fingerprint"]
    # format 2, bound to the recording, in both part orders (issue 21)
    assert details["version"] == "2" and details["recording_id"] == row.id
    assert len(base64.b64decode(details["iv"])) == 12
    assert len(base64.b64decode(details["encrypted_cek"])) == 256  # RSA-2048 block
    assert row.duration_millis == 150000  # checked on the plaintext

    store = local_store(runtime)
    assert row.default_store_key
    stored = store.path_for(row.default_store_key).read_bytes()
    assert stored != audio and len(stored) == len(audio) + 16
    assert row.size_bytes == len(stored)
    assert row.sha256 == hashlib.sha256(stored).hexdigest()
    assert files_holding(runtime.settings.data_dir, audio) == []
    assert customer_decrypt(rsa_private(), details, stored) == audio

    # the object alone suffices: its metadata carries the wrapped key and the IV
    info = await store.head(row.default_store_key)
    assert info is not None
    assert info.content_type == "application/octet-stream"
    meta = info.metadata
    assert meta["public_key_id"] == key["id"]
    assert meta["sha256"] == row.sha256
    assert meta["encryption_version"] == "2" and meta["recording_id"] == row.id
    assert customer_decrypt(rsa_private(), meta, stored) == audio

    # the Recordings API shows the same details
    shown = await api.get(f"/v2/recordings/{row.id}", headers=auth(account))
    assert shown.json()["data"]["encryption_details"] == details

    with pytest.raises(ValueError):
        customer_decrypt(rsa_private(2048, which=1), details, stored)
    flipped = bytearray(stored)
    flipped[len(stored) // 2] ^= 0x01
    with pytest.raises(InvalidTag):
        customer_decrypt(rsa_private(), details, bytes(flipped))


async def test_audio_first_without_encryption_stores_the_plain_audio(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount
) -> None:
    connection_id = await add_application(runtime, account.account_id)
    audio = noisy_wav(0.5)
    response = await post_recording(
        api, runtime, metadata_for(connection_id), audio, audio_first=True
    )
    assert response.status_code == 202, response.text
    row = await recording_row(runtime, response.json()["data"]["id"])
    assert row.encryption_details is None
    assert row.default_store_key
    assert local_store(runtime).path_for(row.default_store_key).read_bytes() == audio
    assert (row.size_bytes, row.sha256) == (len(audio), hashlib.sha256(audio).hexdigest())
    shown = await api.get(f"/v2/recordings/{row.id}", headers=auth(account))
    assert shown.json()["data"]["encryption_details"] is None
    assert list((runtime.settings.data_dir / "incoming").iterdir()) == []


@pytest.mark.parametrize("audio_first", [False, True], ids=["metadata-first", "audio-first"])
async def test_audio_checks_still_refuse_bad_audio_when_encrypting(
    audio_first: bool, api: httpx.AsyncClient, runtime: Runtime, account: NewAccount
) -> None:
    connection_id, _ = await encrypted_connection(api, runtime, account)
    for audio, metadata in (
        (b"not audio at all" * 100, metadata_for(connection_id)),
        (noisy_wav(0.5, channels=2), metadata_for(connection_id)),  # says single
    ):
        response = await post_recording(api, runtime, metadata, audio, audio_first=audio_first)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["source"] == {"pointer": "/audio"}
    assert list((runtime.settings.data_dir / "incoming").iterdir()) == []


async def test_switching_keys_affects_only_later_recordings(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount
) -> None:
    connection_id, first = await encrypted_connection(api, runtime, account)
    audio_one, audio_two, audio_three = noisy_wav(0.3), noisy_wav(0.3), noisy_wav(0.3)
    one = await post_recording(api, runtime, metadata_for(connection_id), audio_one)
    second = await register_key(api, account.api_key, rsa_private(2048, which=1))
    await use_key(api, account.api_key, connection_id, second["id"])
    two = await post_recording(api, runtime, metadata_for(connection_id), audio_two)
    await use_key(api, account.api_key, connection_id, None)
    three = await post_recording(api, runtime, metadata_for(connection_id), audio_three)
    store = local_store(runtime)
    rows = [await recording_row(runtime, r.json()["data"]["id"]) for r in (one, two, three)]
    assert [r.encryption_details and r.encryption_details["public_key_id"] for r in rows] == [
        first["id"],
        second["id"],
        None,
    ]
    stored = [store.path_for(r.default_store_key or "").read_bytes() for r in rows]
    assert rows[0].encryption_details and rows[1].encryption_details
    assert customer_decrypt(rsa_private(), rows[0].encryption_details, stored[0]) == audio_one
    assert (
        customer_decrypt(rsa_private(2048, 1), rows[1].encryption_details, stored[1]) == audio_two
    )
    assert stored[2] == audio_three


async def test_an_object_moved_to_another_recording_of_the_same_key_does_not_decrypt(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount
) -> None:
    """Issue 21 item 7: with format 1, recording B's object (and its metadata) put where
    recording A's was decrypted without complaint as A. Format 2 binds the recording id."""
    connection_id, _ = await encrypted_connection(api, runtime, account)
    rows = []
    for seconds in (0.5, 0.6):
        response = await post_recording(
            api, runtime, metadata_for(connection_id), noisy_wav(seconds)
        )
        assert response.status_code == 202, response.text
        rows.append(await recording_row(runtime, response.json()["data"]["id"]))
    a, b = rows
    store = local_store(runtime)
    assert a.default_store_key and b.default_store_key
    b_bytes = store.path_for(b.default_store_key).read_bytes()
    b_info = await store.head(b.default_store_key)
    assert b_info is not None
    # what the customer finds at A's place: B's bytes and B's metadata; it opens A
    with pytest.raises(InvalidTag):
        customer_decrypt(rsa_private(), b_info.metadata, b_bytes, recording_id=a.id)
    # the metadata's recording_id cannot be relabelled either: it is authenticated
    relabelled = {**b_info.metadata, "recording_id": a.id}
    with pytest.raises(InvalidTag):
        customer_decrypt(rsa_private(), relabelled, b_bytes)
    # nor the key id
    other_key = {**b_info.metadata, "public_key_id": "5c1c8d44-0b0e-4b5e-9d53-6a3f0c2f0e11"}
    with pytest.raises(InvalidTag):
        customer_decrypt(rsa_private(), other_key, b_bytes)
    # B's object opens as B
    assert customer_decrypt(rsa_private(), b_info.metadata, b_bytes, recording_id=b.id)
