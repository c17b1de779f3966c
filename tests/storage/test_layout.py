"""Key layout and URL forms, checked against the seed's examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from callvault.encryption_keys.scheme import object_metadata, stored_content_type
from callvault.storage import azure, gcs, s3
from callvault.storage.layout import (
    content_type_for,
    extension_for,
    object_key,
    recording_leaf,
    recording_object,
)

SEED_ACCOUNT = "047e057e-cb46-4b11-bb31-37987e753ed7"
SEED_LEG = "d9d877c6-8424-11ec-b0b1-02420a0d7e68"


def at(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def test_custom_storage_key_matches_the_seed() -> None:
    # gs:// and s3:// examples: .../2022-02-02/d9d877c6-...-1643805460, no extension
    key = object_key(SEED_ACCOUNT, at(1643805460), SEED_LEG, None)
    assert key == f"{SEED_ACCOUNT}/2022-02-02/{SEED_LEG}-1643805460"


def test_default_store_key_matches_the_seed() -> None:
    # the v1 webhook example's presigned URL path
    key = object_key(SEED_ACCOUNT, at(1643974566), "9977677e-85ae-11ec-826d-02420a0d7e70", "wav")
    assert key == f"{SEED_ACCOUNT}/2022-02-04/9977677e-85ae-11ec-826d-02420a0d7e70-1643974566.wav"


def test_seconds_are_floored_and_the_date_is_utc() -> None:
    # 2022-02-04T00:30:00.9+02:00 is 2022-02-03T22:30:00.9Z
    started = datetime(2022, 2, 4, 0, 30, 0, 900_000, tzinfo=timezone(timedelta(hours=2)))
    key = object_key("acct", started, "leg", "mp3")
    unix = int(datetime(2022, 2, 3, 22, 30, tzinfo=UTC).timestamp())
    assert key == f"acct/2022-02-03/leg-{unix}.mp3"


def test_custom_file_name_replaces_the_leg_id() -> None:
    assert (
        object_key("acct", at(1643805460), "my-call", None) == "acct/2022-02-02/my-call-1643805460"
    )


@pytest.mark.parametrize("leaf", ["", ".", "..", "a/b", "a\\b", "a\nb"])
def test_unsafe_leaf_names_are_refused(leaf: str) -> None:
    with pytest.raises(ValueError):
        object_key("acct", at(0), leaf, None)


def test_naive_start_time_is_refused() -> None:
    with pytest.raises(ValueError):
        object_key("acct", datetime(2022, 2, 2), "leg", None)


def test_formats() -> None:
    assert content_type_for("wav") == "audio/wav"
    assert content_type_for("mp3") == "audio/mpeg"
    assert extension_for("wav") == "wav"
    assert extension_for("mp3") == "mp3"
    with pytest.raises(ValueError):
        content_type_for("ogg")
    with pytest.raises(ValueError):
        extension_for("ogg")


def test_canonical_urls_match_the_seed() -> None:
    key = f"{SEED_ACCOUNT}/2022-02-02/{SEED_LEG}-1643805460"
    assert gcs.canonical_url("tacrde12904", key) == f"gs://tacrde12904/{key}"
    assert s3.canonical_url("tacrde12904", key) == f"s3://tacrde12904/{key}"
    azure_key = f"7ab0a016-479f-4ab1-beaf-87b1a7430a01/2023-12-05/{SEED_LEG}-1643805461"
    assert (
        azure.canonical_url("https://my-account.blob.core.windows.net", "my-bucket", azure_key)
        == f"https://my-account.blob.core.windows.net/my-bucket/{azure_key}"
    )


def test_canonical_url_endpoints() -> None:
    assert (
        azure.canonical_url("http://127.0.0.1:1/devstoreaccount1/", "c", "k")
        == "http://127.0.0.1:1/devstoreaccount1/c/k"
    )
    assert (
        s3.generic_canonical_url("https://minio.example/", "bars", "a/b c")
        == "https://minio.example/bars/a/b%20c"
    )
    with pytest.raises(ValueError):
        s3.generic_canonical_url("", "bars", "k")


IDS = dict(
    recording_id="rec-1",
    connection_id="conn-1",
    call_control_id="cc-1",
    call_leg_id="leg-1",
    call_session_id="session-1",
    sha256="ab" * 32,
)


def test_a_recording_object_names_the_call_and_its_audio() -> None:
    stored = recording_object(**IDS, custom_file_name=None, format="mp3", decryption_metadata={})
    assert stored.leaf == "leg-1"
    assert stored.content_type == "audio/mpeg"
    assert stored.metadata == IDS


def test_an_encrypted_recording_object_is_ciphertext_that_carries_its_key() -> None:
    details = {"encrypted_cek": "c2Vj", "iv": "aXY=", "public_key_id": "key-1", "version": "2"}
    stored = recording_object(
        **IDS,
        custom_file_name="board-call",
        format="wav",
        decryption_metadata=object_metadata(details),
    )
    assert stored.leaf == "board-call"
    # the same answer as the encryption scheme's own rule
    assert stored.content_type == stored_content_type("audio/wav", details)
    assert stored.metadata == {**IDS, **object_metadata(details)}


def test_the_leaf_takes_a_disambiguator() -> None:
    assert recording_leaf(None, "leg-1") == "leg-1"
    assert recording_leaf("name", "leg-1", "ab12cd34") == "name-ab12cd34"
