"""What an uploaded audio file really is: WAV or MP3, channels, duration. Pure, incremental.

Ingest feeds the bytes through `AudioSniffer` while it writes them to disk, so a 2 GiB file is
checked in the same single pass, in constant memory, and garbage is refused as soon as it shows.
Both readers only ever look at small fixed-size pieces at known offsets (a RIFF chunk header, a
4-byte MPEG frame header) and skip the payload in between without keeping it.

- WAV: RIFF/WAVE, a `fmt ` chunk before the `data` chunk; channels and byte rate from `fmt `;
  duration = data size / byte rate. A data chunk that claims more bytes than the file holds is
  a truncated file; a size of 0xFFFFFFFF (streaming writers) means "up to the end".
- MP3 (MPEG-1/2/2.5 audio, layers I-III): an optional ID3v2 tag, then a stream of frames, each
  header valid and consistent with the first (version, layer, sample rate, mono or not), each
  frame complete; at least `MIN_MP3_FRAMES` of them; only an ID3v1/APE/Lyrics3 tag may follow.
  Duration = frames * samples per frame / sample rate (an encoder's Xing/Info frame counts as
  one frame: ~26 ms of slack, fine for `duration_millis`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

Format = Literal["wav", "mp3"]
MIN_MP3_FRAMES = 3
SNIFF_BYTES = 12
MAX_FMT_CHUNK = 4096  # a real fmt chunk is 16 to 40 bytes


class AudioError(ValueError):
    """The bytes are not the audio they claim to be; `str()` is the reason for the client."""


@dataclass(frozen=True)
class AudioInfo:
    format: Format
    channels: int
    sample_rate: int
    duration_millis: int


def channels_for(layout: str) -> int:
    """The channel count a Telnyx `channels` value means."""
    return {"single": 1, "dual": 2}[layout]


def check_audio(info: AudioInfo, format: str, channels: str) -> None:
    """Raise AudioError unless the audio is what the metadata says."""
    if info.format != format:
        raise AudioError(f"the audio is a {info.format.upper()} file, not {format.upper()}")
    expected = channels_for(channels)
    if info.channels != expected:
        raise AudioError(
            f"the audio has {info.channels} channel(s) but channels is {channels!r} "
            f"({expected} channel(s))"
        )


class _OffsetReader:
    """Reads fixed-size pieces at absolute offsets of a stream fed in arbitrary chunks.

    Subclasses say how many bytes they need at `self._next` (`_want`) and consume them
    (`_step`), moving `_next` forward; everything between two pieces is skipped, never kept.
    """

    def __init__(self) -> None:
        self._fed = 0  # absolute offset of the end of the data fed so far
        self._next = 0  # absolute offset of the next piece wanted
        self._carry = b""  # the start of a piece split across two chunks
        self._carry_at = 0
        self._want = 0  # bytes needed at `_next`
        self.done = False  # nothing more is needed (the rest is skipped)
        self.error: str | None = None

    @property
    def size(self) -> int:
        return self._fed

    def feed(self, data: bytes | bytearray) -> None:
        start = self._fed
        self._fed += len(data)
        if self.done or self.error:
            return
        if self._carry:
            data = self._carry + data
            start = self._carry_at
            self._carry = b""
        view = memoryview(data)
        while not self.done and self.error is None:
            rel = self._next - start
            if rel >= len(data):
                return  # the wanted piece lies further on: skip this chunk
            need = self._want
            if rel + need > len(data):
                self._carry = bytes(view[rel:])
                self._carry_at = self._next
                return
            try:
                self._step(bytes(view[rel : rel + need]))
            except AudioError as exc:
                self.error = str(exc)

    def _step(self, piece: bytes) -> None:
        raise NotImplementedError


class WavReader(_OffsetReader):
    def __init__(self) -> None:
        super().__init__()
        self._state: Literal["riff", "chunk", "fmt"] = "riff"
        self._want = 12
        self._fmt_size = 0
        self.channels = 0
        self.sample_rate = 0
        self.byte_rate = 0
        self.data_offset: int | None = None
        self.data_size = 0

    def _step(self, piece: bytes) -> None:
        if self._state == "riff":
            if piece[:4] != b"RIFF" or piece[8:12] != b"WAVE":
                raise AudioError("not a WAV file (no RIFF/WAVE header)")
            self._next = 12
            self._state, self._want = "chunk", 8
        elif self._state == "chunk":
            chunk_id, size = piece[:4], struct.unpack("<I", piece[4:8])[0]
            if chunk_id == b"fmt ":
                if not 16 <= size <= MAX_FMT_CHUNK:
                    raise AudioError(f"WAV fmt chunk has an invalid size ({size} bytes)")
                self._fmt_size = size
                self._next += 8
                self._state, self._want = "fmt", size
            elif chunk_id == b"data":
                if not self.byte_rate:
                    raise AudioError("WAV data chunk comes before the fmt chunk")
                self.data_offset = self._next + 8
                self.data_size = size
                self.done = True
            else:
                self._next += 8 + size + (size & 1)  # chunks are padded to an even size
        else:
            _format_tag, channels, rate, byte_rate, block_align = struct.unpack(
                "<HHIIH", piece[:14]
            )
            if channels == 0 or rate == 0 or byte_rate == 0 or block_align == 0:
                raise AudioError(
                    "WAV fmt chunk is invalid (zero channels, sample rate or byte rate)"
                )
            self.channels, self.sample_rate, self.byte_rate = channels, rate, byte_rate
            self._next += self._fmt_size + (self._fmt_size & 1)
            self._state, self._want = "chunk", 8

    def finish(self) -> AudioInfo:
        if self.error:
            raise AudioError(self.error)
        if self._state == "riff":
            raise AudioError("not a WAV file (no RIFF/WAVE header)")
        if not self.byte_rate:
            raise AudioError("WAV file has no fmt chunk (truncated?)")
        if self.data_offset is None:
            raise AudioError("WAV file has no data chunk (truncated?)")
        available = self.size - self.data_offset
        size = available if self.data_size == 0xFFFFFFFF else self.data_size
        if size > available:
            raise AudioError(
                f"WAV file is truncated: the data chunk declares {size} bytes, "
                f"the file holds {max(available, 0)}"
            )
        return AudioInfo(
            "wav", self.channels, self.sample_rate, round(size * 1000 / self.byte_rate)
        )


# MPEG audio header tables, indexed by the header's bit fields
_VERSIONS = {0: "2.5", 2: "2", 3: "1"}  # 1 is reserved
_LAYERS = {1: 3, 2: 2, 3: 1}  # 0 is reserved
_BITRATES_KBPS = {
    ("1", 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    ("1", 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    ("1", 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    ("2", 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    ("2", 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    ("2", 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {
    "1": (44100, 48000, 32000),
    "2": (22050, 24000, 16000),
    "2.5": (11025, 12000, 8000),
}
MONO = 3  # channel mode bits: 0 stereo, 1 joint stereo, 2 dual channel, 3 mono


@dataclass(frozen=True)
class FrameHeader:
    version: str  # "1", "2" or "2.5"
    layer: int
    bitrate_kbps: int
    sample_rate: int
    padding: bool
    channel_mode: int

    @property
    def channels(self) -> int:
        return 1 if self.channel_mode == MONO else 2

    @property
    def samples(self) -> int:
        if self.layer == 1:
            return 384
        if self.layer == 3 and self.version != "1":
            return 576
        return 1152

    @property
    def length(self) -> int:
        """Bytes of the whole frame, header included."""
        bitrate = self.bitrate_kbps * 1000
        if self.layer == 1:
            return (12 * bitrate // self.sample_rate + self.padding) * 4
        return self.samples // 8 * bitrate // self.sample_rate + self.padding


def parse_frame_header(header: bytes) -> FrameHeader | None:
    """The MPEG audio frame header in 4 bytes, or None when they are not one we can use."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None  # no 11-bit frame sync
    version = _VERSIONS.get(header[1] >> 3 & 0b11)
    layer = _LAYERS.get(header[1] >> 1 & 0b11)
    if version is None or layer is None:
        return None
    bitrate_index = header[2] >> 4
    rate_index = header[2] >> 2 & 0b11
    # bitrate 0 is "free format": its frame length is not in the header, so not supported
    if bitrate_index in (0, 15) or rate_index == 3:
        return None
    table = _BITRATES_KBPS[("1" if version == "1" else "2", layer)]
    return FrameHeader(
        version=version,
        layer=layer,
        bitrate_kbps=table[bitrate_index],
        sample_rate=_SAMPLE_RATES[version][rate_index],
        padding=bool(header[2] >> 1 & 1),
        channel_mode=header[3] >> 6,
    )


def _synchsafe(data: bytes) -> int:
    return data[0] << 21 | data[1] << 14 | data[2] << 7 | data[3]


_TRAILING_TAGS = (b"TAG", b"APETAGEX", b"LYRICSBE")


class Mp3Reader(_OffsetReader):
    def __init__(self) -> None:
        super().__init__()
        self._state: Literal["tag", "frame", "tail"] = "tag"
        self._want = 10
        self.first: FrameHeader | None = None
        self.frames = 0
        self.samples = 0

    def _step(self, piece: bytes) -> None:
        if self._state == "tag":
            if piece[:3] == b"ID3":
                # ID3v2: 10-byte header, synchsafe size, +10 when a footer is present
                footer = 10 if piece[5] & 0x10 else 0
                self._next += 10 + _synchsafe(piece[6:10]) + footer
                return  # another tag may follow
            self._state, self._want = "frame", 4
            self._step(piece[:4])
        elif self._state == "frame":
            header = parse_frame_header(piece)
            if (
                header is not None
                and self.first is not None
                and not _same_stream(self.first, header)
            ):
                header = None
            if header is None:
                if self.frames < MIN_MP3_FRAMES:
                    raise AudioError(self._too_few(f"invalid frame header at byte {self._next}"))
                self._state, self._want = "tail", 8
                return
            self.first = self.first or header
            self.frames += 1
            self.samples += header.samples
            self._next += header.length
        else:
            if not piece.startswith(_TRAILING_TAGS):
                raise AudioError(
                    f"MP3 stream is corrupted: invalid frame header at byte {self._next}"
                )
            self.done = True  # a tag closes the file: the rest is its content

    def _too_few(self, why: str) -> str:
        return (
            f"not an MP3 file: {why} after {self.frames} valid frame(s); "
            f"at least {MIN_MP3_FRAMES} consecutive MPEG audio frames are required"
        )

    def finish(self) -> AudioInfo:
        if self.error:
            raise AudioError(self.error)
        if self.first is None or self.frames < MIN_MP3_FRAMES:
            raise AudioError(self._too_few("the file ends"))
        if self._state == "frame" and self._next != self.size:
            # past the end: the last frame is cut short; before it: a cut-off frame header
            raise AudioError("MP3 file is truncated: its last frame is incomplete")
        if self._state == "tail" and not self.done:
            # fewer than 8 bytes after the last frame: only a tag may be there
            raise AudioError(
                f"MP3 stream is corrupted: {self.size - self._next} stray byte(s) at the end"
            )
        first = self.first
        return AudioInfo(
            "mp3", first.channels, first.sample_rate, self.samples * 1000 // first.sample_rate
        )


def _same_stream(first: FrameHeader, header: FrameHeader) -> bool:
    # stereo and joint stereo may alternate frame by frame; mono never mixes with stereo
    return (
        header.version == first.version
        and header.layer == first.layer
        and header.sample_rate == first.sample_rate
        and header.channels == first.channels
    )


def _reader_for(head: bytes | bytearray) -> WavReader | Mp3Reader:
    is_wav = head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    return WavReader() if is_wav else Mp3Reader()


class AudioSniffer:
    """Feed the file's bytes in order; `finish()` says what it is or raises AudioError.

    The first 12 bytes decide the reader: RIFF/WAVE is read as WAV, anything else as MP3.
    """

    def __init__(self) -> None:
        self._head = b""
        self._reader: WavReader | Mp3Reader | None = None

    @property
    def size(self) -> int:
        return self._reader.size if self._reader else len(self._head)

    @property
    def error(self) -> str | None:
        """The reason, as soon as the bytes seen so far are known not to be audio."""
        return self._reader.error if self._reader else None

    @property
    def kind(self) -> Format | None:
        if self._reader is None:
            return None
        return "wav" if isinstance(self._reader, WavReader) else "mp3"

    def feed(self, data: bytes | bytearray) -> None:
        if self._reader is None:
            if len(self._head) + len(data) < SNIFF_BYTES:
                self._head += data
                return
            # the usual first chunk holds the head whole: read as it is, not copied
            data = self._head + data if self._head else data
            self._head = b""
            self._reader = _reader_for(data)
        self._reader.feed(data)

    def _start(self) -> None:
        head, self._head = self._head, b""
        self._reader = _reader_for(head)
        self._reader.feed(head)

    def finish(self) -> AudioInfo:
        if self._reader is None:
            if not self._head:
                raise AudioError("the audio is empty")
            self._start()
        assert self._reader is not None
        return self._reader.finish()

    def finish_as(self, format: str) -> AudioInfo:
        """Like `finish`, with the reason worded for the format the metadata claims."""
        if self._reader is None and self._head:
            self._start()
        if format == "wav" and self.kind == "mp3":
            raise AudioError("not a WAV file (no RIFF/WAVE header)")
        if format == "mp3" and self.kind == "wav":
            raise AudioError("not an MP3 file (it is a WAV file)")
        return self.finish()


def inspect_audio(data: bytes) -> AudioInfo:
    """The whole file at once (tests, small files)."""
    sniffer = AudioSniffer()
    sniffer.feed(data)
    return sniffer.finish()


# how many leading bytes `looks_like_stored_audio` needs
SNIFF_BYTES = 64


def looks_like_stored_audio(first: bytes, format: str, *, encrypted: bool) -> bool:
    """Whether the first bytes read back from a store can be this recording: a WAV or MP3
    header, or, for an encrypted recording, bytes that are not printable text (ciphertext is
    random; an error page, JSON or a metadata service's answer is text). A second layer behind
    the egress guard: what a store streams back never reaches the console unless it fits."""
    head = first[:SNIFF_BYTES]
    if encrypted:
        return bool(head) and not all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head)
    if format == "wav":
        return head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    return head[:3] == b"ID3" or parse_frame_header(head[:4]) is not None
