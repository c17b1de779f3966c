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
from typing import Literal

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


class ConfigurationError(Exception):
    """A setting is missing or wrong: the command refuses to run. The message is one line that
    names the setting or the command that fixes it (printed without a traceback, cli.py)."""

    exit_code = 1


class NoDataDir(ConfigurationError):
    """A command that only uses a data dir was run where there is none (it never makes one)."""

    exit_code = 2


NO_KEYS = (
    "CALLVAULT_ENCRYPTION_KEYS is not set: on PostgreSQL every process needs the same keys "
    "(make one with `callvault keys generate`)"
)
# what a data dir holds once `serve`, `migrate` or `accounts create` made it
DATA_DIR_MARKERS = ("callvault.db", "encryption.key", "ingest.token", "recordings")
# how load_settings treats the data dir: "make" creates it silently (library use, tests);
# "create" (serve, migrate, accounts create) creates an absent or empty one, refusing a
# directory that holds something else; "require" (every other command) never creates one
DataDirRule = Literal["make", "create", "require"]


def looks_like_data_dir(path: Path) -> bool:
    return any((path / name).exists() for name in DATA_DIR_MARKERS)


def prepare_data_dir(data_dir: Path, rule: DataDirRule) -> bool:
    """Apply `rule` to the data dir; True when this call created it."""
    if rule == "make":
        existed = data_dir.is_dir()
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        return not existed
    if rule == "require":
        if not looks_like_data_dir(data_dir):
            raise NoDataDir(f"no data dir at {data_dir} (set CALLVAULT_DATA_DIR)")
        return False
    if data_dir.is_dir():
        if any(data_dir.iterdir()) and not looks_like_data_dir(data_dir):
            raise ConfigurationError(
                f"{data_dir} holds other files and is not a callvault data dir: "
                "set CALLVAULT_DATA_DIR to a new or empty directory"
            )
        os.chmod(data_dir, 0o700)
        return False
    parent = data_dir.parent
    if not parent.is_dir():
        # no chain of directories from a typo: the parent must be there already
        raise ConfigurationError(
            f"cannot create the data dir {data_dir}: {parent} does not exist "
            "(set CALLVAULT_DATA_DIR)"
        )
    if looks_like_data_dir(parent):
        raise ConfigurationError(
            f"{parent} is a data dir itself: refusing to create another inside it at "
            f"{data_dir} (set CALLVAULT_DATA_DIR={parent})"
        )
    data_dir.mkdir(mode=0o700)
    return True


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
    log_level: str = "info"
    # `callvault worker --metrics-port`: the worker's own Prometheus endpoint (None: none)
    metrics_port: int | None = None
    # the data dir was created by this load (serve/migrate/accounts create say where)
    data_dir_created: bool = False
    generated_files: dict[str, Path] = field(default_factory=dict)
    # the environment the settings came from: each domain parses its own knobs from it
    # (recordings.upload.BodyPace, webhooks/recordings retention) instead of this module
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def keyring(self) -> KeyRing:
        if not self.encryption_keys_b64:
            raise ConfigurationError(NO_KEYS)
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


def load_settings(
    environ: Mapping[str, str] | None = None, *, data_dir_rule: DataDirRule = "make"
) -> Settings:
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("CALLVAULT_DATA_DIR", "./.callvault")).resolve()
    generated: dict[str, Path] = {}
    embedded = not env.get("CALLVAULT_DATABASE_URL", "sqlite").startswith(
        ("postgresql:", "postgres:")
    )
    keys = [k.strip() for k in env.get("CALLVAULT_ENCRYPTION_KEYS", "").split(",") if k.strip()]
    # the data dir matters only for what lives in it: a scaled-out process configured wholly
    # by its environment needs none
    needs_data_dir = (
        embedded or not env.get("CALLVAULT_DEFAULT_STORE") or not env.get("CALLVAULT_INGEST_TOKEN")
    )
    created = prepare_data_dir(data_dir, data_dir_rule) if needs_data_dir else False
    # a key is generated only for an embedded data dir that has none; on PostgreSQL every
    # process must share the same keys, so none is invented (serve/worker refuse to start)
    if not keys and embedded:
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
        log_level=_log_level(env),
        metrics_port=_port(env, "CALLVAULT_METRICS_PORT"),
        generated_files=generated,
        data_dir_created=created,
        environ={k: v for k, v in env.items() if k.startswith("CALLVAULT_")},
    )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = float(env.get(name) or default)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds")
    return value


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigurationError(f"{name} must be a port number (1-65535), not {raw!r}")
    return int(raw)


LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(env: Mapping[str, str]) -> str:
    level = env.get("CALLVAULT_LOG_LEVEL", "").strip().lower() or "info"
    if level not in LOG_LEVELS:
        raise ConfigurationError(
            f"CALLVAULT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
        )
    return level
