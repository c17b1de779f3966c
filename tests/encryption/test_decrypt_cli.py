"""`callvault decrypt`: exact bytes back from details given as JSON, as a file holding a webhook
body, a Recordings API answer or the object's metadata; a wrong key or a tampered file is
refused with a clear message and leaves no output behind; memory stays flat."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from callvault.cli import app
from callvault.encryption_keys.cli import decrypt_file
from callvault.encryption_keys.scheme import (
    ContentEncryptor,
    Recipient,
    fingerprint_of,
    object_metadata,
)
from tests.encryption.keys import private_pem, public_pem, rsa_private

runner = CliRunner()


def encrypt(data: bytes, which: int = 0) -> tuple[bytes, dict[str, str]]:
    key = rsa_private(2048, which)
    recipient = Recipient("key-id", fingerprint_of(key.public_key()), public_pem(key))
    encryptor = ContentEncryptor()
    stored = encryptor.update(data) + encryptor.finish()
    return stored, encryptor.details_for(recipient)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Any]:
    audio = os.urandom(300_000)
    stored, details = encrypt(audio)
    (tmp_path / "rec.enc").write_bytes(stored)
    (tmp_path / "key.pem").write_text(private_pem(rsa_private()))
    (tmp_path / "other.pem").write_text(private_pem(rsa_private(2048, which=1)))
    return {"dir": tmp_path, "audio": audio, "stored": stored, "details": details}


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name
        for p in directory.iterdir()
        if p.name not in {"rec.enc", "key.pem", "other.pem", "details.json"}
    )


@pytest.mark.parametrize("form", ["json", "webhook-file", "api-file", "metadata-file"])
def test_decrypts_to_the_exact_bytes(form: str, files: dict[str, Any]) -> None:
    d: Path = files["dir"]
    details = files["details"]
    if form == "json":
        given = json.dumps(details)
    else:
        document: Any = {
            "webhook-file": {"data": {"payload": {"encryption_details": details}}},
            "api-file": {"data": {"id": "r", "encryption_details": details}},
            "metadata-file": {k: details[k] for k in ("encrypted_cek", "iv", "public_key_id")},
        }[form]
        (d / "details.json").write_text(json.dumps(document))
        given = str(d / "details.json")
    result = run(
        "decrypt",
        str(d / "rec.enc"),
        "--private-key",
        str(d / "key.pem"),
        "--details",
        given,
        "-o",
        str(d / "out.wav"),
    )
    assert result.exit_code == 0, result.output
    assert (d / "out.wav").read_bytes() == files["audio"]
    assert leftovers(d) == ["out.wav"]


def test_default_output_name(files: dict[str, Any]) -> None:
    d: Path = files["dir"]
    result = run(
        "decrypt",
        str(d / "rec.enc"),
        "--private-key",
        str(d / "key.pem"),
        "--details",
        json.dumps(files["details"]),
    )
    assert result.exit_code == 0, result.output
    assert (d / "rec.enc.decrypted").read_bytes() == files["audio"]


def test_wrong_private_key_is_refused_and_nothing_written(files: dict[str, Any]) -> None:
    d: Path = files["dir"]
    result = run(
        "decrypt",
        str(d / "rec.enc"),
        "--private-key",
        str(d / "other.pem"),
        "--details",
        json.dumps(files["details"]),
        "-o",
        str(d / "out.wav"),
    )
    assert result.exit_code == 1
    assert "wrong private key" in result.output
    assert leftovers(d) == []
    # without the fingerprint to compare, the RSA unwrap itself refuses
    details = {k: v for k, v in files["details"].items() if k != "fingerprint"}
    result = run(
        "decrypt",
        str(d / "rec.enc"),
        "--private-key",
        str(d / "other.pem"),
        "--details",
        json.dumps(details),
        "-o",
        str(d / "out.wav"),
    )
    assert result.exit_code == 1 and "cannot unwrap" in result.output
    assert leftovers(d) == []


@pytest.mark.parametrize("where", ["start", "middle", "tag", "truncated"])
def test_tampered_file_fails_the_tag_check_and_nothing_written(
    where: str, files: dict[str, Any]
) -> None:
    d: Path = files["dir"]
    stored = bytearray(files["stored"])
    if where == "truncated":
        del stored[-1]
    else:
        stored[{"start": 0, "middle": len(stored) // 2, "tag": len(stored) - 3}[where]] ^= 0x01
    (d / "rec.enc").write_bytes(bytes(stored))
    (d / "out.wav").write_bytes(b"an older file the user keeps")
    result = run(
        "decrypt",
        str(d / "rec.enc"),
        "--private-key",
        str(d / "key.pem"),
        "--details",
        json.dumps(files["details"]),
        "-o",
        str(d / "out.wav"),
    )
    assert result.exit_code == 1
    assert "authentication tag does not verify" in result.output
    # an existing file is never replaced by a half-verified one
    assert (d / "out.wav").read_bytes() == b"an older file the user keeps"
    assert leftovers(d) == ["out.wav"]


def test_unusable_inputs_answer_clear_messages(files: dict[str, Any]) -> None:
    d: Path = files["dir"]
    (d / "pub.pem").write_text(public_pem(rsa_private()))
    cases = [
        (
            ["--private-key", str(d / "pub.pem"), "--details", json.dumps(files["details"])],
            "not a PEM private key",
        ),
        (["--private-key", str(d / "key.pem"), "--details", "{not json"], "not valid JSON"),
        (
            ["--private-key", str(d / "key.pem"), "--details", str(d / "missing.json")],
            "not JSON and not a readable file",
        ),
        (
            ["--private-key", str(d / "key.pem"), "--details", json.dumps({"a": 1})],
            "no encryption details",
        ),
    ]
    for extra, message in cases:
        result = run("decrypt", str(d / "rec.enc"), *extra, "-o", str(d / "out.wav"))
        assert result.exit_code == 1, extra
        assert message in result.output, (extra, result.output)
    assert not (d / "out.wav").exists()


def test_memory_stays_flat_for_a_large_file(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    key = rsa_private()
    recipient = Recipient("k", fingerprint_of(key.public_key()), public_pem(key))
    encryptor = ContentEncryptor()
    block = os.urandom(1024 * 1024)
    with open(tmp_path / "big.enc", "wb") as out:
        for _ in range(size // len(block)):
            out.write(encryptor.update(block))
        out.write(encryptor.finish())
    details = encryptor.details_for(recipient)
    tracemalloc.start()
    try:
        decrypt_file(tmp_path / "big.enc", tmp_path / "big.wav", key, details)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "big.wav").stat().st_size == size
    assert peak < 8 * 1024 * 1024, peak  # 1 MiB chunks, never the file
    with open(tmp_path / "big.wav", "rb") as handle:
        assert handle.read(len(block)) == block


def test_plaintext_is_written_0600_and_no_planted_symlink_is_followed(
    files: dict[str, Any],
) -> None:
    """Issue 21 item 5: the temp file was a predictable `.OUT.PID.partial` opened with
    open("wb"): a symlink planted there (or at OUT) received the plaintext, and the file
    was left with the umask's mode (0644)."""
    d: Path = files["dir"]
    victim = d / "victim"
    victim.write_bytes(b"not yours")
    # the old predictable names, for this process and the CLI runner's
    (d / f".out.wav.{os.getpid()}.partial").symlink_to(victim)
    (d / "link.wav").symlink_to(victim)
    old_umask = os.umask(0o022)
    try:
        for out in ("out.wav", "link.wav"):
            result = run(
                "decrypt",
                str(d / "rec.enc"),
                "--private-key",
                str(d / "key.pem"),
                "--details",
                json.dumps(files["details"]),
                "-o",
                str(d / out),
            )
            assert result.exit_code == 0, result.output
            assert not (d / out).is_symlink()
            assert (d / out).read_bytes() == files["audio"]
            assert (d / out).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old_umask)
    assert victim.read_bytes() == b"not yours"
    assert not any(p.name.endswith(".partial") and not p.is_symlink() for p in d.iterdir())


def test_format_2_is_bound_to_its_recording_and_format_1_still_decrypts(
    files: dict[str, Any],
) -> None:
    """Issue 21 item 7: format 2 authenticates the recording id, key id and algorithm."""
    d: Path = files["dir"]
    key = rsa_private()
    recipient = Recipient("key-id", fingerprint_of(key.public_key()), public_pem(key))
    audio = os.urandom(70_000)
    encryptor = ContentEncryptor(recipient, "recording-b")
    (d / "b.enc").write_bytes(encryptor.update(audio) + encryptor.finish())
    details = encryptor.details_for(recipient)
    assert details["version"] == "2" and details["recording_id"] == "recording-b"
    metadata = {**object_metadata(details), "recording_id": "recording-b"}

    def decrypt(given: dict[str, Any], *extra: str) -> Any:
        return run(
            "decrypt",
            str(d / "b.enc"),
            "--private-key",
            str(d / "key.pem"),
            "--details",
            json.dumps(given),
            "-o",
            str(d / "out.wav"),
            *extra,
        )

    def said(result: Any) -> str:
        return " ".join(result.output.split())  # rich wraps long lines

    result = decrypt(metadata, "--recording-id", "recording-b")
    assert result.exit_code == 0, result.output
    assert "decrypted recording recording-b" in said(result)
    assert (d / "out.wav").read_bytes() == audio
    (d / "out.wav").unlink()

    # B's object and metadata, found where recording A was
    result = decrypt(metadata, "--recording-id", "recording-a")
    assert result.exit_code == 1 and "details of recording recording-b" in said(result)
    for changed in ({"recording_id": "recording-a"}, {"public_key_id": "another-key"}):
        result = decrypt({**metadata, **changed})
        assert result.exit_code == 1, changed
        assert "authentication tag does not verify" in said(result)
    result = decrypt({k: v for k, v in details.items() if k != "recording_id"})
    assert result.exit_code == 1 and "pass --recording-id" in said(result)
    result = decrypt({**details, "version": "3"})
    assert result.exit_code == 1 and "unknown format version '3'" in said(result)
    assert leftovers(d) == ["b.enc"]

    # format 1 (the fixture's file: no associated data) still decrypts, --recording-id or not
    result = run(
        "decrypt",
        str(d / "rec.enc"),
        "--private-key",
        str(d / "key.pem"),
        "--details",
        json.dumps(files["details"]),
        "-o",
        str(d / "old.wav"),
        "--recording-id",
        "recording-a",
    )
    assert result.exit_code == 0, result.output
    assert "format 1: not bound" in said(result)
    assert (d / "old.wav").read_bytes() == files["audio"]
