"""`POST /internal/v1/rtpengine/recordings`: requests made as rtpengine >= 11.3's recording
daemon makes them (recording-daemon/notify.c: libcurl, one multipart part `ngfile` set with
curl_mime_data, i.e. no filename and no content type, the facts in X-Recording-* headers).
curl's `-F 'ngfile=<FILE'` builds exactly that part, with libcurl, as the daemon does."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from pathlib import Path

import httpx

from callvault.handoff.encode import Mp3Writer, WavWriter
from callvault.handoff.endpoints import RedactQueryToken
from tests.conftest import LiveServer
from tests.handoff.conftest import Connection
from tests.handoff.crafted import tone

PATH = "/internal/v1/rtpengine/recordings"


def notify_headers(
    metadata: str | None,
    *,
    file_format: str = "wav",
    kind: str = "mixed",
    start: float = 1796529447.505954,
    call_id: str = "a55ccbc94ae3809d",
    tag: str | None = None,
) -> dict[str, str]:
    """The headers notify_req_setup_http() adds, in its order and formats."""
    name = f"{call_id}-55db94eeaee4d5f3-mix"
    headers = {
        "X-Recording-Call-ID": call_id,
        "X-Recording-File-Name": f"{name}.{file_format}",
        "X-Recording-Full-File-Name": f"/var/spool/rtpengine/{name}.{file_format}",
        "X-Recording-File-Format": file_format,
        "X-Recording-Kind": kind,
        "X-Recording-Call-Start-Time": f"{start - 0.1:.06f}",
        "X-Recording-Stream-Start-Time": f"{start:.06f}",
        "X-Recording-Call-End-Time": f"{start + 2:.06f}",
        "X-Recording-Stream-End-Time": f"{start + 2:.06f}",
    }
    if metadata is not None:
        headers["X-Recording-Call-Metadata"] = metadata
        headers["X-Recording-DB-Metadata"] = metadata
    if tag is not None:
        headers["X-Recording-Tag"] = tag
    return headers


def curl_notify(url: str, headers: dict[str, str], audio: Path) -> tuple[int, dict]:
    command = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-F", f"ngfile=<{audio}"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, timeout=30, check=True)
    body, _, status = done.stdout.decode().rpartition("\n")
    return int(status), json.loads(body)


def wav_file(path: Path, channels: int, seconds: float = 2.0) -> Path:
    writer = WavWriter(path, 8000, channels)
    pcm = tone(440, int(8000 * seconds))
    writer.write(
        pcm if channels == 1 else b"".join(pcm[i : i + 2] * 2 for i in range(0, len(pcm), 2))
    )
    writer.close()
    return path


async def test_a_mixed_recording_is_ingested_once(
    callvault: LiveServer, connection: Connection, tmp_path: Path
) -> None:
    audio = wav_file(tmp_path / "mix.wav", channels=2)
    metadata = f"connection_id={connection.id}|from=alice|to=bob|client_state=aGk="
    url = f"{callvault.url}{PATH}?token={callvault.settings.ingest_token}"
    status, body = await asyncio.to_thread(curl_notify, url, notify_headers(metadata), audio)
    assert status == 202, body
    recording_id = body["data"]["id"]
    # the daemon retries a notification it thinks failed: the same recording, nothing twice
    status, again = await asyncio.to_thread(curl_notify, url, notify_headers(metadata), audio)
    assert (status, again["data"]["id"]) == (200, recording_id)

    auth = {"Authorization": f"Bearer {connection.account.api_key}"}
    async with httpx.AsyncClient(base_url=callvault.url, headers=auth) as api:
        found = await api.get("/v2/recordings", params={"filter[sip_call_id]": "a55ccbc94ae3809d"})
        [recording] = found.json()["data"]
    assert recording["id"] == recording_id
    assert (recording["from"], recording["to"], recording["channels"]) == ("alice", "bob", "dual")
    assert recording["recording_started_at"].startswith("2026-12-06T03:57:27.505954")


async def test_a_single_stream_mp3_is_one_partys_recording(
    callvault: LiveServer, connection: Connection, tmp_path: Path
) -> None:
    audio = tmp_path / "tag.mp3"
    writer = Mp3Writer(audio, 8000, 1)
    writer.write(tone(1000, 16000))
    writer.close()
    url = f"{callvault.url}{PATH}?token={callvault.settings.ingest_token}"
    ids = []
    for tag in ("caller-tag", "callee-tag"):
        headers = notify_headers(
            f"connection_id={connection.id}", file_format="mp3", kind="single", tag=tag
        )
        status, body = await asyncio.to_thread(curl_notify, url, headers, audio)
        assert status == 202, body
        ids.append(body["data"]["id"])
    assert len(set(ids)) == 2  # each party's stream is its own recording


async def test_a_wrong_or_missing_token_is_refused(
    callvault: LiveServer, connection: Connection, tmp_path: Path
) -> None:
    audio = wav_file(tmp_path / "mix.wav", channels=1)
    headers = notify_headers(f"connection_id={connection.id}")
    for query in ("", "?token=", "?token=not-the-token"):
        status, body = await asyncio.to_thread(
            curl_notify, f"{callvault.url}{PATH}{query}", headers, audio
        )
        assert status == 401
        assert body["errors"][0]["code"]


async def test_headers_without_the_settings_answer_422(
    callvault: LiveServer, connection: Connection, tmp_path: Path
) -> None:
    audio = wav_file(tmp_path / "mix.wav", channels=1)
    url = f"{callvault.url}{PATH}?token={callvault.settings.ingest_token}"
    cases = [
        (notify_headers(None), "connection_id"),
        (notify_headers(f"connection_id={connection.id}", file_format="opus"), "wav or mp3"),
        (
            {
                **notify_headers(f"connection_id={connection.id}"),
                "X-Recording-Stream-Start-Time": "x",
            },
            "Unix seconds",
        ),
    ]
    for headers, words in cases:
        status, body = await asyncio.to_thread(curl_notify, url, headers, audio)
        assert status == 422 and words in body["errors"][0]["detail"], body
    # odd values end in a 422, never a 500
    base = notify_headers(f"connection_id={connection.id}")
    for name, value in [
        ("X-Recording-Stream-Start-Time", "nan"),
        ("X-Recording-Stream-End-Time", "1e300"),
        ("X-Recording-Stream-Start-Time", "-99999999999999"),
        ("X-Recording-Call-ID", "has space"),
        ("X-Recording-Call-Metadata", f"connection_id={connection.id}|from=a b|to=c"),
        ("X-Recording-Call-Metadata", "connection_id=" + "9" * 40),
    ]:
        status, body = await asyncio.to_thread(curl_notify, url, {**base, name: value}, audio)
        assert status == 422, (name, value, body)
    # audio that is not what the headers say
    (tmp_path / "junk.wav").write_bytes(b"not audio" * 100)
    status, body = await asyncio.to_thread(
        curl_notify, url, notify_headers(f"connection_id={connection.id}"), tmp_path / "junk.wav"
    )
    assert status == 422, body


def test_the_token_never_reaches_an_access_log() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"{PATH}?token=s3cret-value&x=1", "1.1", 202),
        None,
    )
    assert RedactQueryToken().filter(record)
    line = record.getMessage()
    assert "s3cret-value" not in line and "token=***&x=1" in line
    assert any(isinstance(f, RedactQueryToken) for f in logging.getLogger("uvicorn.access").filters)
