"""The RTP-to-audio path on crafted rtpengine spools (pure: files in tmp_path, no servers)."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import av
import pytest

from callvault.handoff.convert import convert_call
from callvault.handoff.rtp import build_rtp
from callvault.handoff.spoolmeta import UnusableCall
from tests.handoff.crafted import (
    CALLEE,
    CALLER,
    T0_US,
    CraftedCall,
    channel,
    power,
    read_wav,
    rms,
    tone,
)

CALLER_HZ, CALLEE_HZ = 440, 1000


def two_party_call(seconds: float = 2.0, **caller: object) -> CraftedCall:
    call = CraftedCall()
    call.talk(CALLER, CALLER_HZ, seconds, ssrc=1111, **caller)  # type: ignore[arg-type]
    call.talk(CALLEE, CALLEE_HZ, seconds, ssrc=2222, ts0=5000, start_s=0.004)
    return call


def convert(call: CraftedCall, tmp_path: Path, **write: object) -> tuple[int, int, bytes, dict]:
    meta = call.write(tmp_path / "spool", **write)  # type: ignore[arg-type]
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    converted = convert_call(meta, work)
    channels, rate, frames = read_wav(converted.audio)
    return channels, rate, frames, converted.metadata


def test_dual_wav_puts_the_caller_left_and_lasts_the_rtp_span(tmp_path: Path) -> None:
    channels, rate, frames, metadata = convert(two_party_call(), tmp_path)
    assert (channels, rate) == (2, 8000)
    left, right = channel(frames, 2, 0), channel(frames, 2, 1)
    assert power(left, CALLER_HZ) > 100 * power(left, CALLEE_HZ)
    assert power(right, CALLEE_HZ) > 100 * power(right, CALLER_HZ)
    # the RTP span: the caller's first packet to the callee's last one, plus its 20 ms
    assert abs(len(left) / 2 / rate - 2.004) < 0.001
    started = datetime.fromisoformat(metadata["recording_started_at"])
    ended = datetime.fromisoformat(metadata["recording_ended_at"])
    assert round(started.timestamp() * 1e6) == T0_US
    assert abs((ended - started).total_seconds() - 2.004) < 0.001
    assert metadata["sip_call_id"] == "call-1@127.0.0.1"
    assert metadata["connection_id"] == "conn-1"


def test_a_second_pass_gives_the_same_ids_and_times(tmp_path: Path) -> None:
    first = convert(two_party_call(), tmp_path / "one")[3]
    second = convert(two_party_call(), tmp_path / "two")[3]
    assert first == second


def test_reordered_packets_land_by_timestamp(tmp_path: Path) -> None:
    in_order = convert(two_party_call(), tmp_path / "a")[2]
    call = two_party_call()
    # a third of the packets held up 1-80 ms on the way: captured after later ones
    rng = random.Random(7)
    for record in call.records[1:]:
        if rng.random() < 0.3:
            record.time_us += rng.randrange(1_000, 80_000)
    call.records.sort(key=lambda r: r.time_us)
    assert [r.payload for r in call.records] != [r.payload for r in two_party_call().records]
    reordered = convert(call, tmp_path / "b", order=False)[2]
    assert reordered[: len(in_order)] == in_order
    assert not reordered[len(in_order) :].strip(b"\0")  # a held-up last packet: silence after it


def test_a_timestamp_wrap_is_seamless(tmp_path: Path) -> None:
    plain = convert(two_party_call(), tmp_path / "a")[2]
    wrapped = convert(two_party_call(ts0=(1 << 32) - 160 * 30), tmp_path / "b")[2]
    assert wrapped == plain


def test_a_lost_burst_is_silence_in_place(tmp_path: Path) -> None:
    channels, rate, frames, _ = convert(two_party_call(skip=range(40, 60)), tmp_path)
    left = channel(frames, channels, 0)
    assert abs(len(left) / 2 / rate - 2.004) < 0.001  # nothing shifted
    assert rms(left[40 * 320 : 60 * 320]) == 0
    assert rms(left[60 * 320 : 61 * 320]) > 5000  # the tone resumes at its own time
    reference = convert(two_party_call(), tmp_path / "ref")[2]
    assert channel(reference, 2, 0)[60 * 320 :] == left[60 * 320 :]


def test_dtmf_events_are_silence_not_noise(tmp_path: Path) -> None:
    call = two_party_call(skip=range(50, 75))
    for n in range(50, 75):  # a telephone-event (RFC 4733) where the audio stopped
        event = bytes([5, 10, 0, 160])
        call.send(CALLER, T0_US + n * 20_000, build_rtp(101, n, n * 160, 1111, event))
    channels, _, frames, _ = convert(call, tmp_path)
    left = channel(frames, channels, 0)
    assert rms(left[50 * 320 : 75 * 320]) == 0
    assert power(left, CALLER_HZ) > 0


def test_comfort_noise_is_silence(tmp_path: Path) -> None:
    call = two_party_call(skip=range(50, 75))
    for n in (50, 60, 70):  # CN (RFC 3389): a noise level byte
        call.send(CALLER, T0_US + n * 20_000, build_rtp(13, n, n * 160, 1111, b"\x40"))
    channels, _, frames, _ = convert(call, tmp_path)
    assert rms(channel(frames, channels, 0)[50 * 320 : 75 * 320]) == 0


def test_an_ssrc_change_continues_on_the_same_side(tmp_path: Path) -> None:
    call = CraftedCall()
    call.talk(CALLER, CALLER_HZ, 1.0, ssrc=1111, ts0=0)
    call.talk(CALLER, CALLER_HZ, 1.0, ssrc=9999, ts0=777_777, seq0=4000, start_s=1.0)
    call.talk(CALLEE, CALLEE_HZ, 2.0, ssrc=2222)
    channels, rate, frames, _ = convert(call, tmp_path)
    left, right = channel(frames, channels, 0), channel(frames, channels, 1)
    assert len(left) // 2 == 2 * rate
    assert min(rms(left[i : i + 320]) for i in range(0, len(left), 320)) > 5000  # no gap
    assert power(right, CALLER_HZ) * 100 < power(right, CALLEE_HZ)


def test_an_unknown_codec_is_a_clear_failure(tmp_path: Path) -> None:
    call = CraftedCall(offer_codecs="96", rtpmaps=("96 AMR/8000",))
    for n in range(50):
        call.send(CALLER, T0_US + n * 20_000, build_rtp(96, n, n * 160, 1111, b"\x00" * 32))
    with pytest.raises(UnusableCall, match=r"AMR/8000 cannot be decoded"):
        convert(call, tmp_path)


def test_payload_types_missing_from_the_sdp_are_no_audio(tmp_path: Path) -> None:
    call = CraftedCall()
    for n in range(50):
        call.send(CALLER, T0_US + n * 20_000, build_rtp(99, n, n * 160, 1111, b"\x00" * 160))
    with pytest.raises(UnusableCall, match="payload type"):
        convert(call, tmp_path)


def test_a_truncated_pcap_keeps_what_came_before_the_cut(tmp_path: Path) -> None:
    meta = two_party_call().write(tmp_path / "spool")
    pcap_path = tmp_path / "spool" / "pcaps" / "call1-0123456789abcdef.pcap"
    data = pcap_path.read_bytes()
    pcap_path.write_bytes(data[: len(data) // 2 - 37])  # mid-record
    converted = convert_call(meta, tmp_path)
    assert converted.truncated
    channels, rate, frames = read_wav(converted.audio)
    assert 0.9 < len(frames) / (2 * channels) / rate < 1.1


def test_a_file_that_is_not_a_pcap_fails(tmp_path: Path) -> None:
    meta = two_party_call().write(tmp_path / "spool")
    (tmp_path / "spool" / "pcaps" / "call1-0123456789abcdef.pcap").write_bytes(b"nonsense" * 9)
    with pytest.raises(UnusableCall, match="not a pcap"):
        convert_call(meta, tmp_path)


def test_one_party_only_leaves_the_other_channel_silent(tmp_path: Path) -> None:
    call = CraftedCall()
    call.talk(CALLEE, CALLEE_HZ, 1.0, ssrc=2222)
    channels, rate, frames, _ = convert(call, tmp_path)
    assert rms(channel(frames, channels, 0)) == 0
    assert rms(channel(frames, channels, 1)) > 5000
    assert len(frames) // 4 == rate


def test_without_connection_id_the_call_is_unusable(tmp_path: Path) -> None:
    call = two_party_call()
    call.settings = "from=a|to=b"
    with pytest.raises(UnusableCall, match="no connection_id"):
        convert(call, tmp_path)


def test_parties_are_told_apart_by_ssrc_when_addresses_do_not_match(tmp_path: Path) -> None:
    call = two_party_call()
    for record in call.records:  # a NAT: the media arrives at addresses the SDP never named
        record.dst = ("10.9.9.9", record.dst[1] + 1000)
    meta = call.write(tmp_path / "spool")
    text = meta.read_text()
    text = text.replace("a=sendrecv", "a=ssrc:1111 cname:x\na=sendrecv", 1)  # the offer's
    meta.write_text(text.replace("t=0 0\nm=audio 30012", "t=0 0\nm=audio 30012", 1))
    # the answer carries the callee's SSRC
    head, _, tail = text.rpartition("a=sendrecv")
    meta.write_text(head + "a=ssrc:2222 cname:y\na=sendrecv" + tail)
    converted = convert_call(meta, tmp_path)
    channels, _, frames = read_wav(converted.audio)
    left = channel(frames, channels, 0)
    assert power(left, CALLER_HZ) > 100 * power(left, CALLEE_HZ)


def test_single_mp3_holds_both_parties(tmp_path: Path) -> None:
    call = two_party_call()
    call.settings = "connection_id=conn-1|format=mp3|channels=single"
    meta = call.write(tmp_path / "spool")
    converted = convert_call(meta, tmp_path)
    assert converted.audio.suffix == ".mp3"
    with av.open(str(converted.audio)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.channels == 1
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        pcm = b"".join(
            bytes(f.planes[0])[: f.samples * 2]
            for frame in container.decode(stream)
            for f in resampler.resample(frame)
        )
    assert 1.9 < len(pcm) / 2 / 8000 < 2.3
    assert power(pcm, CALLER_HZ) > 50 * power(pcm, 700)
    assert power(pcm, CALLEE_HZ) > 50 * power(pcm, 700)


def test_g722_is_decoded_by_ffmpeg_into_a_16_khz_recording(tmp_path: Path) -> None:
    encoder = av.CodecContext.create("g722", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 16000, "mono", "s16"  # type: ignore[attr-defined]
    encoder.open()
    call = CraftedCall(offer_codecs="9", rtpmaps=("9 G722/8000",))
    for n in range(50):  # 20 ms packets: 320 samples at 16 kHz, 160 RTP ticks (RFC 3551)
        frame = av.AudioFrame(format="s16", layout="mono", samples=320)
        frame.planes[0].update(tone(440, 320, n * 320, rate=16000))
        frame.sample_rate, frame.pts = 16000, n * 320
        payload = b"".join(bytes(p) for p in encoder.encode(frame))  # type: ignore[attr-defined]
        call.send(CALLER, T0_US + n * 20_000, build_rtp(9, n, n * 160, 1111, payload))
    channels, rate, frames, _ = convert(call, tmp_path)
    assert rate == 16000
    left = channel(frames, channels, 0)
    assert abs(len(left) / 2 / rate - 1.0) < 0.01
    assert power(left[3200:], 440, rate=16000) > 100 * power(left[3200:], 1000, rate=16000)


def test_a_long_pause_without_packets_is_silence_of_its_length(tmp_path: Path) -> None:
    call = CraftedCall()
    call.talk(CALLER, CALLER_HZ, 1.0, ssrc=1111)
    # on hold for two minutes: no RTP at all, then the same stream goes on
    call.talk(CALLER, CALLER_HZ, 1.0, ssrc=1111, start_s=121.0, ts0=121 * 8000, seq0=50)
    channels, rate, frames, _ = convert(call, tmp_path)
    left = channel(frames, channels, 0)
    assert abs(len(left) / 2 / rate - 122.0) < 0.001
    assert rms(left[2 * rate * 2 : 120 * rate * 2]) == 0
    assert rms(left[121 * rate * 2 :]) > 5000


def test_opus_is_decoded_by_ffmpeg(tmp_path: Path) -> None:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "mono", "s16"  # type: ignore[attr-defined]
    encoder.open()
    call = CraftedCall(offer_codecs="111", rtpmaps=("111 opus/48000/2",))
    packets = []
    for n in range(50):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(tone(440, 960, n * 960, rate=48000))
        frame.sample_rate, frame.pts = 48000, n * 960
        packets += [bytes(p) for p in encoder.encode(frame)]  # type: ignore[attr-defined]
    for n, payload in enumerate(packets):
        call.send(CALLER, T0_US + n * 20_000, build_rtp(111, n, n * 960, 1111, payload))
    channels, rate, frames, _ = convert(call, tmp_path)
    assert rate == 16000
    left = channel(frames, channels, 0)
    assert power(left[6400:], 440, rate=16000) > 100 * power(left[6400:], 1000, rate=16000)
