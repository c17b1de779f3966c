"""`callvault ingest` against a real HTTP server (LiveServer: uvicorn + worker)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from callvault.accounts.service import NewAccount
from callvault.cli import app
from callvault.config import NoDataDir
from callvault.recordings.cli import error_lines, ingest_token
from callvault.runtime import Runtime
from tests.conftest import LiveServer, auth
from tests.recordings.conftest import local_store, recording_row
from tests.recordings.samples import make_mp3, make_wav

pytestmark = pytest.mark.usefixtures("clean_incoming")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Exit code, the last line of stdout (the server runs in this process and its log lines
    land in the same captured stdout) and stderr."""
    result = CliRunner().invoke(app, list(args), env=env)
    lines = result.stdout.strip().splitlines()
    return result.exit_code, lines[-1] if lines else "", result.stderr


async def test_ingest_posts_the_file_and_prints_the_id(
    live_server: LiveServer,
    runtime: Runtime,
    account: NewAccount,
    connection_id: str,
    tmp_path: Path,
) -> None:
    audio = make_wav(seconds=1.0, channels=2, rate=8000)
    path = tmp_path / "call.wav"
    path.write_bytes(audio)
    token = live_server.settings.ingest_token

    code, out, err = run_cli(
        "ingest",
        str(path),
        "--connection-id",
        connection_id,
        "--call-control-id",
        "v3:cli-call-1",
        "--server",
        live_server.url,
        "--token",
        token,
        "--ended-at",
        "2024-05-17T10:00:05+00:00",
    )

    assert code == 0, err
    recording_id = out.strip()
    row = await recording_row(runtime, recording_id)
    assert row.call_leg_id == "v3:cli-call-1"  # defaults to the call control id
    assert row.format == "wav" and row.channels == "dual"  # from the extension and the file
    assert row.recording_ended_at == datetime.fromisoformat("2024-05-17T10:00:05+00:00")
    assert row.recording_ended_at - row.recording_started_at == timedelta(seconds=1)
    assert row.sha256 and row.size_bytes == len(audio)

    async with httpx.AsyncClient(base_url=live_server.url) as client:
        got = await client.get(f"/v2/recordings/{recording_id}", headers=auth(account))
        assert got.status_code == 200
        link = got.json()["data"]["download_urls"]["wav"]
        assert link.startswith(live_server.url)
        download = await client.get(link)
        assert download.status_code == 200 and download.content == audio

    # the same recording again: same id, nothing stored twice
    code, out_again, err = run_cli(
        "ingest",
        str(path),
        "--connection-id",
        connection_id,
        "--call-control-id",
        "v3:cli-call-1",
        "--call-session-id",
        row.call_session_id,
        "--started-at",
        row.recording_started_at.isoformat(),
        "--ended-at",
        row.recording_ended_at.isoformat(),
        "--server",
        live_server.url,
        "--token",
        token,
    )
    assert code == 0, err
    assert out_again.strip() == recording_id
    assert "already received" in err


async def test_the_same_command_twice_is_one_recording(
    live_server: LiveServer, runtime: Runtime, connection_id: str, tmp_path: Path
) -> None:
    """Without --started-at/--ended-at the times come from the file (its modification time
    and duration), so a repeat of the command is a repeat of the recording (issue 26)."""
    path = tmp_path / "call.wav"
    path.write_bytes(make_wav(seconds=0.5))
    command = [
        "ingest",
        str(path),
        "--connection-id",
        connection_id,
        "--call-control-id",
        "v3:cli-repeat",
        "--from",
        "+15551230001",
        "--to",
        "sip:bob@example.com",
        "--sip-call-id",
        "a84b4c76e66710@pc33.example.com",
        "--server",
        live_server.url,
        "--token",
        live_server.settings.ingest_token,
    ]
    code, first, err = run_cli(*command)
    assert code == 0, err
    code, again, err = run_cli(*command)
    assert code == 0, err
    assert again == first and UUID.fullmatch(first)
    assert "already received" in err
    row = await recording_row(runtime, first)
    assert row.from_number == "+15551230001" and row.to_number == "sip:bob@example.com"
    assert row.sip_call_id == "a84b4c76e66710@pc33.example.com"
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)
    assert row.recording_ended_at == modified
    assert row.recording_ended_at - row.recording_started_at == timedelta(milliseconds=500)


async def test_ingest_mp3_with_every_option(
    live_server: LiveServer,
    runtime: Runtime,
    connection_id: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "recording.bin"
    path.write_bytes(make_mp3(frames=20))
    code, out, err = run_cli(
        "ingest",
        str(path),
        "--connection-id",
        connection_id,
        "--call-control-id",
        "v3:cli-2",
        "--call-leg-id",
        "leg-2",
        "--call-session-id",
        "session-2",
        "--format",
        "mp3",
        "--channels",
        "single",
        "--started-at",
        "2024-05-17T10:00:00Z",
        "--ended-at",
        "2024-05-17T10:00:01Z",
        "--client-state",
        "aGk=",
        "--custom-file-name",
        "cli-file",
        "--server",
        live_server.url,
        env={"CALLVAULT_INGEST_TOKEN": live_server.settings.ingest_token},
    )
    assert code == 0, err
    row = await recording_row(runtime, out.strip())
    assert (row.call_leg_id, row.call_session_id, row.client_state) == (
        "leg-2",
        "session-2",
        "aGk=",
    )
    assert row.custom_file_name == "cli-file"
    assert row.default_store_key is None or "cli-file-1715940000.mp3" in row.default_store_key
    info_key = row.default_store_key
    if info_key is not None:  # the worker may have finished (and kept it there) already
        assert local_store(runtime).path_for(info_key).exists()


async def test_ingest_errors_are_printed_with_a_nonzero_exit(
    live_server: LiveServer, connection_id: str, tmp_path: Path
) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(make_wav(seconds=0.2))
    token = live_server.settings.ingest_token
    base = ["ingest", str(path), "--call-control-id", "x", "--server", live_server.url]

    code, out, err = run_cli(*base, "--connection-id", "1111111111111111111", "--token", token)
    assert code == 1 and not UUID.fullmatch(out)  # no recording id printed
    assert "422" in err and "/metadata/connection_id" in err

    code, out, err = run_cli(*base, "--connection-id", connection_id, "--token", "wrong")
    assert code == 1 and "401" in err and "ingest token is not valid" in err

    code, _, err = run_cli(
        *base, "--connection-id", connection_id, "--token", token, "--channels", "dual"
    )
    assert code == 1 and "/audio" in err and "1 channel" in err

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, _, err = run_cli(
        "ingest", str(text), "--connection-id", connection_id, "--call-control-id", "x"
    )
    assert code == 1 and "--format" in err


def test_ingest_reports_an_unreachable_server(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(make_wav(seconds=0.1))
    code, _, err = run_cli(
        "ingest",
        str(path),
        "--connection-id",
        "1",
        "--call-control-id",
        "x",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
    )
    assert code == 1 and "cannot reach" in err


def test_token_comes_from_option_env_or_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLVAULT_INGEST_TOKEN", raising=False)
    monkeypatch.setenv("CALLVAULT_DATA_DIR", str(tmp_path))
    with pytest.raises(NoDataDir, match=f"no data dir at {tmp_path}"):
        ingest_token(None)
    assert not list(tmp_path.iterdir())  # a client never invents a token
    (tmp_path / "ingest.token").write_text("from-file\n")
    assert ingest_token(None) == "from-file"
    monkeypatch.setenv("CALLVAULT_INGEST_TOKEN", "from-env")
    assert ingest_token(None) == "from-env"
    assert ingest_token("explicit") == "explicit"


def test_error_lines_show_detail_and_pointer() -> None:
    body = {
        "errors": [
            {
                "code": "10015",
                "title": "Invalid value",
                "detail": "bad",
                "source": {"pointer": "/a"},
            }
        ]
    }
    response = httpx.Response(422, content=json.dumps(body).encode())
    assert error_lines(response) == ["bad (/a)"]
    assert error_lines(httpx.Response(502, content=b"<html>bad gateway</html>")) == [
        "<html>bad gateway</html>"
    ]
