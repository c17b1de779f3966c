"""A real SIP call recorded by rtpengine and handed off (issue 22): kamailio + rtpengine
(`--table=-1 --recording-method=pcap`) + baresip user agents on 127.0.0.1, each party playing
its own tone; `callvault handoff rtpengine` as a separate process, killed mid-backlog and run
again; callvault down while the calls end; the recordings in a SeaweedFS bucket (custom
storage) with verified `call.recording.saved` webhooks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import wave
from io import BytesIO
from pathlib import Path

import av
import httpx

from callvault.handoff.pcap import read_datagrams
from callvault.handoff.rtp import parse_rtp
from callvault.storage.factory import open_custom_store
from tests.conftest import LiveServer
from tests.handoff.conftest import Connection, handoff_command
from tests.handoff.crafted import channel, power
from tests.receiver import WebhookReceiver
from tests.servers import SipStack, make_tone

CALLER_HZ, CALLEE_HZ = 440, 1000  # the callee (tests/servers.py sip_stack) plays 1000 Hz
CALL_SECONDS = 3


def spool_files(spool: Path, sub: str) -> list[Path]:
    folder = spool / sub
    return sorted(folder.iterdir()) if folder.is_dir() else []


def rtp_span(pcap: Path) -> float:
    """Seconds from the first to the last RTP packet, plus one 20 ms packet."""
    times = []
    with pcap.open("rb") as handle:
        for datagram in read_datagrams(handle):
            if parse_rtp(datagram.payload) is not None:
                times.append(datagram.time_us)
    return (max(times) - min(times)) / 1e6 + 0.02


def wait_until(condition: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def decode_mp3(data: bytes) -> bytes:
    with av.open(BytesIO(data)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        return b"".join(
            bytes(f.planes[0])[: f.samples * 2]
            for frame in container.decode(stream)
            for f in resampler.resample(frame)
        )


async def test_real_calls_become_recordings_in_the_customer_bucket(
    sip_stack: SipStack,
    callvault: LiveServer,
    connection: Connection,
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    spool = sip_stack.spool
    assert not spool_files(spool, "metadata"), "the session's spool is this test's alone"
    token = callvault.settings.ingest_token
    env = {
        **os.environ,
        "CALLVAULT_HANDOFF_CONCURRENCY": "1",
        "CALLVAULT_HANDOFF_POLL_SECONDS": "0.1",
    }

    # callvault is down while three concurrent calls end
    callvault.stop()
    tone = make_tone(tmp_path / "caller-440hz.wav", CALLER_HZ)
    calls = {  # caller -> what the proxy is told to record (the dialled user carries it)
        "alice": ("wav", "dual"),
        "bob": ("mp3", "single"),
        "carol": ("wav", "dual"),
    }
    agents = [
        sip_stack.call(user, f"{connection.id}_{fmt}_{channels}", tone, CALL_SECONDS)
        for user, (fmt, channels) in calls.items()
    ]
    try:
        for agent in agents:
            assert await asyncio.to_thread(agent.wait, 30) == 0, "a user agent failed"
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    await asyncio.to_thread(
        wait_until, lambda: len(spool_files(spool, "metadata")) == 3, 10, "three finished calls"
    )
    spans, sip_call_ids = {}, {}
    for meta in spool_files(spool, "metadata"):
        text = meta.read_text()
        user = text.split("|from=", 1)[1].split("|", 1)[0]
        spans[user] = rtp_span(Path(text.splitlines()[0]))
        sip_call_ids[user] = text.split("|sip_call_id=", 1)[1].split("|", 1)[0]
    assert set(spans) == set(calls)

    down = await asyncio.to_thread(
        subprocess.run,
        handoff_command(
            "rtpengine", "--spool-dir", spool, "--server", callvault.url, "--token", token, "--once"
        ),
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert down.returncode == 1, down.stderr
    assert len(spool_files(spool, "metadata")) == 3 and len(spool_files(spool, "pcaps")) == 3
    assert not spool_files(spool, "failed")

    # callvault is back; a running hand-off is killed after its first call
    callvault.start()
    runner = subprocess.Popen(  # noqa: ASYNC220 (started, not waited for)
        handoff_command(
            "rtpengine", "--spool-dir", spool, "--server", callvault.url, "--token", token
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await asyncio.to_thread(
            wait_until, lambda: len(spool_files(spool, "metadata")) < 3, 30, "the first hand-off"
        )
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
    assert len(spool_files(spool, "metadata")) >= 1, "killed mid-backlog"

    again = await asyncio.to_thread(
        subprocess.run,
        handoff_command(
            "rtpengine", "--spool-dir", spool, "--server", callvault.url, "--token", token, "--once"
        ),
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert not spool_files(spool, "metadata") and not spool_files(spool, "pcaps")
    assert not spool_files(spool, "failed")

    deliveries = await webhook_receiver.wait_for(3, within=30)
    # nothing stored twice: three recordings on the API below, and no fourth webhook
    assert len(webhook_receiver.received()) == 3
    payloads = {}
    for delivery in deliveries:
        assert webhook_receiver.verify(delivery, connection.account.webhook_public_key) is not None
        data = delivery.json()["data"]
        assert data["event_type"] == "call.recording.saved"
        payloads[data["payload"]["recording_id"]] = data["payload"]

    store = open_custom_store("s3-generic", connection.bucket_config, allow_private_networks=True)
    auth = {"Authorization": f"Bearer {connection.account.api_key}"}
    async with httpx.AsyncClient(base_url=callvault.url, timeout=10, headers=auth) as api:
        listed = await api.get("/v2/recordings", params={"filter[connection_id]": connection.id})
        recordings = listed.json()["data"]
        assert len(recordings) == 3 and len({r["id"] for r in recordings}) == 3
        assert set(payloads) == {r["id"] for r in recordings}
        for recording in recordings:
            user = recording["from"]
            fmt, channels = calls[user]
            assert recording["to"] == f"{connection.id}_{fmt}_{channels}"
            found = await api.get(
                "/v2/recordings", params={"filter[sip_call_id]": sip_call_ids[user]}
            )
            assert [r["id"] for r in found.json()["data"]] == [recording["id"]]
            payload = payloads[recording["id"]]
            [(url_format, url)] = payload["recording_urls"].items()
            assert url_format == fmt and payload["channels"] == channels
            key = url.split(f"/{connection.bucket_config['bucket']}/", 1)[1]
            data = b"".join([chunk async for chunk in store.get_stream(key)])
            if fmt == "wav":
                with wave.open(BytesIO(data)) as audio:
                    assert audio.getnchannels() == 2
                    duration = audio.getnframes() / audio.getframerate()
                    frames = audio.readframes(audio.getnframes())
                left, right = channel(frames, 2, 0), channel(frames, 2, 1)
                assert power(left, CALLER_HZ) > 30 * power(left, CALLEE_HZ), user
                assert power(right, CALLEE_HZ) > 30 * power(right, CALLER_HZ), user
                assert abs(duration - spans[user]) < 0.5, (duration, spans[user])
            else:
                pcm = decode_mp3(data)
                assert abs(len(pcm) / 16000 - spans[user]) < 0.5
                assert power(pcm, CALLER_HZ) > 30 * power(pcm, 700)
                assert power(pcm, CALLEE_HZ) > 30 * power(pcm, 700)
