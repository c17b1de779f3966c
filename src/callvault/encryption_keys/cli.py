"""`callvault decrypt FILE --private-key KEY.pem --details JSON|FILE [-o OUT] [--recording-id ID]`.

Streams in constant memory into a temp file next to OUT and renames it into place only after
the GCM tag verified: a wrong key or a tampered file leaves no output behind. Reads both
format versions (scheme.py); `--recording-id` makes sure the file is that recording's.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import typer
from cryptography.hazmat.primitives import serialization
from rich.console import Console

from callvault.config import load_client_settings
from callvault.encryption_keys.scheme import (
    FORMAT_V1,
    DecryptionFailed,
    associated_data_of,
    decrypt_stream,
    find_details,
    format_version,
    unwrap_cek,
)

err = Console(stderr=True)


def _load_details(value: str) -> dict[str, Any]:
    text = value
    if not value.lstrip().startswith("{"):
        try:
            text = Path(value).read_text()
        except OSError as exc:
            reason = f"--details: not JSON and not a readable file ({exc.strerror})"
            raise DecryptionFailed(reason) from None
    try:
        document = json.loads(text)
    except ValueError:
        raise DecryptionFailed("--details: not valid JSON") from None
    return find_details(document)


def _load_private_key(path: Path, passphrase: str | None) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecryptionFailed(f"--private-key: cannot read {path} ({exc.strerror})") from None
    try:
        return serialization.load_pem_private_key(
            data, password=passphrase.encode() if passphrase else None
        )
    except TypeError:
        raise DecryptionFailed(
            "--private-key: the key is protected by a passphrase: set CALLVAULT_KEY_PASSPHRASE"
        ) from None
    except ValueError:
        raise DecryptionFailed(
            "--private-key: not a PEM private key (or a wrong passphrase)"
        ) from None


def decrypt_file(
    source: Path,
    target: Path,
    private_key: Any,
    details: dict[str, Any],
    recording_id: str | None = None,
) -> None:
    """Decrypt `source` into `target`, atomically: `target` appears only when it verified
    (format 2: also that it is `recording_id`'s, when given, else the details' recording)."""
    aad = associated_data_of(details, recording_id)
    cek, iv = unwrap_cek(private_key, details)
    # not resolve(): an OUT that is a symlink is replaced, never followed
    target = Path(os.path.abspath(target))
    # plaintext audio: a name no one can have planted (mkstemp: O_CREAT|O_EXCL, so no symlink
    # is followed), mode 0600, next to OUT so that the rename is atomic
    descriptor, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".partial", dir=target.parent
    )
    partial = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as dst, open(source, "rb") as src:
            decrypt_stream(src, os.fstat(src.fileno()).st_size, dst, cek, iv, aad)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def decrypt(
    file: Path = typer.Argument(..., help="The encrypted recording (as stored).", exists=True),
    private_key: Path = typer.Option(
        ...,
        "--private-key",
        help="PEM of the RSA private key (passphrase: CALLVAULT_KEY_PASSPHRASE).",
    ),
    details: str = typer.Option(
        ...,
        "--details",
        help="The encryption_details as JSON, or a file holding them (a webhook body, a "
        "Recordings API answer or the object's metadata also work).",
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Where to write the audio (default: FILE.decrypted)."
    ),
    recording_id: str | None = typer.Option(
        None,
        "--recording-id",
        help="The recording you mean to open (from your webhook or the Recordings API): a file "
        "of another recording is refused (format 2).",
    ),
) -> None:
    """Decrypt a recording that was encrypted for your public key (docs/encryption.md)."""
    target = output or file.with_name(file.name + ".decrypted")
    try:
        found = _load_details(details)
        key = _load_private_key(private_key, load_client_settings().key_passphrase)
        decrypt_file(file, target, key, found, recording_id)
    except DecryptionFailed as exc:
        err.print(f"[red]decryption failed:[/red] {exc}; nothing was written")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]decryption failed:[/red] {exc.strerror}: {exc.filename}")
        raise typer.Exit(1) from None
    if format_version(found) == FORMAT_V1:
        # format 1 binds nothing: say so rather than suggest a check that did not happen
        note = " (format 1: not bound to a recording id)" if recording_id else ""
        err.print(f"decrypted: {target}{note}")
    else:
        err.print(f"decrypted recording {found.get('recording_id') or recording_id}: {target}")
