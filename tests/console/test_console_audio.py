"""The console's audio route streams only what can be the recording (issue 21: a second layer
behind the egress guard): a store that answers with anything else gets 502, not a pass-through."""

from __future__ import annotations

import os

import pytest

from callvault.console.recordings import audio
from callvault.errors import ApiError
from callvault.recordings.audio import looks_like_stored_audio
from tests.recordings.samples import make_wav
from tests.worker.flow import create_application, ingest, recording_row


@pytest.mark.parametrize(
    ("first", "format", "encrypted", "fits"),
    [
        (make_wav(0.05)[:64], "wav", False, True),
        (b"ID3\x04\x00" + bytes(59), "mp3", False, True),
        (b"\xff\xfb\x90\x64" + bytes(60), "mp3", False, True),
        (b'{"AccessKeyId": "ASIA...", "SecretAccessKey": "..."}', "wav", False, False),
        (b"<html><body>internal admin</body></html>", "mp3", False, False),
        (os.urandom(64), "wav", True, True),
        (
            b'{"AccessKeyId": "ASIA...", "SecretAccessKey": "...", "Token": "..."}',
            "wav",
            True,
            False,
        ),
        (b"", "wav", True, False),
    ],
)
def test_what_can_be_a_stored_recording(first: bytes, format: str, encrypted: bool, fits: bool):
    assert looks_like_stored_audio(first, format, encrypted=encrypted) is fits


async def test_a_replaced_object_is_refused_with_502(api, runtime, account):
    connection_id = await create_application(api, account.api_key, "http://127.0.0.1:9/hooks")
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.1))
    row = await recording_row(runtime, recording_id)
    assert row.default_store_key
    served = await audio(runtime, account.account_id, recording_id)
    assert (b"".join([c async for c in served.chunks]))[:4] == b"RIFF"
    await runtime.default_store.put_file(
        row.default_store_key,
        b'{"Code": "Success", "AccessKeyId": "internal"}',
        content_type="application/json",
        metadata={},
    )
    with pytest.raises(ApiError) as refused:
        await audio(runtime, account.account_id, recording_id)
    assert refused.value.status == 502
