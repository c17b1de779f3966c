"""Settings from the environment (the pinned names in DESIGN.md), with embedded defaults.

Embedded mode generates its secrets (encryption key, ingest token) into the data dir with mode
0600 on first start, so a newcomer needs no configuration at all.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from callvault.credentials.encryption import KeyRing

TRUE_WORDS = {"1", "true", "yes", "on"}


def write_secret_file(path: Path, content: str) -> None:
    """Create a file only its owner can read, without a window where it is world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    if not path.exists():
        try:
            write_secret_file(path, make())
        except FileExistsError:  # another process won the race: use its value
            pass
    return path.read_text().strip()


@dataclass
class Settings:
    data_dir: Path
    database_url: str
    default_store_url: str
    public_url: str
    encryption_keys_b64: list[str]
    ingest_token: str
    allow_private_networks: bool
    max_recording_bytes: int = 2 * 1024**3
    max_json_bytes: int = 1024 * 1024
    worker_concurrency: int = 8
    # worker timing (docs/scaling.md): lease length, upload backoff cap, give-up horizon
    worker_lease_secs: float = 60.0
    upload_backoff_cap_secs: float = 300.0
    upload_give_up_secs: float = 24 * 3600.0
    worker_drain_secs: float = 10.0  # on SIGTERM: how long running jobs may finish
    generated_files: dict[str, Path] = field(default_factory=dict)
    # the environment the settings came from: each domain parses its own knobs from it
    # (recordings.upload.BodyPace, webhooks/recordings retention) instead of this module
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def keyring(self) -> KeyRing:
        return KeyRing.from_b64(self.encryption_keys_b64)

    @cached_property
    def link_secret(self) -> bytes:
        """Secret for self-signed download links, derived so every API process agrees on it."""
        return self.keyring.derive(b"callvault recording links v1")


def sqlalchemy_url(url: str) -> str:
    """Map the pinned `postgresql://` and `sqlite:///` forms to the async drivers we use."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") or url.startswith("sqlite+aiosqlite:///"):
        return "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
    return url


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("CALLVAULT_DATA_DIR", "./.callvault")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    generated: dict[str, Path] = {}

    keys = [k.strip() for k in env.get("CALLVAULT_ENCRYPTION_KEYS", "").split(",") if k.strip()]
    if not keys:
        key_file = data_dir / "encryption.key"
        generated["encryption key"] = key_file
        keys = [
            read_or_create_secret(
                key_file, lambda: base64.b64encode(secrets.token_bytes(32)).decode()
            )
        ]

    token = env.get("CALLVAULT_INGEST_TOKEN", "")
    if not token:
        token_file = data_dir / "ingest.token"
        generated["ingest token"] = token_file
        token = read_or_create_secret(token_file, lambda: secrets.token_urlsafe(32))

    database_url = env.get("CALLVAULT_DATABASE_URL") or f"sqlite:///{data_dir / 'callvault.db'}"
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        default_store_url=env.get("CALLVAULT_DEFAULT_STORE") or f"file://{data_dir / 'recordings'}",
        public_url=env.get("CALLVAULT_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
        encryption_keys_b64=keys,
        ingest_token=token,
        allow_private_networks=env.get("CALLVAULT_ALLOW_PRIVATE_NETWORKS", "").lower()
        in TRUE_WORDS,
        max_recording_bytes=int(env.get("CALLVAULT_MAX_RECORDING_BYTES", 2 * 1024**3)),
        worker_concurrency=int(env.get("CALLVAULT_WORKER_CONCURRENCY", 8)),
        worker_lease_secs=_positive(env, "CALLVAULT_WORKER_LEASE_SECS", 60.0),
        upload_backoff_cap_secs=_positive(env, "CALLVAULT_UPLOAD_BACKOFF_CAP_SECS", 300.0),
        upload_give_up_secs=_positive(env, "CALLVAULT_UPLOAD_GIVE_UP_SECS", 24 * 3600.0),
        worker_drain_secs=_positive(env, "CALLVAULT_WORKER_DRAIN_SECS", 10.0),
        generated_files=generated,
        environ={k: v for k, v in env.items() if k.startswith("CALLVAULT_")},
    )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = float(env.get(name) or default)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds")
    return value
