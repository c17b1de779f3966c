"""`callvault ingest FILE …`: what a media server does, from the command line (pinned interface).

The file is streamed to the server (httpx reads it in chunks; never whole into memory). Only
the recording id goes to stdout, so scripts can do `id=$(callvault ingest …)`.

Without --started-at / --ended-at the times come from the file itself: it ended at its
modification time (a recorder writes the file until the call ends) and started its duration
earlier. The same command twice therefore sends the same (connection, leg, start) and the
server answers the first recording's id instead of storing a second one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from callvault.config import NoDataDir, load_client_settings, looks_like_data_dir
from callvault.recordings.audio import AudioError, AudioInfo, AudioSniffer

err = Console(stderr=True)
READ_CHUNK = 1024 * 1024
# the leg ids of a directory's files: uuid5(this, "{call control id}/{file name}")
LEG_NAMESPACE = uuid.UUID("6f1d3c52-8a4e-4f0b-9a57-0c1e5d2b7a10")
# connecting is quick; answering may take a while after a large upload (the server stores the
# file durably before it answers)
TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=600.0)


def inspect_file(path: Path) -> AudioInfo | None:
    """The file's format, channels and duration, read in chunks; None if it is not audio
    (the server then says why, in its own words)."""
    sniffer = AudioSniffer()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            sniffer.feed(chunk)
            if sniffer.error:
                return None
    try:
        return sniffer.finish()
    except AudioError:
        return None


def ingest_token(explicit: str | None) -> str | None:
    """--token, else CALLVAULT_INGEST_TOKEN, else the embedded server's `ingest.token` file.

    Read directly rather than through load_settings, which would make a new token when none
    exists: a client must not invent a token. Without a data dir there, ConfigurationError
    says so (exit 2, as every command that needs one).
    """
    if explicit:
        return explicit
    client = load_client_settings()
    if client.ingest_token:
        return client.ingest_token
    data_dir = client.data_dir
    if not looks_like_data_dir(data_dir):
        raise NoDataDir(
            f"no data dir at {data_dir} (set CALLVAULT_DATA_DIR, or pass --token or "
            "CALLVAULT_INGEST_TOKEN)"
        )
    try:
        return (data_dir / "ingest.token").read_text().strip() or None
    except OSError:
        return None


def error_lines(response: httpx.Response) -> list[str]:
    """The API's error details, one line each, with the field they point at."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    lines = []
    for error in errors:
        where = (error.get("source") or {}).get("pointer") or (error.get("source") or {}).get(
            "parameter"
        )
        text = error.get("detail") or error.get("title") or "error"
        lines.append(f"{text} ({where})" if where else str(text))
    return lines or [response.text.strip()[:500] or response.reason_phrase]


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(1)


class IngestFailed(Exception):
    """One file could not be ingested; the message says why (shown as `error: ...`)."""


def format_of(file: Path, format: str | None) -> str:
    if format is None:
        format = file.suffix.lower().lstrip(".")
        if format not in ("wav", "mp3"):
            raise IngestFailed(f"cannot tell the format from {file.name!r}: pass --format wav|mp3")
    if format not in ("wav", "mp3"):
        raise IngestFailed("--format must be wav or mp3")
    return format


def metadata_for(
    file: Path,
    format: str,
    *,
    connection_id: str,
    call_control_id: str,
    call_leg_id: str,
    call_session_id: str,
    channels: str | None,
    started_at: str | None,
    ended_at: str | None,
    client_state: str | None,
    custom_file_name: str | None,
    parties: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """The metadata part for one file: times and channels from the file where not given
    (`parties`: the optional `from`, `to`, `sip_call_id`)."""
    info = inspect_file(file) if channels is None or started_at is None else None
    # stable: the file's modification time, so a repeat is the same recording (module doc)
    modified = datetime.fromtimestamp(file.stat().st_mtime, UTC).replace(microsecond=0)
    ended = ended_at or modified.isoformat()
    if started_at is None:
        duration = timedelta(milliseconds=info.duration_millis if info else 0)
        try:
            end_time = datetime.fromisoformat(ended)
        except ValueError:
            raise IngestFailed(f"--ended-at {ended!r} is not an ISO 8601 time") from None
        started_at = (end_time - duration).isoformat()
    if channels is None:
        channels = "dual" if info and info.channels == 2 else "single"
    return {
        "connection_id": connection_id,
        "call_control_id": call_control_id,
        "call_leg_id": call_leg_id,
        "call_session_id": call_session_id,
        "format": format,
        "channels": channels,
        "recording_started_at": started_at,
        "recording_ended_at": ended,
        "client_state": client_state,
        "custom_file_name": custom_file_name,
        **{key: value for key, value in (parties or {}).items() if value is not None},
    }


def post_recording(
    client: httpx.Client, url: str, secret: str, file: Path, metadata: dict[str, Any]
) -> tuple[str, bool]:
    """POST one recording; (recording id, True when it was new, False for a repeat)."""
    content_type = "audio/wav" if metadata["format"] == "wav" else "audio/mpeg"
    try:
        with file.open("rb") as audio:
            # the metadata goes first (form data precede files), so bad metadata is refused
            # before any audio is sent; httpx streams the file object in chunks
            response = client.post(
                url,
                headers={"Authorization": f"Bearer {secret}"},
                data={"metadata": json.dumps(metadata)},
                files={"audio": (file.name, audio, content_type)},
            )
    except httpx.HTTPError as exc:
        raise IngestFailed(f"cannot reach {url}: {exc}") from None
    if response.status_code not in (200, 202):
        lines = error_lines(response)
        raise IngestFailed(f"{response.status_code}: " + "; ".join(lines))
    return str(response.json()["data"]["id"]), response.status_code == 202


def audio_files(directory: Path) -> list[Path]:
    """The .wav and .mp3 files directly in `directory`, by name."""
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix.lower() in (".wav", ".mp3") and path.is_file()
    )


# the command's arguments and options (typer reads them from the annotations)
FileArgument = Annotated[
    Path,
    typer.Argument(
        exists=True,
        readable=True,
        help="A .wav/.mp3 file, or a directory: every .wav and .mp3 in it, with a progress bar.",
    ),
]
ConnectionIdOption = Annotated[str, typer.Option("--connection-id", help="The application id.")]
CallControlIdOption = Annotated[str, typer.Option("--call-control-id", help="The call's id.")]
CallLegIdOption = Annotated[
    str | None,
    typer.Option(
        "--call-leg-id",
        help="Default: the call control id (a directory: a UUID made from it and the file name).",
    ),
]
CallSessionIdOption = Annotated[
    str | None, typer.Option("--call-session-id", help="Default: a new UUID.")
]
FormatOption = Annotated[
    str | None, typer.Option("--format", help="wav or mp3. Default: from the file's extension.")
]
ChannelsOption = Annotated[
    str | None,
    typer.Option("--channels", help="single or dual. Default: from the file (mono: single)."),
]
StartedAtOption = Annotated[
    str | None,
    typer.Option(
        "--started-at",
        help="ISO 8601. Default: the end minus the audio's duration (stable: a repeat of the "
        "same command is the same recording).",
    ),
]
EndedAtOption = Annotated[
    str | None,
    typer.Option("--ended-at", help="ISO 8601. Default: the file's modification time."),
]
ClientStateOption = Annotated[str | None, typer.Option("--client-state", help="Base64.")]
CustomFileNameOption = Annotated[
    str | None,
    typer.Option("--custom-file-name", help="The object's name instead of the call leg id."),
]
FromOption = Annotated[str | None, typer.Option("--from", help="The caller (E.164 or SIP URI).")]
ToOption = Annotated[str | None, typer.Option("--to", help="The callee (E.164 or SIP URI).")]
SipCallIdOption = Annotated[str | None, typer.Option("--sip-call-id", help="The SIP Call-ID.")]
ServerOption = Annotated[str, typer.Option("--server", help="callvault's URL.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", help="Ingest token. Default: $CALLVAULT_INGEST_TOKEN or the data dir's."
    ),
]


@dataclass(frozen=True)
class CallFields:
    """The metadata the command's options give, the same for every file it sends."""

    connection_id: str
    call_control_id: str
    call_session_id: str | None
    channels: str | None
    started_at: str | None
    ended_at: str | None
    client_state: str | None
    parties: dict[str, str | None]  # the optional `from`, `to`, `sip_call_id`

    def metadata_for(
        self, file: Path, format: str, *, call_leg_id: str, custom_file_name: str | None
    ) -> dict[str, Any]:
        return metadata_for(
            file,
            format,
            connection_id=self.connection_id,
            call_control_id=self.call_control_id,
            call_leg_id=call_leg_id,
            call_session_id=self.call_session_id or str(uuid.uuid4()),
            channels=self.channels,
            started_at=self.started_at,
            ended_at=self.ended_at,
            client_state=self.client_state,
            custom_file_name=custom_file_name,
            parties=self.parties,
        )


def ingest(
    file: FileArgument,
    connection_id: ConnectionIdOption,
    call_control_id: CallControlIdOption,
    call_leg_id: CallLegIdOption = None,
    call_session_id: CallSessionIdOption = None,
    format: FormatOption = None,
    channels: ChannelsOption = None,
    started_at: StartedAtOption = None,
    ended_at: EndedAtOption = None,
    client_state: ClientStateOption = None,
    custom_file_name: CustomFileNameOption = None,
    from_: FromOption = None,
    to: ToOption = None,
    sip_call_id: SipCallIdOption = None,
    server: ServerOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Post a recording to the ingest endpoint; prints the recording id.

    Given a directory: every .wav/.mp3 in it, one line `<recording id><TAB><file name>` each."""
    fields = CallFields(
        connection_id=connection_id,
        call_control_id=call_control_id,
        call_session_id=call_session_id,
        channels=channels,
        started_at=started_at,
        ended_at=ended_at,
        client_state=client_state,
        parties={"from": from_, "to": to, "sip_call_id": sip_call_id},
    )
    if not file.is_dir():
        ingest_file(
            file,
            fields,
            format=format,
            call_leg_id=call_leg_id,
            custom_file_name=custom_file_name,
            server=server,
            token=token,
        )
        return
    if call_leg_id is not None or custom_file_name is not None:
        # one leg id (or object name) for many recordings would name them all alike
        raise fail("--call-leg-id and --custom-file-name name one recording: not for a directory")
    ingest_directory(file, fields, format=format, server=server, token=token)


def ingest_file(
    file: Path,
    fields: CallFields,
    *,
    format: str | None,
    call_leg_id: str | None,
    custom_file_name: str | None,
    server: str,
    token: str | None,
) -> None:
    """One recording; its id to stdout."""
    try:
        format = format_of(file, format)
    except IngestFailed as exc:
        raise fail(str(exc)) from None
    if fields.channels is not None and fields.channels not in ("single", "dual"):
        raise fail("--channels must be single or dual")
    secret = _required_token(token)
    try:
        metadata = fields.metadata_for(
            file,
            format,
            call_leg_id=call_leg_id or fields.call_control_id,
            custom_file_name=custom_file_name,
        )
        with httpx.Client(timeout=TIMEOUT) as client:
            recording_id, created = post_recording(
                client, _ingest_url(server), secret, file, metadata
            )
    except IngestFailed as exc:
        raise fail(str(exc)) from None
    if not created:
        err.print("[dim]already received: the same recording (nothing stored twice)[/dim]")
    typer.echo(recording_id)


def ingest_directory(
    directory: Path, fields: CallFields, *, format: str | None, server: str, token: str | None
) -> None:
    """Every .wav/.mp3 of `directory`, one after the other, over one connection; a file that
    fails is reported and the others go on (exit code 1 if any failed)."""
    if fields.channels is not None and fields.channels not in ("single", "dual"):
        raise fail("--channels must be single or dual")
    if format is not None and format not in ("wav", "mp3"):
        raise fail("--format must be wav or mp3")
    secret = _required_token(token)
    files = audio_files(directory)
    if not files:
        raise fail(f"no .wav or .mp3 files in {directory}")
    sender = _DirectorySender(_ingest_url(server), secret, fields, format)
    with httpx.Client(timeout=TIMEOUT) as client, _progress() as progress:
        task = progress.add_task(f"ingesting {directory.name or directory}", total=len(files))
        for path in files:
            sender.send(client, path)
            progress.advance(task)
    for path, why in sender.failures:
        err.print(f"[red]error:[/red] {escape(path.name)}: {escape(why)}", highlight=False)
    done = len(files) - len(sender.failures)
    note = f" ({sender.repeats} already received)" if sender.repeats else ""
    err.print(f"ingested {done} of {len(files)} file(s){note}")
    if sender.failures:
        raise typer.Exit(1)


class _DirectorySender:
    """Posts a directory's files one by one, each line `<recording id><TAB><file name>` to
    stdout; keeps the failures to report at the end."""

    def __init__(self, url: str, secret: str, fields: CallFields, format: str | None) -> None:
        self.url = url
        self.secret = secret
        self.fields = fields
        self.format = format
        self.failures: list[tuple[Path, str]] = []
        self.repeats = 0

    def send(self, client: httpx.Client, path: Path) -> None:
        call_control_id = self.fields.call_control_id
        try:
            metadata = self.fields.metadata_for(
                path,
                format_of(path, self.format),
                # stable per file, so a repeat of the command is no new recording
                call_leg_id=str(uuid.uuid5(LEG_NAMESPACE, f"{call_control_id}/{path.name}")),
                custom_file_name=None,
            )
            recording_id, created = post_recording(client, self.url, self.secret, path, metadata)
        except IngestFailed as exc:
            self.failures.append((path, str(exc)))
        else:
            self.repeats += not created
            typer.echo(f"{recording_id}\t{path.name}")


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
    )


def _required_token(explicit: str | None) -> str:
    secret = ingest_token(explicit)
    if not secret:
        raise fail("no ingest token: pass --token or set CALLVAULT_INGEST_TOKEN")
    return secret


def _ingest_url(server: str) -> str:
    return server.rstrip("/") + "/internal/v1/recordings"
