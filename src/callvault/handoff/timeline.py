"""Both parties' RTP on one clock: packets placed by RTP timestamp, emitted in windows. Pure.

Each party (the caller, who sent the INVITE, and the callee) gets one PCM track. A stream
(an SSRC of a party) is anchored at its first packet: the packet's capture time gives the
output position of its RTP timestamp; every later packet of the stream lands at
`anchor + (timestamp - anchor timestamp)` (extended over the 2^32 wrap), so reordering, loss,
silence suppression, comfort noise and DTMF events leave silence exactly where audio is
missing, and both tracks share the capture clock. A stream whose timestamps stray more than
`RESYNC_SECONDS` from the capture clock (a sender restarting its timestamps, or clock drift
over hours) is anchored again. A new SSRC of a party (a re-INVITE, a transfer) is a new stream.

Memory: only the last `REORDER_SECONDS` (+ one window) of each track is held; whatever is
older is handed to the sink, so a 2-hour call costs what a 10-second one does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from callvault.handoff.codecs import Decoder
from callvault.handoff.pcm import audioop
from callvault.handoff.rtp import RtpPacket, unwrap

CALLER, CALLEE = 0, 1
REORDER_SECONDS = 1.0  # a packet arriving later than this behind the newest one is dropped
RESYNC_SECONDS = 1.0
WINDOW_SECONDS = 1.0

# (caller PCM, callee PCM): equal lengths, 16-bit mono at the timeline's rate
Sink = Callable[[bytes, bytes], None]


@dataclass
class _Stream:
    clock_rate: int
    first_arrival: float
    last_ts: int  # extended RTP timestamp of the newest packet
    # output position = offset + extended timestamp * rate / clock_rate; None while the
    # stream's first `REORDER_SECONDS` are held to find it (`pending`)
    offset: float | None = None
    best: float = float("inf")  # the least-delayed packet's offset seen while pending
    pending: list[tuple[int, bytes]] = field(default_factory=list)  # (extended ts, PCM)
    decoders: dict[int, Decoder | None] = field(default_factory=dict)


@dataclass
class _Track:
    buffer: bytearray = field(default_factory=bytearray)  # samples from `base` on
    base: int = 0
    end: int = 0  # one past the last sample placed

    def place(self, position: int, pcm: bytes) -> None:
        start = position - self.base
        if start < 0:
            pcm = pcm[-start * 2 :]
            start = 0
        if not pcm:
            return
        stop = start * 2 + len(pcm)
        if stop > len(self.buffer):
            self.buffer.extend(bytes(stop - len(self.buffer)))
        self.buffer[start * 2 : stop] = pcm
        self.end = max(self.end, self.base + stop // 2)

    def take(self, samples: int) -> bytes:
        size = samples * 2
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        self.base += samples
        return chunk + bytes(size - len(chunk)) if len(chunk) < size else chunk


@dataclass
class TimelineStats:
    packets: int = 0
    placed: int = 0
    late: int = 0  # beyond the reorder window
    not_audio: int = 0  # DTMF events, comfort noise
    resyncs: int = 0
    undecodable: int = 0
    streams: int = 0


class Timeline:
    def __init__(self, rate: int, sink: Sink) -> None:
        self.rate = rate
        self.sink = sink
        self.tracks = (_Track(), _Track())
        self.streams: dict[tuple[int, int], _Stream] = {}
        self.first_us: int | None = None
        self.last_us: int | None = None
        self.emitted = 0  # samples handed to the sink
        self.stats = TimelineStats()
        self._window = int(WINDOW_SECONDS * rate)
        self._lag = int(REORDER_SECONDS * rate)
        self._resync = RESYNC_SECONDS * rate

    def add(
        self,
        party: int,
        time_us: int,
        packet: RtpPacket,
        clock_rate: int,
        decoder: Callable[[], Decoder | None],
    ) -> None:
        """One RTP packet of `party`, captured at `time_us`; `decoder` makes the stream's
        decoder for the packet's payload type the first time it is seen (None: not audio)."""
        self.note(time_us)
        assert self.first_us is not None
        arrival = (time_us - self.first_us) * self.rate / 1_000_000
        key = (party, packet.ssrc)
        previous = stream = self.streams.get(key)
        if stream is None or stream.clock_rate != clock_rate:
            stream = _Stream(clock_rate, arrival, packet.timestamp)
            if previous is not None:
                stream.decoders = previous.decoders  # a decoder's state outlives the switch
            self.streams[key] = stream
            self.stats.streams += 1
        extended = unwrap(packet.timestamp, stream.last_ts)
        stream.last_ts = max(stream.last_ts, extended)
        scale = self.rate / clock_rate
        if stream.offset is not None:
            position = stream.offset + extended * scale
            if abs(position - arrival) > self._resync:
                # the sender restarted its timestamps, or its clock drifted: anchor again
                stream.offset = arrival - extended * scale
                self.stats.resyncs += 1
        if packet.payload_type not in stream.decoders:
            stream.decoders[packet.payload_type] = decoder()
        codec = stream.decoders[packet.payload_type]
        if codec is None:
            self.stats.not_audio += 1
            return
        try:
            pcm = codec.decode(packet.payload)
        except Exception:  # one damaged packet of a codec FFmpeg decodes: silence there
            self.stats.undecodable += 1
            pcm = b""
        if pcm:
            if stream.offset is None:
                # held until the least-delayed of the first packets says where the stream starts
                if not stream.pending:
                    stream.first_arrival = arrival
                stream.best = min(stream.best, arrival - extended * scale)
                stream.pending.append((extended, pcm))
            else:
                self._place(party, stream, extended, pcm)
        for (held_party, _), held in self.streams.items():
            if held.pending and arrival - held.first_arrival >= self._lag:
                self._settle(held_party, held)
        # window by window: after a long pause without packets (a call on hold) the gap is
        # written out a second at a time, never built whole
        while int(arrival) - self._lag - self.emitted >= self._window:
            self._emit(self._window)

    def note(self, time_us: int) -> None:
        """A packet of the call that carries no audio (DTMF event, comfort noise): it counts
        for the call's span only; streams are made of audio packets."""
        if self.first_us is None:
            self.first_us = time_us
        self.last_us = time_us if self.last_us is None else max(self.last_us, time_us)
        self.stats.packets += 1

    def _settle(self, party: int, stream: _Stream) -> None:
        stream.offset = stream.best
        for extended, pcm in stream.pending:
            self._place(party, stream, extended, pcm)
        stream.pending = []

    def _place(self, party: int, stream: _Stream, extended: int, pcm: bytes) -> None:
        assert stream.offset is not None
        position = round(stream.offset + extended * self.rate / stream.clock_rate)
        if position + len(pcm) // 2 <= self.emitted:
            self.stats.late += 1
            return
        self.tracks[party].place(
            max(position, self.emitted), pcm[max(0, self.emitted - position) * 2 :]
        )
        self.stats.placed += 1

    def _emit(self, samples: int) -> None:
        caller, callee = (track.take(samples) for track in self.tracks)
        self.emitted += samples
        self.sink(caller, callee)

    def finish(self, tail_samples: int = 0) -> int:
        """Emit the rest: up to the last sample placed, or the last packet's time plus
        `tail_samples` (one packet's length), whichever is later. Returns the total samples."""
        if self.first_us is None or self.last_us is None:
            return 0
        for (party, _), stream in self.streams.items():
            if stream.pending:
                self._settle(party, stream)
        span = int((self.last_us - self.first_us) * self.rate / 1_000_000) + tail_samples
        end = max(span, *(track.end for track in self.tracks))
        while end - self.emitted > 0:
            self._emit(min(self._window, end - self.emitted))
        return self.emitted


def mix_single(caller: bytes, callee: bytes) -> bytes:
    """Both parties in one channel (saturating add)."""
    return audioop.add(caller, callee, 2)


def mix_dual(caller: bytes, callee: bytes) -> bytes:
    """Interleaved stereo: the caller left, the callee right."""
    return audioop.add(audioop.tostereo(caller, 2, 1, 0), audioop.tostereo(callee, 2, 0, 1), 2)
