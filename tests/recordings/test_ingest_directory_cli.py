"""`callvault ingest DIRECTORY`: every .wav/.mp3 in it, with a progress bar, against a real
HTTP server (LiveServer: uvicorn + worker). The single-file form is tested in
test_ingest_cli.py and must not change."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callvault.cli import app
from callvault.runtime import Runtime
from tests.conftest import LiveServer
from tests.recordings.conftest import recording_row
from tests.recordings.samples import make_mp3, make_wav

pytestmark = pytest.mark.usefixtures("clean_incoming")


def run_cli(*args: str) -> tuple[int, list[str], str]:
    """Exit code, the lines `<id>\\t<file>` of stdout (the in-process server's log lines are
    captured there too) and stderr."""
    result = CliRunner().invoke(app, list(args))
    lines = [line for line in result.stdout.splitlines() if "\t" in line]
    return result.exit_code, lines, result.stderr


def ingest_args(directory: Path, server: LiveServer, connection_id: str, *extra: str) -> list[str]:
    return [
        "ingest",
        str(directory),
        "--connection-id",
        connection_id,
        "--call-control-id",
        "v3:folder-call",
        "--server",
        server.url,
        "--token",
        server.settings.ingest_token,
        *extra,
    ]


async def test_a_directory_ingests_every_wav_and_mp3_with_a_progress_bar(
    live_server: LiveServer, runtime: Runtime, connection_id: str, tmp_path: Path
) -> None:
    files = {
        "a.wav": make_wav(seconds=1.0),
        "b.WAV": make_wav(seconds=0.5, channels=2),
        "c.mp3": make_mp3(frames=40),
    }
    for name, audio in files.items():
        (tmp_path / name).write_bytes(audio)
    (tmp_path / "notes.txt").write_text("not audio")  # not a recording: skipped
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "d.wav").write_bytes(make_wav(0.2))  # not descended into

    code, lines, err = run_cli(*ingest_args(tmp_path, live_server, connection_id))

    assert code == 0, err
    assert "ingested 3 of 3 file(s)" in err
    assert "ingesting" in err  # the progress bar's description
    by_name = {name: rid for rid, name in (line.split("\t") for line in lines)}
    assert sorted(by_name) == ["a.wav", "b.WAV", "c.mp3"]  # by name, in order
    legs = set()
    for name, recording_id in by_name.items():
        row = await recording_row(runtime, recording_id)
        assert row.connection_id == connection_id
        assert row.call_control_id == "v3:folder-call"  # applies to every file
        assert row.size_bytes == len(files[name])
        assert row.format == ("mp3" if name.endswith(".mp3") else "wav")
        uuid.UUID(row.call_leg_id)  # a new UUID per file
        legs.add(row.call_leg_id)
    assert len(legs) == 3
    assert (await recording_row(runtime, by_name["b.WAV"])).channels == "dual"


async def test_a_file_that_fails_is_reported_and_the_others_go_on(
    live_server: LiveServer, runtime: Runtime, connection_id: str, tmp_path: Path
) -> None:
    (tmp_path / "good.wav").write_bytes(make_wav(0.3))
    (tmp_path / "broken.wav").write_bytes(b"RIFF but not really a wave file")

    code, lines, err = run_cli(*ingest_args(tmp_path, live_server, connection_id))

    err = " ".join(err.split())  # Rich wraps long lines
    assert code == 1
    assert "ingested 1 of 2 file(s)" in err
    assert "broken.wav" in err and "422" in err
    [line] = lines
    recording_id, name = line.split("\t")
    assert name == "good.wav"
    assert (await recording_row(runtime, recording_id)).size_bytes > 0


@pytest.mark.parametrize("option", ["--call-leg-id", "--custom-file-name"])
def test_options_naming_one_recording_are_refused_for_a_directory(
    option: str, tmp_path: Path
) -> None:
    (tmp_path / "a.wav").write_bytes(make_wav(0.2))
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(tmp_path),
            "--connection-id",
            "1",
            "--call-control-id",
            "c",
            option,
            "x",
            "--token",
            "t",
        ],
    )
    assert result.exit_code == 1
    assert "not for a directory" in " ".join(result.stderr.split())  # Rich wraps lines


def test_a_directory_without_audio_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing to ingest")
    result = CliRunner().invoke(
        app,
        ["ingest", str(tmp_path), "--connection-id", "1", "--call-control-id", "c", "--token", "t"],
    )
    assert result.exit_code == 1
    assert "no .wav or .mp3 files" in " ".join(result.stderr.split())
