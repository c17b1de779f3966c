"""POST /internal/v1/recordings against the real databases and the local default store."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.recordings.models import RecordingStatus
from callvault.recordings.upload import BODY_OVERHEAD, declared_length_error
from callvault.runtime import Runtime
from tests.recordings.conftest import (
    BOUNDARY,
    CONTENT_TYPE,
    incoming_files,
    ingest_headers,
    local_store,
    metadata_for,
    multipart_body,
    objects_of,
    post_recording,
    recording_row,
    rows_for_connection,
)
from tests.recordings.samples import DUAL, MONO, make_mp3, make_wav

pytestmark = pytest.mark.usefixtures("clean_incoming")


async def test_ingest_wav_commits_row_and_durable_object(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    audio = make_wav(seconds=0.5, channels=1, rate=8000)
    metadata = metadata_for(connection_id, client_state="aGVsbG8=")
    runtime.work_ready.clear()

    response = await post_recording(api, runtime, metadata, audio)

    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["status"] == "received"
    assert runtime.work_ready.is_set()
    row = await recording_row(runtime, data["id"])
    assert row.account_id == account.account_id
    # no custom storage: the default store is its final place, stored at once (issue 14)
    assert row.status == RecordingStatus.STORED
    assert row.next_attempt_at is None and row.attempts == 0
    assert row.size_bytes == len(audio)
    assert row.sha256 == hashlib.sha256(audio).hexdigest()
    assert row.duration_millis == 500
    assert row.client_state == "aGVsbG8="
    assert row.recording_started_at == datetime.fromisoformat(metadata["recording_started_at"])
    started = row.recording_started_at.astimezone(UTC)
    expected_key = (
        f"{account.account_id}/{started:%Y-%m-%d}/{metadata['call_leg_id']}"
        f"-{int(started.timestamp())}.wav"
    )
    assert row.default_store_key == expected_key
    store = local_store(runtime)
    assert store.path_for(expected_key).read_bytes() == audio
    info = await store.head(expected_key)
    assert info is not None and info.content_type == "audio/wav"
    assert info.metadata["sha256"] == row.sha256
    assert info.metadata["recording_id"] == row.id
    assert info.metadata["call_leg_id"] == metadata["call_leg_id"]


async def test_a_short_recording_is_written_in_two_thread_hops(
    api: httpx.AsyncClient,
    runtime: Runtime,
    connection_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each hand-off to a thread costs CPU on the event loop (a future, a wake-up, the GIL
    back): a recording below the 1 MiB flush is written, checked and closed in one hop, and
    made durable in the default store in one more."""
    hops: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__qualname__", type(func).__name__))
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    response = await post_recording(api, runtime, metadata_for(connection_id), make_wav(0.5))
    assert response.status_code == 202, response.text
    assert hops == ["_AudioSink.absorb", "LocalStore._put_durably"]


async def test_ingest_dual_mp3_with_custom_file_name(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    audio = make_mp3(frames=30, mode=DUAL, id3=True)
    metadata = metadata_for(
        connection_id, format="mp3", channels="dual", custom_file_name="sales-call_7.final"
    )
    response = await post_recording(api, runtime, metadata, audio)
    assert response.status_code == 202, response.text
    row = await recording_row(runtime, response.json()["data"]["id"])
    assert row.default_store_key is not None
    assert row.default_store_key.split("/")[-1].startswith("sales-call_7.final-")
    assert row.default_store_key.endswith(".mp3")
    assert row.duration_millis == 30 * 1152 * 1000 // 44100
    info = await local_store(runtime).head(row.default_store_key)
    assert info is not None and info.content_type == "audio/mpeg"


async def test_metadata_after_audio(
    api: httpx.AsyncClient, runtime: Runtime, connection_id: str
) -> None:
    audio = make_wav(seconds=0.2, channels=2)
    metadata = metadata_for(connection_id, channels="dual")
    response = await post_recording(api, runtime, metadata, audio, audio_first=True)
    assert response.status_code == 202, response.text
    row = await recording_row(runtime, response.json()["data"]["id"])
    assert row.channels == "dual" and row.size_bytes == len(audio)


async def test_same_recording_again_answers_200_and_stores_nothing_twice(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    audio = make_wav(seconds=0.1)
    metadata = metadata_for(connection_id)
    first = await post_recording(api, runtime, metadata, audio)
    again = await post_recording(api, runtime, metadata, audio)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    assert again.json()["data"]["status"] == "stored"  # the row's state now
    assert await rows_for_connection(runtime, connection_id) == 1
    assert len(objects_of(runtime, account.account_id)) == 1


async def test_concurrent_first_sends_agree_on_one_recording(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    audio = make_wav(seconds=0.1)
    metadata = metadata_for(connection_id)
    responses = await asyncio.gather(
        *(post_recording(api, runtime, metadata, audio) for _ in range(3))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 202]
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert await rows_for_connection(runtime, connection_id) == 1
    [stored] = objects_of(runtime, account.account_id)
    assert stored.read_bytes() == audio


async def test_same_leaf_and_second_never_overwrites_another_recording(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    first_audio, second_audio = make_wav(seconds=0.1), make_wav(seconds=0.2)
    first = metadata_for(connection_id, custom_file_name="campaign")
    # another leg, started in the same second under the same custom file name
    second = metadata_for(connection_id, custom_file_name="campaign")
    ids = []
    for metadata, audio in ((first, first_audio), (second, second_audio)):
        response = await post_recording(api, runtime, metadata, audio)
        assert response.status_code == 202, response.text
        ids.append(response.json()["data"]["id"])
    rows = [await recording_row(runtime, i) for i in ids]
    assert rows[0].default_store_key != rows[1].default_store_key
    store = local_store(runtime)
    for row, audio in zip(rows, (first_audio, second_audio), strict=True):
        assert row.default_store_key is not None
        assert store.path_for(row.default_store_key).read_bytes() == audio


def _drop(field: str) -> dict[str, object]:
    return {field: ...}


BAD_METADATA = [
    pytest.param({"format": "ogg"}, "/metadata/format", id="bad-format"),
    pytest.param({"channels": "quad"}, "/metadata/channels", id="bad-channels"),
    pytest.param(_drop("call_leg_id"), "/metadata/call_leg_id", id="missing-call-leg-id"),
    pytest.param(_drop("recording_started_at"), "/metadata/recording_started_at", id="no-start"),
    pytest.param(
        {"recording_ended_at": "2024-05-17T09:00:00Z"},
        "/metadata/recording_ended_at",
        id="ends-before-start",
    ),
    pytest.param({"recording_started_at": "yesterday"}, "/metadata/recording_started_at", id="t"),
    pytest.param({"custom_file_name": "../etc"}, "/metadata/custom_file_name", id="path-name"),
    pytest.param({"custom_file_name": "x" * 41}, "/metadata/custom_file_name", id="long-name"),
    pytest.param({"call_leg_id": "a/b"}, "/metadata/call_leg_id", id="slash-in-leg"),
    pytest.param({"call_leg_id": ".."}, "/metadata/call_leg_id", id="dots-leg"),
    pytest.param({"client_state": "not base64!"}, "/metadata/client_state", id="client-state"),
    pytest.param({"connection_id": 42}, "/metadata/connection_id", id="numeric-connection"),
]


@pytest.mark.parametrize(("change", "pointer"), BAD_METADATA)
async def test_bad_metadata_is_422_at_its_field_and_changes_nothing(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    connection_id: str,
    change: dict[str, object],
    pointer: str,
) -> None:
    metadata = metadata_for(connection_id, **change)
    response = await post_recording(api, runtime, metadata, make_wav(seconds=0.1))
    assert response.status_code == 422, response.text
    pointers = [e["source"]["pointer"] for e in response.json()["errors"]]
    assert pointer in pointers
    await assert_nothing_left(runtime, account, connection_id)


async def test_an_id_pattern_error_says_the_allowed_characters_in_words(
    api: httpx.AsyncClient, runtime: Runtime, connection_id: str
) -> None:
    metadata = metadata_for(connection_id, call_leg_id="leg one", custom_file_name="a+b")
    response = await post_recording(api, runtime, metadata, make_wav(seconds=0.1))
    assert response.status_code == 422, response.text
    details = {e["source"]["pointer"]: e["detail"] for e in response.json()["errors"]}
    assert details["/metadata/call_leg_id"] == (
        "must be 1 to 128 characters: printable ASCII characters except space, '/' and '\\'"
    )
    assert details["/metadata/custom_file_name"] == (
        "must be 1 to 40 characters: letters, digits, '-', '.' or '_'"
    )


async def assert_nothing_left(runtime: Runtime, account: NewAccount, connection_id: str) -> None:
    assert await rows_for_connection(runtime, connection_id) == 0
    assert objects_of(runtime, account.account_id) == []
    assert incoming_files(runtime) == []


BAD_AUDIO = [
    pytest.param({}, make_wav(seconds=0.1, channels=2), "2 channel", id="dual-wav-as-single"),
    pytest.param(
        {"channels": "dual"}, make_wav(seconds=0.1, channels=1), "1 channel", id="mono-as-dual"
    ),
    pytest.param({}, b"hello, I am not a WAV file at all" * 20, "not a WAV", id="not-a-wav"),
    pytest.param({}, make_wav(seconds=0.5)[:-300], "truncated", id="truncated-wav"),
    pytest.param({"format": "mp3"}, make_mp3(frames=20)[:-100], "truncated", id="truncated-mp3"),
    pytest.param({"format": "mp3"}, bytes(range(256)) * 40, "not an MP3", id="garbage-mp3"),
    pytest.param({"format": "mp3"}, make_wav(seconds=0.1), "not an MP3", id="wav-as-mp3"),
    pytest.param(
        {"format": "mp3"}, make_mp3(frames=10, mode=MONO) + b"junk" * 30, "corrupt", id="j"
    ),
    pytest.param({}, b"", "empty", id="empty"),
]


@pytest.mark.parametrize(("change", "audio", "reason"), BAD_AUDIO)
async def test_audio_that_is_not_what_metadata_says_is_422(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    connection_id: str,
    change: dict[str, object],
    audio: bytes,
    reason: str,
) -> None:
    response = await post_recording(api, runtime, metadata_for(connection_id, **change), audio)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["source"]["pointer"] == "/audio"
    assert reason in error["detail"]
    await assert_nothing_left(runtime, account, connection_id)


async def test_unknown_connection_is_422(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    metadata = metadata_for("1999999999999999999")
    response = await post_recording(api, runtime, metadata, make_wav(seconds=0.1))
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"]["pointer"] == "/metadata/connection_id"
    await assert_nothing_left(runtime, account, connection_id)


@pytest.mark.parametrize(
    ("metadata", "audio", "status", "pointer"),
    [
        pytest.param(b"{not json", make_wav(seconds=0.1), 422, "/metadata", id="bad-json"),
        pytest.param(b"[1, 2]", make_wav(seconds=0.1), 422, "/metadata", id="json-array"),
        pytest.param(None, make_wav(seconds=0.1), 422, "/metadata", id="no-metadata"),
        pytest.param("ok", None, 422, "/audio", id="no-audio"),
    ],
)
async def test_missing_or_broken_parts(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    connection_id: str,
    metadata: bytes | str | None,
    audio: bytes | None,
    status: int,
    pointer: str,
) -> None:
    body = metadata_for(connection_id) if metadata == "ok" else metadata
    response = await post_recording(api, runtime, body, audio)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["source"]["pointer"] == pointer
    await assert_nothing_left(runtime, account, connection_id)


async def test_two_audio_parts_are_refused(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    audio = make_wav(seconds=0.1)
    body = multipart_body(
        [
            ("metadata", json.dumps(metadata_for(connection_id)).encode(), None),
            ("audio", audio, "a.wav"),
            ("audio", audio, "b.wav"),
        ]
    )
    response = await api.post(
        "/internal/v1/recordings",
        content=body,
        headers={"Content-Type": CONTENT_TYPE, **ingest_headers(runtime)},
    )
    assert response.status_code == 422
    await assert_nothing_left(runtime, account, connection_id)


async def test_not_multipart_is_415_and_a_cut_body_is_400(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    response = await api.post(
        "/internal/v1/recordings", json={"metadata": {}}, headers=ingest_headers(runtime)
    )
    assert response.status_code == 415
    assert response.json()["errors"][0]["code"]
    body = multipart_body(
        [
            ("metadata", json.dumps(metadata_for(connection_id)).encode(), None),
            ("audio", make_wav(seconds=0.1), "a.wav"),
        ]
    )
    cut = body[: -len(f"--{BOUNDARY}--\r\n") - 10]
    response = await api.post(
        "/internal/v1/recordings",
        content=cut,
        headers={"Content-Type": CONTENT_TYPE, **ingest_headers(runtime)},
    )
    assert response.status_code == 400, response.text
    await assert_nothing_left(runtime, account, connection_id)


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
async def test_wrong_or_missing_ingest_token_is_401(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    connection_id: str,
    token: str | None,
) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    headers["X-Test"] = "1"  # non-empty: post_recording would add the right token otherwise
    response = await post_recording(
        api, runtime, metadata_for(connection_id), make_wav(seconds=0.1), headers=headers
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "10009"
    await assert_nothing_left(runtime, account, connection_id)


async def test_an_account_api_key_is_not_an_ingest_token(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    headers = {"Authorization": f"Bearer {account.api_key}"}
    response = await post_recording(
        api, runtime, metadata_for(connection_id), make_wav(seconds=0.1), headers=headers
    )
    assert response.status_code == 401


@pytest.fixture
async def small_limit_api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The API with max_recording_bytes = 2000 (same database and store as `api`)."""
    limited = Runtime.build(dataclasses.replace(runtime.settings, max_recording_bytes=2000))
    transport = httpx.ASGITransport(app=create_app(limited), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as client:
        yield client
    await limited.close()


async def test_too_large_is_413_as_soon_as_the_limit_is_passed(
    small_limit_api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    connection_id: str,
) -> None:
    audio = make_wav(seconds=1.0)  # 16 kB > 2000 bytes
    head = multipart_body([("metadata", json.dumps(metadata_for(connection_id)).encode(), None)])
    head = head[: -len(f"--{BOUNDARY}--\r\n")]
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    ).encode()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head
        for start in range(0, len(audio), 500):
            sent += 1
            yield audio[start : start + 500]
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    response = await small_limit_api.post(
        "/internal/v1/recordings",
        content=body(),
        headers={"Content-Type": CONTENT_TYPE, **ingest_headers(runtime)},
    )
    assert response.status_code == 413, response.text
    assert response.json()["errors"][0]["code"] == "190002"
    assert sent < len(audio) // 500  # refused before the rest was read
    await assert_nothing_left(runtime, account, connection_id)


async def test_bad_metadata_first_is_refused_before_the_audio_is_read(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    metadata = json.dumps(metadata_for(connection_id, format="ogg")).encode()
    head = multipart_body([("metadata", metadata, None)])[: -len(f"--{BOUNDARY}--\r\n")]
    head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio"\r\n\r\n'.encode()
    chunks = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks
        yield head
        for _ in range(200):
            chunks += 1
            yield bytes(64 * 1024)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    response = await api.post(
        "/internal/v1/recordings",
        content=body(),
        headers={"Content-Type": CONTENT_TYPE, **ingest_headers(runtime)},
    )
    assert response.status_code == 422
    assert chunks < 200
    await assert_nothing_left(runtime, account, connection_id)


def test_declared_content_length_is_checked_up_front() -> None:
    assert declared_length_error(None, 1000) is None
    assert declared_length_error(str(1000 + BODY_OVERHEAD), 1000) is None
    too_big = declared_length_error(str(1001 + BODY_OVERHEAD), 1000)
    assert too_big is not None and too_big.status == 413
    malformed = declared_length_error("12abc", 1000)
    assert malformed is not None and malformed.status == 400
