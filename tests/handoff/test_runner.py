"""The spool runners against a real `callvault serve` (crafted spools, no SIP): what is stored
leaves the spool, what cannot be leaves for failed/ with its reason, a second pass stores
nothing twice; and the generic watch directory."""

from __future__ import annotations

import asyncio
import json
import struct
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from callvault.handoff import spool, watch
from callvault.handoff.client import post_recording
from callvault.handoff.encode import Mp3Writer
from callvault.handoff.runner import Runner
from tests.conftest import LiveServer
from tests.handoff.conftest import Connection
from tests.handoff.crafted import CALLEE, CALLER, CraftedCall
from tests.receiver import WebhookReceiver


def crafted(settings: str) -> CraftedCall:
    call = CraftedCall(settings=settings)
    call.talk(CALLER, 440, 1.0, ssrc=1)
    call.talk(CALLEE, 1000, 1.0, ssrc=2)
    return call


def rtpengine_runner(callvault: LiveServer, spool_dir: Path) -> Runner:
    return Runner(
        server=callvault.url,
        token=callvault.settings.ingest_token,
        failed_dir=spool.failed_dir(spool_dir),
        scan=lambda: spool.scan_spool(spool_dir),
    )


async def recordings_of(callvault: LiveServer, connection: Connection) -> list[dict]:
    auth = {"Authorization": f"Bearer {connection.account.api_key}"}
    async with httpx.AsyncClient(base_url=callvault.url, headers=auth) as api:
        response = await api.get("/v2/recordings", params={"filter[connection_id]": connection.id})
    return list(response.json()["data"])


async def test_unusable_calls_go_to_failed_and_never_block_the_rest(
    callvault: LiveServer, connection: Connection, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    crafted(f"connection_id={connection.id}|from=alice|to=bob").write(spool_dir, "good-1")
    crafted("from=alice|to=bob").write(spool_dir, "no-connection-2")
    broken = crafted(f"connection_id={connection.id}").write(spool_dir, "broken-3")
    (spool_dir / "pcaps" / "broken-3.pcap").write_bytes(b"not a capture at all")
    crafted("connection_id=0000000000000000001").write(spool_dir, "unknown-app-4")

    stats = await asyncio.to_thread(rtpengine_runner(callvault, spool_dir).run_once)

    assert (stats.stored, stats.failed, stats.waiting) == (1, 3, 0)
    assert not list((spool_dir / "metadata").iterdir())
    assert not list((spool_dir / "pcaps").iterdir())
    failed = spool_dir / "failed"
    reasons = {p.name: p.read_text() for p in failed.glob("*.reason")}
    assert "no connection_id" in reasons["rtpengine-meta-no-connection-2.reason"]
    assert "not a pcap" in reasons["rtpengine-meta-broken-3.reason"]
    assert "ingest refused it: 422" in reasons["rtpengine-meta-unknown-app-4.reason"]
    assert (failed / broken.name).exists() and (failed / "broken-3.pcap").exists()
    [recording] = await recordings_of(callvault, connection)
    assert (recording["from"], recording["to"]) == ("alice", "bob")


async def test_a_second_pass_over_a_call_stores_nothing_twice(
    callvault: LiveServer,
    connection: Connection,
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    settings = f"connection_id={connection.id}|sip_call_id=twice@127.0.0.1|format=mp3"
    first = tmp_path / "first"
    crafted(settings).write(first)
    assert (await asyncio.to_thread(rtpengine_runner(callvault, first).run_once)).stored == 1
    second = tmp_path / "second"  # the same call again (a hand-off killed before it removed it)
    crafted(settings).write(second)
    stats = await asyncio.to_thread(rtpengine_runner(callvault, second).run_once)
    assert (stats.stored, stats.repeats) == (0, 1)
    assert not list((second / "metadata").iterdir())
    await webhook_receiver.wait_for(1, within=20)
    assert len(await recordings_of(callvault, connection)) == 1


def wav_bytes(seconds: float, channels: int = 1) -> bytes:
    frames = b"\x00\x10" * int(8000 * seconds) * channels
    header = struct.pack("<IHHIIHH", 16, 1, channels, 8000, 16000 * channels, 2 * channels, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + len(frames)) + b"WAVEfmt " + header
        + b"data" + struct.pack("<I", len(frames)) + frames
    )  # fmt: skip


async def test_the_watch_directory_takes_a_file_once_its_json_is_there(
    callvault: LiveServer, connection: Connection, tmp_path: Path
) -> None:
    directory = tmp_path / "drop"
    directory.mkdir()
    (directory / "call-7.wav").write_bytes(wav_bytes(0.5, channels=2))
    (directory / "waiting.wav").write_bytes(wav_bytes(0.5))  # its JSON is not there yet
    (directory / "orphan.json").write_text(json.dumps({"connection_id": connection.id}))
    (directory / "bare.mp3").write_bytes(mp3_bytes())  # times and layout from the file itself
    (directory / "bare.json").write_text(json.dumps({"connection_id": connection.id}))
    metadata = {
        "connection_id": connection.id,
        "recording_started_at": "2026-12-06T03:00:00Z",
        "recording_ended_at": "2026-12-06T03:00:00.5Z",
        "from": "+15550001111",
    }
    (directory / ".call-7.json.tmp").write_text(json.dumps(metadata))
    (directory / ".call-7.json.tmp").rename(directory / "call-7.json")
    runner = Runner(
        server=callvault.url,
        token=callvault.settings.ingest_token,
        failed_dir=watch.failed_dir(directory),
        scan=lambda: watch.scan_watch_dir(directory),
    )
    stats = await asyncio.to_thread(runner.run_once)
    assert (stats.stored, stats.failed) == (2, 1)
    assert sorted(p.name for p in directory.iterdir()) == ["failed", "waiting.wav"]
    assert "no orphan.wav or orphan.mp3" in (directory / "failed" / "orphan.reason").read_text()
    recordings = {r["format"]: r for r in await recordings_of(callvault, connection)}
    assert recordings["wav"]["channels"] == "dual"
    assert recordings["wav"]["from"] == "+15550001111"
    assert recordings["mp3"]["channels"] == "single"


def mp3_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.mp3"
        writer = Mp3Writer(path, 8000, 1)
        writer.write(b"\x00\x10" * 8000)
        writer.close()
        return path.read_bytes()


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "retry_after"),
    [
        (202, {}, "stored", None),
        (200, {}, "stored", None),
        (503, {"Retry-After": "7"}, "retry", 7.0),
        (507, {"Retry-After": "30"}, "retry", 30.0),
        (429, {}, "retry", 2.0),
        (401, {}, "retry", 2.0),  # a token being rotated: the spool waits, nothing is parked
        (502, {}, "retry", 2.0),
        (422, {}, "refused", None),
        (413, {}, "refused", None),
    ],
)
def test_what_an_ingest_answer_means(
    status: int, headers: dict[str, str], outcome: str, retry_after: float | None, tmp_path: Path
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t0ken"
        body = {"data": {"id": "r1", "status": "received"}} if status < 300 else {"errors": []}
        return httpx.Response(status, json=body, headers=headers)

    audio = tmp_path / "a.wav"
    audio.write_bytes(wav_bytes(0.1))
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        result = post_recording(client, "http://callvault", "t0ken", audio, {"format": "wav"})
    assert result.outcome == outcome
    if retry_after is not None:
        assert result.retry_after == retry_after


def test_a_server_that_cannot_be_reached_means_later(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    audio = tmp_path / "a.wav"
    audio.write_bytes(wav_bytes(0.1))
    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        result = post_recording(client, "http://callvault", "t0ken", audio, {"format": "wav"})
    assert result.outcome == "retry" and "t0ken" not in result.detail


def scripted_runner(spool_dir: Path, answers: list[httpx.Response]) -> tuple[Runner, list[float]]:
    """A runner whose server answers `answers` in turn (then 202s); the times it was asked."""
    asked: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(time.monotonic())
        if answers:
            return answers.pop(0)
        return httpx.Response(202, json={"data": {"id": "rec-1", "status": "received"}})

    runner = Runner(
        server="http://callvault.test",
        token="t0ken",
        failed_dir=spool.failed_dir(spool_dir),
        scan=lambda: spool.scan_spool(spool_dir),
        transport=httpx.MockTransport(answer),
    )
    return runner, asked


def test_503_with_retry_after_is_waited_for_then_the_call_goes(tmp_path: Path) -> None:
    crafted("connection_id=1").write(tmp_path)
    busy = httpx.Response(503, headers={"Retry-After": "1"}, json={"errors": []})
    runner, asked = scripted_runner(tmp_path, [busy])
    stats = runner.run_once()
    assert (stats.stored, stats.waiting) == (1, 0)
    assert len(asked) == 2 and asked[1] - asked[0] >= 0.95  # Retry-After: 1 honoured
    assert not list((tmp_path / "metadata").iterdir())


def test_507_that_persists_keeps_the_spool_and_stops_the_run(tmp_path: Path) -> None:
    crafted("connection_id=1").write(tmp_path, "first")
    crafted("connection_id=1").write(tmp_path, "second")
    full = [httpx.Response(507, headers={"Retry-After": "0"}, json={"errors": []})] * 9
    runner, asked = scripted_runner(tmp_path, list(full))
    runner.concurrency = 1
    stats = runner.run_once()
    assert (stats.stored, stats.waiting, stats.failed) == (0, 2, 0)
    assert len(asked) == runner.once_attempts  # the second call was not even tried
    assert len(list((tmp_path / "metadata").iterdir())) == 2
    assert len(list((tmp_path / "pcaps").iterdir())) == 2


def test_the_cli_needs_a_directory_and_a_token(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from callvault.cli import app

    # the process's logging stays as the suite set it (CliRunner's streams close after each run)
    monkeypatch.setattr("callvault.handoff.cli.configure_logging", lambda: None)
    monkeypatch.delenv("CALLVAULT_INGEST_TOKEN", raising=False)
    monkeypatch.setenv("CALLVAULT_DATA_DIR", str(tmp_path / "no-data-dir"))
    cli = CliRunner()
    missing = cli.invoke(app, ["handoff", "watch", str(tmp_path / "nowhere"), "--once"])
    assert missing.exit_code == 1 and "no directory" in missing.output
    no_token = cli.invoke(app, ["handoff", "rtpengine", "--spool-dir", str(tmp_path), "--once"])
    # no token given and no data dir to read one from: the data-dir rule's refusal (exit 2
    # through the command's entry point), naming both ways out
    assert no_token.exit_code != 0
    assert "no data dir" in str(no_token.exception) and "--token" in str(no_token.exception)
    empty = cli.invoke(
        app, ["handoff", "rtpengine", "--spool-dir", str(tmp_path), "--once", "--token", "x"]
    )
    assert empty.exit_code == 0 and "stored 0" in empty.output
