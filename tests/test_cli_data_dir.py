"""The CLI never creates a data dir by accident (issue 26): only `serve`, `migrate` and
`accounts create` make one — in an absent or empty directory, saying where — and every other
command run without one says "no data dir at … (set CALLVAULT_DATA_DIR)" and exits 2, with no
traceback and nothing created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from callvault.cli import app
from tests.faults.cluster import clean_environment

# commands that only use a data dir (each refused before it does anything)
USERS = [
    ["status"],
    ["worker"],
    ["webhooks", "retry", "--all-failed"],
    ["recordings", "redeliver", "--failed"],
    ["keys", "rotate"],
]


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no CALLVAULT_* setting: the default `./.callvault`."""
    for name in [name for name in os.environ if name.startswith("CALLVAULT_")]:
        monkeypatch.delenv(name)
    cwd = tmp_path / "empty"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def run_in_process(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The console script's entry (`callvault.cli:app`) in this process: exit code, out, err."""
    with pytest.raises(SystemExit) as ended:
        app(args, prog_name="callvault")
    out, err = capfd.readouterr()
    return int(ended.value.code or 0), out, err


def test_status_without_a_data_dir_in_a_subprocess(tmp_path: Path) -> None:
    env = clean_environment()
    env.pop("CALLVAULT_ALLOW_PRIVATE_NETWORKS")
    done = subprocess.run(
        [sys.executable, "-m", "callvault", "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"callvault: no data dir at {tmp_path / '.callvault'} (set CALLVAULT_DATA_DIR)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", USERS, ids=lambda args: " ".join(args))
def test_commands_that_use_a_data_dir_never_make_one(
    args: list[str], empty_cwd: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_in_process(args, capfd)
    assert code == 2
    assert f"no data dir at {empty_cwd / '.callvault'} (set CALLVAULT_DATA_DIR)" in err
    assert "Traceback" not in err
    assert list(empty_cwd.iterdir()) == []


def test_ingest_without_a_token_or_a_data_dir(
    empty_cwd: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    audio = empty_cwd.parent / "call.wav"
    audio.write_bytes(b"RIFF")
    args = ["ingest", str(audio), "--connection-id", "1", "--call-control-id", "x"]
    code, _, err = run_in_process(args, capfd)
    assert code == 2 and "no data dir at" in err and "--token" in err
    assert list(empty_cwd.iterdir()) == []


def test_accounts_create_makes_the_data_dir_and_says_where(
    empty_cwd: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_in_process(["accounts", "create", "Acme", "--json"], capfd)
    data_dir = empty_cwd / ".callvault"
    assert code == 0, err
    assert f"created the data dir {data_dir}" in err
    assert set(json.loads(out)) == {"account_id", "api_key", "webhook_public_key"}
    assert (data_dir / "callvault.db").exists() and (data_dir / "encryption.key").exists()
    # from now on the other commands find it
    code, out, err = run_in_process(["status", "--json"], capfd)
    assert code == 0, err
    assert json.loads(out)["recordings"]["received"] == 0


def test_migrate_refuses_a_directory_that_is_not_a_data_dir(
    empty_cwd: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # a directory with other things in it (a typo'd CALLVAULT_DATA_DIR=$HOME, say)
    (empty_cwd / "notes.txt").write_text("mine")
    monkeypatch.setenv("CALLVAULT_DATA_DIR", str(empty_cwd))
    code, _, err = run_in_process(["migrate"], capfd)
    assert code == 1 and "is not a callvault data dir" in err
    assert sorted(path.name for path in empty_cwd.iterdir()) == ["notes.txt"]

    # a data dir inside a data dir (run from within one): refused too
    (empty_cwd / "ingest.token").write_text("t")
    monkeypatch.delenv("CALLVAULT_DATA_DIR")
    code, _, err = run_in_process(["migrate"], capfd)
    assert code == 1 and "is a data dir itself" in err
    assert not (empty_cwd / ".callvault").exists()

    # a parent that does not exist: no chain of directories from a typo
    monkeypatch.setenv("CALLVAULT_DATA_DIR", str(empty_cwd / "no" / "such" / "dir"))
    code, _, err = run_in_process(["migrate"], capfd)
    assert code == 1 and "does not exist" in err
    assert not (empty_cwd / "no").exists()
