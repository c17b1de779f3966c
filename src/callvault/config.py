"""Settings from the environment (the pinned names in DESIGN.md), with embedded defaults.

Embedded mode generates its secrets (encryption key, ingest token) into the data dir with mode
0600 on first start, so a newcomer needs no configuration at all.
"""

from __future__ import annotations

import base64
import difflib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from callvault.crypto import KeyRing
from callvault.storage.settings import StorageSettings

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


# uploads and webhook rounds one worker runs at a time, in separate slots; 16 uploads keep a
# burst of ingests from queueing behind the slots (docs/performance.md, "Eleventh pass")
WORKER_CONCURRENCY = 16
DELIVERY_CONCURRENCY = 16


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
    worker_concurrency: int = WORKER_CONCURRENCY
    delivery_concurrency: int = DELIVERY_CONCURRENCY
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
    # storage's own part (storage/settings.py parses it; the entry point hands it to storage,
    # which imports no plumbing)
    storage: StorageSettings = field(default_factory=StorageSettings)

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


def data_dir_from(env: Mapping[str, str]) -> Path:
    """CALLVAULT_DATA_DIR, default `./.callvault`, absolute (also for clients: `ingest`)."""
    return Path(env.get("CALLVAULT_DATA_DIR") or "./.callvault").resolve()


@dataclass(frozen=True)
class ClientSettings:
    """What the client commands (`ingest`, `handoff`, `decrypt`) take from the environment.
    They run beside a server, not as one: without `load_settings`, which makes a data dir and
    generates secrets where a client must invent nothing. Values as given (empty: unset);
    each command checks the ones it uses."""

    data_dir: Path
    ingest_token: str
    server: str
    handoff_concurrency: str
    handoff_poll_seconds: str
    key_passphrase: str | None


def load_client_settings(environ: Mapping[str, str] | None = None) -> ClientSettings:
    env = os.environ if environ is None else environ
    return ClientSettings(
        data_dir=data_dir_from(env),
        ingest_token=env.get("CALLVAULT_INGEST_TOKEN", ""),
        server=env.get("CALLVAULT_SERVER") or "http://127.0.0.1:8000",
        handoff_concurrency=env.get("CALLVAULT_HANDOFF_CONCURRENCY", "2"),
        handoff_poll_seconds=env.get("CALLVAULT_HANDOFF_POLL_SECONDS", "1"),
        key_passphrase=env.get("CALLVAULT_KEY_PASSPHRASE"),
    )


def load_settings(
    environ: Mapping[str, str] | None = None, *, data_dir_rule: DataDirRule = "make"
) -> Settings:
    env = os.environ if environ is None else environ
    data_dir = data_dir_from(env)
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
        worker_concurrency=int(env.get("CALLVAULT_WORKER_CONCURRENCY", WORKER_CONCURRENCY)),
        delivery_concurrency=_at_least_one(
            env, "CALLVAULT_DELIVERY_CONCURRENCY", DELIVERY_CONCURRENCY
        ),
        worker_lease_secs=_positive(env, "CALLVAULT_WORKER_LEASE_SECS", 60.0),
        upload_backoff_cap_secs=_positive(env, "CALLVAULT_UPLOAD_BACKOFF_CAP_SECS", 300.0),
        upload_give_up_secs=_positive(env, "CALLVAULT_UPLOAD_GIVE_UP_SECS", 24 * 3600.0),
        worker_drain_secs=_positive(env, "CALLVAULT_WORKER_DRAIN_SECS", 10.0),
        log_level=_log_level(env),
        metrics_port=_port(env, "CALLVAULT_METRICS_PORT"),
        generated_files=generated,
        data_dir_created=created,
        environ={k: v for k, v in env.items() if k.startswith("CALLVAULT_")},
        storage=StorageSettings.from_environ(env),
    )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = float(env.get(name) or default)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds")
    return value


def _at_least_one(env: Mapping[str, str], name: str, default: int) -> int:
    value = int(env.get(name) or default)
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
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


# ---- every environment variable callvault reads, in one place --------------------------------
# docs/configuration.md is generated from this list (tests/test_configuration_doc.py checks that
# it matches, and that the code reads exactly these names). Most are parsed above. Storage's
# are parsed by storage/settings.py for `load_settings` (`Settings.storage`: the providers stay
# standalone, shared/layers.json, and get them from the entry point). A domain's own knobs are
# parsed by the domain from `Settings.environ` (named in `read_by`). Client commands that run
# without settings (`handoff`, `decrypt`, `ingest`'s token) read theirs from their own
# environment. The variables the cloud SDKs define are in OTHER_ENVIRONMENT, with the modules
# that read them.


@dataclass(frozen=True)
class EnvSetting:
    name: str
    default: str
    meaning: str
    processes: str  # which commands read it
    read_by: str = "config.py"


SERVER = "serve, worker"
ENVIRONMENT: tuple[EnvSetting, ...] = (
    EnvSetting(
        "CALLVAULT_DATA_DIR",
        "`./.callvault`",
        "The data dir: the SQLite database, the local default store, generated keys and "
        "tokens, scratch files. Only `serve`, `migrate` and `accounts create` create it.",
        "all",
    ),
    EnvSetting(
        "CALLVAULT_DATABASE_URL",
        "SQLite in the data dir",
        "`postgresql://user:password@host/db` for the scaled-out mode.",
        "all but `ingest`, `decrypt`, `handoff`",
    ),
    EnvSetting(
        "CALLVAULT_DEFAULT_STORE",
        "`file://` + data dir",
        "The platform's store: `file:///dir` or `s3://bucket?region=…&endpoint=…` "
        "(credentials from the standard AWS variables).",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_PUBLIC_URL",
        "`http://{--host}:{--port}`",
        "Base of self-signed download links; https makes the console cookie `Secure`.",
        "serve",
    ),
    EnvSetting(
        "CALLVAULT_ENCRYPTION_KEYS",
        "embedded: generated into the data dir (0600); PostgreSQL: required",
        "Comma-separated base64 32-byte keys, the first active (`callvault keys generate`). "
        "Checked at start against the stored data.",
        "serve, worker, accounts, keys rotate",
    ),
    EnvSetting(
        "CALLVAULT_INGEST_TOKEN",
        "generated into the data dir (0600)",
        "Bearer token of `POST /internal/v1/recordings`; `ingest` and `handoff` send it.",
        "serve, ingest, handoff",
    ),
    EnvSetting(
        "CALLVAULT_ALLOW_PRIVATE_NETWORKS",
        "`false`",
        "`true` lets webhook URLs and storage endpoints be on loopback/private/link-local "
        "addresses (local tries, private clouds).",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_LOG_LEVEL",
        "`info`",
        "`debug`, `info`, `warning` or `error`; every log line is one JSON object on stderr.",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_METRICS_PORT",
        "unset: none",
        "The worker's own Prometheus port (as `worker --metrics-port`).",
        "worker",
    ),
    EnvSetting(
        "CALLVAULT_METRICS_TOKEN",
        "unset: `/metrics` open",
        "Bearer token `GET /metrics` requires.",
        "serve",
        read_by="operations/metrics_route.py",
    ),
    EnvSetting(
        "CALLVAULT_API_DOCS",
        "unset: off",
        "`true` serves the interactive API docs at `/v2/docs` (Swagger UI from our own origin, "
        "no third-party script); `/v2/openapi.json` is always served.",
        "serve",
        read_by="console/api_docs.py",
    ),
    EnvSetting(
        "CALLVAULT_FORWARDED_ALLOW_IPS",
        "unset: uvicorn's default, 127.0.0.1",
        "Proxies whose `X-Forwarded-*` headers are trusted (as `serve --forwarded-allow-ips`).",
        "serve",
        read_by="cli.py (through uvicorn)",
    ),
    EnvSetting(
        "CALLVAULT_STS_ENDPOINTS",
        "unset: none",
        "Comma-separated STS endpoints allowed besides `AWS_ENDPOINT_URL_STS` and AWS's own "
        "(s3-generic `role_arn` needs one).",
        SERVER,
        read_by="storage/settings.py",
    ),
    EnvSetting(
        "CALLVAULT_METRICS_CACHE_SECS",
        "5",
        "How long `/metrics` reuses its backlog figures (one read per window per process).",
        "serve",
        read_by="operations/metrics_route.py",
    ),
    EnvSetting(
        "CALLVAULT_STORAGE_STALL_SECS",
        "50",
        "A storage request that receives or sends nothing for this long fails (obstore "
        "`read_timeout`), instead of waiting out the whole request timeout.",
        SERVER,
        read_by="storage/settings.py",
    ),
    EnvSetting(
        "CALLVAULT_HEADER_TIMEOUT_SECS",
        "20",
        "A connection whose request headers are not complete this long after their first byte "
        "is closed (slow-header clients).",
        "serve",
        read_by="serving.py",
    ),
    EnvSetting(
        "CALLVAULT_BODY_TIMEOUT_SECS",
        "30",
        "Every request body but an ingest's must arrive within this time (408).",
        "serve",
        read_by="limits.py",
    ),
    EnvSetting(
        "CALLVAULT_HANDOFF_CONCURRENCY",
        "2",
        "How many calls `handoff` sends to callvault at a time.",
        "handoff",
        read_by="config.py (ClientSettings), checked by handoff/cli.py",
    ),
    EnvSetting(
        "CALLVAULT_HANDOFF_POLL_SECONDS",
        "1",
        "How often `handoff` looks at its spool for finished calls.",
        "handoff",
        read_by="config.py (ClientSettings), checked by handoff/cli.py",
    ),
    EnvSetting(
        "CALLVAULT_AWS_PRINCIPAL_ARN",
        "STS GetCallerIdentity",
        "callvault's own AWS principal, shown in `aws_role_setup` trust policies.",
        "serve",
        read_by="storage/settings.py",
    ),
    EnvSetting(
        "CALLVAULT_AZURE_BLOB_ENDPOINT",
        "`https://{account_name}.blob.core.windows.net`",
        "Template of Azure blob endpoints (Azurite, sovereign clouds).",
        SERVER,
        read_by="storage/settings.py",
    ),
    EnvSetting(
        "CALLVAULT_STORAGE_THREADS",
        "`16`",
        "Threads for blocking storage clients (Azure, GCS, STS).",
        SERVER,
        read_by="storage/settings.py",
    ),
    EnvSetting(
        "CALLVAULT_MAX_RECORDING_BYTES",
        "`2147483648` (2 GiB)",
        "Largest recording ingest accepts (413 above).",
        "serve",
    ),
    EnvSetting(
        "CALLVAULT_INGEST_IDLE_SECS",
        "`30`",
        "Ingest gives up on a body that sends nothing this long (408).",
        "serve",
        read_by="recordings/upload.py",
    ),
    EnvSetting(
        "CALLVAULT_INGEST_MIN_BYTES_PER_SEC",
        "`65536`",
        "After the first idle period, an ingest body must average at least this rate (408).",
        "serve",
        read_by="recordings/upload.py",
    ),
    EnvSetting(
        "CALLVAULT_WORKER_CONCURRENCY",
        f"`{WORKER_CONCURRENCY}`",
        "Uploads one worker runs at a time.",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_DELIVERY_CONCURRENCY",
        f"`{DELIVERY_CONCURRENCY}`",
        "Webhook deliveries one worker runs at a time (the first round of an upload's event too).",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_WORKER_LEASE_SECS",
        "`60`",
        "How long a claimed job is a worker's; a dead worker's jobs wait this long.",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_WORKER_DRAIN_SECS",
        "`10` (`8` in the image)",
        "On SIGTERM, how long running jobs may finish before they are released.",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_UPLOAD_BACKOFF_CAP_SECS",
        "`300`",
        "Longest wait between upload retries (1 s, 2 s, 4 s … ±20 %).",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_UPLOAD_GIVE_UP_SECS",
        "`86400`",
        "Transient upload failures become permanent after this long.",
        SERVER,
    ),
    EnvSetting(
        "CALLVAULT_WEBHOOK_SCHEDULE",
        "`5,30,120,600,1800,3600,10800,21600,43200`",
        "Seconds between webhook attempts (±20 % jitter), comma-separated.",
        SERVER,
        read_by="webhooks/schedule.py",
    ),
    EnvSetting(
        "CALLVAULT_WEBHOOK_RETENTION_DAYS",
        "`30`",
        "Finished webhook events and attempts older than this are deleted.",
        SERVER,
        read_by="webhooks/retention.py",
    ),
    EnvSetting(
        "CALLVAULT_RECORDING_RETENTION_DAYS",
        "unset: keep forever",
        "Default-store recordings older than this are deleted (customer buckets never).",
        SERVER,
        read_by="recordings/retention.py",
    ),
    EnvSetting(
        "CALLVAULT_SERVER",
        "`http://127.0.0.1:8000`",
        "The server `handoff` posts to (as `--server`).",
        "handoff",
        read_by="config.py (ClientSettings), checked by handoff/cli.py",
    ),
    EnvSetting(
        "CALLVAULT_KEY_PASSPHRASE",
        "unset",
        "Passphrase of the private key `callvault decrypt --private-key` reads.",
        "decrypt",
        read_by="config.py (ClientSettings)",
    ),
)
# read by the libraries callvault uses, documented with the settings (docs/configuration.md)
OTHER_ENVIRONMENT: tuple[EnvSetting, ...] = (
    EnvSetting(
        "AWS_ACCESS_KEY_ID",
        "the AWS credential chain",
        "With `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`): callvault's own identity, "
        "for an s3 default store and STS AssumeRole; never used for customers' buckets.",
        SERVER,
        read_by="storage/s3.py, storage/aws_roles.py",
    ),
    EnvSetting(
        "AWS_ENDPOINT_URL",
        "AWS",
        "Endpoint of the `s3` backend (tests, S3-compatible clouds).",
        SERVER,
        read_by="storage/s3.py, storage/settings.py (the egress guard trusts it)",
    ),
    EnvSetting(
        "AWS_ENDPOINT_URL_STS",
        "AWS",
        "STS endpoint for `role_arn` credentials.",
        SERVER,
        read_by="storage/aws_roles.py, storage/settings.py (the egress guard trusts it)",
    ),
    EnvSetting(
        "STORAGE_EMULATOR_HOST",
        "Google",
        "Endpoint of the `gcs` backend (fake-gcs-server).",
        SERVER,
        read_by="storage/gcs.py, storage/settings.py (the egress guard trusts it)",
    ),
)


def unknown_settings(environ: Mapping[str, str]) -> dict[str, str | None]:
    """CALLVAULT_* variables that are no setting (a typo, a missing S), each with
    the setting it most likely meant (None: no close one)."""
    known = [setting.name for setting in ENVIRONMENT]
    return {
        name: next(iter(difflib.get_close_matches(name, known, n=1)), None)
        for name in sorted(environ)
        if name.startswith("CALLVAULT_") and name not in known
    }
