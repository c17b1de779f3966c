"""Receive an ingest request: multipart/form-data parsed as a stream, the audio straight to disk.

With encryption on (the application names a recording encryption key), the audio is checked as
plaintext but only its AES-256-GCM ciphertext (tag appended) is written: the plaintext never
touches disk. The key is looked up as soon as the metadata part is read. When the audio part
comes first, ingest cannot know yet: it encrypts under a fresh content key anyway and, if the
application turns out not to encrypt, decrypts the file back once complete (the rare order pays
one more pass; the plaintext is only ever written for recordings that are stored in clear).
`size` and `sha256` are those of the bytes written (the ciphertext when encrypted).

Starlette's `request.form()` would spool the whole body first; here python-multipart's
streaming parser runs over `request.stream()`, the audio part goes to a temp file in
`{data_dir}/incoming/` in 1 MiB writes (off the event loop), hashed and checked
(`AudioSniffer`) on the way, so memory stays flat whatever the recording's size. The parts may
come in any order. Limits are enforced as the bytes arrive: the declared Content-Length up
front, then the audio size and the whole body as they grow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from callvault.encryption_keys.scheme import ContentEncryptor, Recipient, decrypt_stream
from callvault.errors import (
    ApiError,
    Code,
    ErrorItem,
    bad_request,
    error_message,
    invalid,
    request_timeout,
    too_large,
    unsupported_media,
)
from callvault.recordings.audio import AudioError, AudioInfo, AudioSniffer, check_audio
from callvault.recordings.schemas import IngestMetadata
from callvault.scratch import temp_path

MAX_METADATA_BYTES = 64 * 1024
# room in the body for everything but the audio: metadata, part headers, boundaries
BODY_OVERHEAD = 1024 * 1024
FLUSH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class BodyPace:
    """How slowly an ingest body may arrive before it is cut off with 408, so that a client
    that trickles bytes cannot hold a request (a temp file, a connection) forever:

    - `idle_secs`: at most this long without a single byte;
    - `min_bytes_per_sec`: after the first `idle_secs`, the body so far must average at least
      this rate (a client sending one byte every few seconds is not idle, but it is too slow).

    Environment: CALLVAULT_INGEST_IDLE_SECS (30), CALLVAULT_INGEST_MIN_BYTES_PER_SEC (65536).
    """

    idle_secs: float = 30.0
    min_bytes_per_sec: float = 64 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BodyPace:
        idle = float(environ.get("CALLVAULT_INGEST_IDLE_SECS") or cls.idle_secs)
        rate = float(environ.get("CALLVAULT_INGEST_MIN_BYTES_PER_SEC") or cls.min_bytes_per_sec)
        if idle <= 0 or rate < 0:
            raise ValueError("CALLVAULT_INGEST_IDLE_SECS must be positive, the rate not negative")
        return cls(idle_secs=idle, min_bytes_per_sec=rate)

    def wait_limit(self, elapsed: float, received: int) -> float:
        """How long the next chunk may take (pure): the idle limit, or less when the average
        rate would fall below the minimum before then."""
        if self.min_bytes_per_sec <= 0:
            return self.idle_secs
        # the moment `received` bytes are no longer enough for the minimum average rate
        rate_deadline = self.idle_secs + received / self.min_bytes_per_sec
        return max(0.0, min(self.idle_secs, rate_deadline - elapsed))


def body_too_slow(pace: BodyPace) -> ApiError:
    return request_timeout(
        f"The body arrived too slowly (no data for {pace.idle_secs:g} s, or less than "
        f"{pace.min_bytes_per_sec:g} bytes/s on average); send it again."
    )


async def paced(chunks: AsyncIterator[bytes], pace: BodyPace) -> AsyncIterator[bytes]:
    """`chunks`, cut off with 408 (body_too_slow) when they come too slowly."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0
    iterator = aiter(chunks)
    while True:
        limit = pace.wait_limit(loop.time() - started, received)
        try:
            async with asyncio.timeout(limit):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise body_too_slow(pace) from None
        received += len(chunk)
        yield chunk


@dataclass
class ReceivedUpload:
    metadata: IngestMetadata
    audio: AudioInfo
    path: Path
    size: int
    sha256: str
    encryption_details: dict[str, str] | None = None
    # chosen before the first byte is encrypted: format 2 binds it (scheme.py)
    recording_id: str = field(default_factory=lambda: str(uuid.uuid4()))


# whom a recording's audio is encrypted for (None: stored in clear), from its metadata
EncryptionResolver = Callable[[IngestMetadata], Awaitable[Recipient | None]]


@contextmanager
def incoming_file(data_dir: Path) -> Iterator[Path]:
    """A fresh temp path in `{data_dir}/incoming/`, removed whatever happens (and, after a
    kill -9, by the next process: callvault/scratch.py)."""
    path = temp_path(data_dir / "incoming")
    try:
        yield path
    finally:
        # the default store may have moved the file already
        path.unlink(missing_ok=True)


def declared_length_error(content_length: str | None, max_audio_bytes: int) -> ApiError | None:
    """413 when Content-Length alone shows the body cannot fit (checked before reading)."""
    if content_length is None:
        return None
    try:
        declared = int(content_length)
    except ValueError:
        return bad_request("The Content-Length header is not a number.")
    if declared > max_audio_bytes + BODY_OVERHEAD:
        return _audio_too_large(max_audio_bytes)
    return None


def _audio_too_large(max_audio_bytes: int) -> ApiError:
    return too_large(f"The recording is larger than the limit of {max_audio_bytes} bytes.")


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise unsupported_media(
            "The body must be multipart/form-data with parts `metadata` and `audio`."
        )
    return boundary


def metadata_error(exc: ValidationError) -> ApiError:
    """Pydantic's errors as Telnyx 422 items pointing into the metadata part."""
    items = []
    for error in exc.errors():
        loc = "/".join(str(part) for part in error.get("loc", ()))
        pointer = f"/metadata/{loc}" if loc else "/metadata"
        items.append(
            ErrorItem(Code.BAD_REQUEST, "Invalid value", error_message(error), pointer=pointer)
        )
    return ApiError(422, items)


def parse_metadata(raw: bytes) -> IngestMetadata:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("The metadata part is not valid JSON.", pointer="/metadata") from None
    if not isinstance(document, dict):
        raise invalid("The metadata part must be a JSON object.", pointer="/metadata")
    try:
        return IngestMetadata.model_validate(document)
    except ValidationError as exc:
        raise metadata_error(exc) from None


def audio_failure(sniffer: AudioSniffer, format: str | None) -> str | None:
    """Why the audio seen so far cannot be accepted, worded for the claimed format if known."""
    if format == "wav" and sniffer.kind == "mp3":
        return "not a WAV file (no RIFF/WAVE header)"
    if format == "mp3" and sniffer.kind == "wav":
        return "not an MP3 file (it is a WAV file)"
    if sniffer.error is None:
        return None
    if format is None:
        return f"the audio is neither a WAV nor an MP3 file ({sniffer.error})"
    return sniffer.error


def audio_invalid(reason: str) -> ApiError:
    return invalid(f"The audio is not valid: {reason}.", pointer="/audio")


@dataclass
class _FormState:
    """What the parser's callbacks collect; errors are raised after `write` returns."""

    max_audio_bytes: int
    audio_name: str = "audio"  # the audio part's form field name
    metadata_name: str | None = "metadata"  # None: the metadata comes from elsewhere
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    disposition: bytes = b""
    part: str | None = None  # "metadata", "audio" or None (ignored part)
    metadata_raw: bytearray = field(default_factory=bytearray)
    metadata_complete: bool = False
    audio_parts: int = 0
    audio_size: int = 0
    pending: bytearray = field(default_factory=bytearray)  # audio not yet written
    ended: bool = False
    error: ApiError | None = None

    def on_part_begin(self) -> None:
        self.disposition = b""
        self.part = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self.header_name).strip().lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name", b"").decode("latin-1")
        if name == self.audio_name:
            name = "audio"
        elif name == "audio" or name != self.metadata_name:
            name = ""  # a part this request does not use
        else:
            name = "metadata"
        if name == "audio":
            self.audio_parts += 1
            if self.audio_parts > 1:
                self.fail(invalid("More than one audio part.", pointer="/audio"))
        elif name == "metadata" and (self.metadata_raw or self.metadata_complete):
            self.fail(invalid("More than one metadata part.", pointer="/metadata"))
        self.part = name if name in ("audio", "metadata") else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        if self.part == "audio":
            self.audio_size += end - start
            if self.audio_size > self.max_audio_bytes:
                self.fail(_audio_too_large(self.max_audio_bytes))
                return
            self.pending += memoryview(data)[start:end]  # one copy, not two
        elif self.part == "metadata":
            self.metadata_raw += data[start:end]
            if len(self.metadata_raw) > MAX_METADATA_BYTES:
                limit = f"The metadata part is larger than {MAX_METADATA_BYTES} bytes."
                self.fail(too_large(limit))

    def on_part_end(self) -> None:
        if self.part == "metadata":
            self.metadata_complete = True
        self.part = None

    def on_end(self) -> None:
        self.ended = True

    def fail(self, error: ApiError) -> None:
        if self.error is None:
            self.error = error


class _AudioSink:
    """The temp file, the sha256 and size of what it holds, and the audio check (on the
    plaintext); `absorb` and `seal` run in a worker thread. The file is opened by the first
    write (in that thread too): a short recording costs one thread hop, not four."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[bytes] | None = None
        self.hash = hashlib.sha256()
        self.sniffer = AudioSniffer()
        self.written = 0
        self.started = False
        self.encryptor: ContentEncryptor | None = None

    def start(self, *, encrypt: bool, recipient: Recipient | None, recording_id: str) -> None:
        """Decided before the first byte is written: encrypted or clear, and for whom (unknown
        yet: unbound, re-encrypted for the key at the end)."""
        self.started = True
        self.encryptor = ContentEncryptor(recipient, recording_id) if encrypt else None

    def absorb(self, data: bytes | bytearray, seal: bool = False) -> None:
        """Write `data`; `seal`: it is the last of the audio (see `seal`)."""
        if data:
            self.sniffer.feed(data)
            self._write(self.encryptor.update(data) if self.encryptor else data)
        if seal:
            self.seal()

    def seal(self) -> None:
        """Append the GCM tag (encrypted files only) and close the file (made, empty, if
        nothing was written)."""
        if self.encryptor is not None:
            self._write(self.encryptor.finish())
        self._file().close()

    @property
    def open(self) -> bool:
        return self.handle is not None and not self.handle.closed

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()

    def _file(self) -> IO[bytes]:
        if self.handle is None:
            self.handle = open(self.path, "wb")  # closed by seal or close
        return self.handle

    def _write(self, data: bytes | bytearray) -> None:
        self._file().write(data)
        self.hash.update(data)
        self.written += len(data)


class _HashingWriter:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.hash = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.hash.update(data)
        self.written += len(data)


class _EncryptingWriter:
    """Encrypts what it is given into `handle`, hashing the ciphertext."""

    def __init__(self, handle: IO[bytes], encryptor: ContentEncryptor) -> None:
        self.inner = _HashingWriter(handle)
        self.encryptor = encryptor

    def write(self, data: bytes) -> None:
        self.inner.write(self.encryptor.update(data))


def _reencrypt(
    path: Path, placeholder: ContentEncryptor, bound: ContentEncryptor
) -> tuple[int, str]:
    """Replace `path` (encrypted unbound, the key unknown when the audio arrived) by the same
    audio encrypted with `bound`, in one streaming pass: no plaintext touches the disk.
    (size, sha256) of the new file."""
    fresh = temp_path(path.parent)
    try:
        with open(path, "rb") as source, open(fresh, "wb") as target:
            writer = _EncryptingWriter(target, bound)
            decrypt_stream(source, path.stat().st_size, writer, placeholder.cek, placeholder.iv)
            writer.inner.write(bound.finish())
        os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)
    return writer.inner.written, writer.inner.hash.hexdigest()


def _decrypt_back(path: Path, cek: bytes, iv: bytes) -> tuple[int, str]:
    """Replace the encrypted `path` by its plaintext; (size, sha256) of the plaintext."""
    plain = temp_path(path.parent)
    try:
        with open(path, "rb") as source, open(plain, "wb") as target:
            writer = _HashingWriter(target)
            decrypt_stream(source, path.stat().st_size, writer, cek, iv)
        os.replace(plain, path)
    finally:
        plain.unlink(missing_ok=True)
    return writer.written, writer.hash.hexdigest()


async def receive_upload(
    request: Request,
    path: Path,
    max_audio_bytes: int,
    encryption_for: EncryptionResolver | None = None,
    pace: BodyPace | None = None,
    recording_id: str | None = None,
    *,
    audio_part: str = "audio",
    given_metadata: IngestMetadata | None = None,
    channels_from_audio: bool = False,
) -> ReceivedUpload:
    """Read the whole request into `path` (audio) and the validated metadata, or raise ApiError.

    The caller owns `path` (see `incoming_file`): it is written here and removed there.
    `encryption_for` says whom the audio is encrypted for (None: never encrypted);
    `recording_id` is the id the recording will have (default: a fresh one, answered in the
    result), which encryption binds.
    `given_metadata`: the metadata is not in the body (rtpengine's notification carries it in
    headers), the audio is the part named `audio_part`; `channels_from_audio` then takes the
    channel layout from the file itself.
    """
    recording_id = recording_id or str(uuid.uuid4())
    early = declared_length_error(request.headers.get("content-length"), max_audio_bytes)
    if early is not None:
        raise early
    state = _FormState(
        max_audio_bytes=max_audio_bytes,
        audio_name=audio_part,
        metadata_name=None if given_metadata is not None else "metadata",
    )
    parser = _parser_for(request.headers.get("content-type"), state)
    body = _Body(state, _AudioSink(path), encryption_for, given_metadata, recording_id)
    try:
        await body.resolve()  # metadata given up front: the key is known before the first byte
        await body.read(paced(request.stream(), pace or BodyPace()), parser)
    except ClientDisconnect:
        raise bad_request("The client went away before the body was complete.") from None
    finally:
        if body.sink.open:  # the body was cut off: sealed files are closed already
            await asyncio.to_thread(body.sink.close)

    body.metadata, audio = _checked(state, body.sink.sniffer, body.metadata, channels_from_audio)
    await body.resolve()
    size, sha256, details = await _settle_encryption(path, body.sink, body.recipient, recording_id)
    return ReceivedUpload(
        metadata=body.metadata,
        audio=audio,
        path=path,
        size=size,
        sha256=sha256,
        encryption_details=details,
        recording_id=recording_id,
    )


def _parser_for(content_type: str | None, state: _FormState) -> MultipartParser:
    return MultipartParser(
        boundary_of(content_type),
        {
            "on_part_begin": state.on_part_begin,
            "on_part_data": state.on_part_data,
            "on_part_end": state.on_part_end,
            "on_header_field": state.on_header_field,
            "on_header_value": state.on_header_value,
            "on_header_end": state.on_header_end,
            "on_headers_finished": state.on_headers_finished,
            "on_end": state.on_end,
        },
    )


class _Body:
    """The request body as it is read: the parts' state, the audio's sink, and the metadata
    and whom the audio is encrypted for, once they are known."""

    def __init__(
        self,
        state: _FormState,
        sink: _AudioSink,
        encryption_for: EncryptionResolver | None,
        metadata: IngestMetadata | None,
        recording_id: str,
    ) -> None:
        self.state = state
        self.sink = sink
        self.encryption_for = encryption_for
        self.metadata = metadata
        self.recording_id = recording_id
        self.recipient: Recipient | None = None
        self.resolved = encryption_for is None

    async def resolve(self) -> None:
        if not self.resolved and self.metadata is not None and self.encryption_for is not None:
            self.recipient = await self.encryption_for(self.metadata)
            self.resolved = True

    async def read(self, chunks: AsyncIterator[bytes], parser: MultipartParser) -> None:
        """Parse the body, the audio written as it comes; the sink sealed at the end."""
        state = self.state
        body_bytes = 0
        async for chunk in chunks:
            body_bytes += len(chunk)
            if body_bytes > state.max_audio_bytes + BODY_OVERHEAD:
                raise _audio_too_large(state.max_audio_bytes)
            try:
                parser.write(chunk)
            except MultipartParseError:
                raise bad_request("The body is not valid multipart/form-data.") from None
            if state.error is not None:
                raise state.error
            if self.metadata is None and state.metadata_complete:
                # validate as soon as it is there: bad metadata is refused before the audio
                self.metadata = parse_metadata(bytes(state.metadata_raw))
                await self.resolve()
            if len(state.pending) >= FLUSH_BYTES:
                await self.flush()
                claimed = self.metadata.format if self.metadata else None
                reason = audio_failure(self.sink.sniffer, claimed)
                if reason is not None:
                    raise audio_invalid(reason)
        if not state.ended:
            raise bad_request("The multipart body is incomplete (no closing boundary).")
        await self.flush(seal=True)

    async def flush(self, seal: bool = False) -> None:
        """Write the audio received so far; `seal`: all of it is there (one hop for both)."""
        if not self.sink.started and self.state.pending:
            # unknown yet (audio before metadata): encrypted, so that no plaintext is written
            self.sink.start(
                encrypt=self.recipient is not None or not self.resolved,
                recipient=self.recipient,
                recording_id=self.recording_id,
            )
        # handed over, not copied: the parser appends to a new buffer from here on
        data, self.state.pending = self.state.pending, bytearray()
        if data or seal:
            await asyncio.to_thread(self.sink.absorb, data, seal)


def _checked(
    state: _FormState,
    sniffer: AudioSniffer,
    metadata: IngestMetadata | None,
    channels_from_audio: bool,
) -> tuple[IngestMetadata, AudioInfo]:
    """The metadata and the audio of a complete body, both there and valid, or ApiError."""
    if metadata is None:
        if not state.metadata_complete:
            raise invalid("The metadata part is missing.", pointer="/metadata")
        metadata = parse_metadata(bytes(state.metadata_raw))
    if state.audio_parts == 0:
        raise invalid("The audio part is missing.", pointer="/audio")
    reason = audio_failure(sniffer, metadata.format)
    if reason is not None:
        raise audio_invalid(reason)
    try:
        audio = sniffer.finish_as(metadata.format)
        if channels_from_audio and audio.channels in (1, 2):
            metadata = metadata.model_copy(
                update={"channels": "dual" if audio.channels == 2 else "single"}
            )
        check_audio(audio, metadata.format, metadata.channels)
    except AudioError as exc:
        raise audio_invalid(str(exc)) from None
    return metadata, audio


async def _settle_encryption(
    path: Path, sink: _AudioSink, recipient: Recipient | None, recording_id: str
) -> tuple[int, str, dict[str, str] | None]:
    """The file as it is kept, encrypted for `recipient` or in clear: its size, its sha256
    and the encryption details."""
    size, sha256 = sink.written, sink.hash.hexdigest()
    details: dict[str, str] | None = None
    if sink.encryptor is not None and recipient is not None:
        encryptor = sink.encryptor
        if encryptor.bound_to is None:
            # the audio came before the metadata: encrypted for no one yet
            encryptor = ContentEncryptor(recipient, recording_id)
            size, sha256 = await asyncio.to_thread(_reencrypt, path, sink.encryptor, encryptor)
        details = await asyncio.to_thread(encryptor.details_for, recipient)
    elif sink.encryptor is not None:
        # encrypted only because the audio came before the metadata: the application stores
        # its recordings in clear
        encryptor = sink.encryptor
        size, sha256 = await asyncio.to_thread(_decrypt_back, path, encryptor.cek, encryptor.iv)
    elif recipient is not None:
        raise RuntimeError("audio written in clear for an application that encrypts")
    return size, sha256, details
