"""The `callvault` command (pinned interface, DESIGN.md). Sub-commands live with their domain."""

from __future__ import annotations

import dataclasses
import gc
import sys
from pathlib import Path
from typing import Any

import structlog
import typer
import uvicorn
import uvloop
from rich.console import Console

from callvault.accounts.cli import app as accounts_app
from callvault.config import ConfigurationError, Settings, load_settings, unknown_settings
from callvault.db import head_revision
from callvault.db import migrate as apply_migrations
from callvault.encryption_keys.cli import decrypt as decrypt_command
from callvault.handoff.cli import app as handoff_app
from callvault.keys_cli import app as keys_app
from callvault.logs import configure_logging, log_level, logging_config
from callvault.operations.cli import status as status_command
from callvault.operations.cli import webhooks_app
from callvault.recordings.cli import ingest as ingest_command
from callvault.recordings.redeliver_cli import recordings_app
from callvault.storage.settings import configure as configure_storage


class CallvaultTyper(typer.Typer):
    """A configuration mistake (ConfigurationError, config.py) ends any command with its one
    line on stderr and its exit code (2: no data dir, 1: anything else), never a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ConfigurationError as exc:
            # plain write: a rich console would wrap the line at the terminal's width
            sys.stderr.write(f"callvault: {exc}\n")
            sys.exit(exc.exit_code)


app = CallvaultTyper(
    help="callvault: call recordings stored where their owner chooses.",
    no_args_is_help=True,
    add_completion=False,
    # a traceback must never print local variables: they can hold keys and tokens
    pretty_exceptions_show_locals=False,
)
app.add_typer(accounts_app, name="accounts")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(keys_app, name="keys")
app.add_typer(recordings_app, name="recordings")
app.add_typer(handoff_app, name="handoff")
app.command("status")(status_command)
app.command("ingest")(ingest_command)
app.command("decrypt")(decrypt_command)
log = structlog.get_logger("callvault.cli")
# what a command tells its user besides its result (backup, restore)
err = Console(stderr=True)


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml), as `callvault --version` prints it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("callvault")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"callvault {installed_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    show_version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """callvault: call recordings stored where their owner chooses."""


def settings_for_server(host: str, port: int) -> Settings:
    settings = load_settings(data_dir_rule="create")
    if not settings.environ.get("CALLVAULT_PUBLIC_URL"):
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        settings = dataclasses.replace(settings, public_url=f"http://{shown_host}:{port}")
    return settings


def announce_generated(settings: Settings) -> None:
    """Where the data dir and its generated secrets are: log lines (JSON, as every line of a
    server process), after configure_logging."""
    for name, meant in unknown_settings(settings.environ).items():
        log.warning("not a callvault setting (docs/configuration.md)", name=name, meant=meant)
    if settings.data_dir_created:
        log.info("created the data dir", data_dir=str(settings.data_dir))
    for what, path in settings.generated_files.items():
        log.info(f"{what} file", path=str(path), mode="0600")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    no_worker: bool = typer.Option(False, "--no-worker", help="API only; run workers apart."),
    forwarded_allow_ips: str | None = typer.Option(
        None,
        "--forwarded-allow-ips",
        envvar="CALLVAULT_FORWARDED_ALLOW_IPS",
        help="Comma-separated addresses or networks of the reverse proxies whose "
        "X-Forwarded-Proto/-For are trusted ('*': any). Default: 127.0.0.1 only.",
    ),
) -> None:
    """Run the API (and, unless --no-worker, the worker) in this process."""
    from callvault.app import create_app
    from callvault.runtime import Runtime
    from callvault.serving import server_options

    settings = settings_for_server(host, port)
    configure_storage(settings.storage)
    configure_logging(settings.log_level)
    check_before_start(settings)
    announce_generated(settings)
    log.info("callvault serving", url=f"http://{host}:{port}", data_dir=str(settings.data_dir))
    application = create_app(Runtime.build(settings), run_worker=not no_worker)
    freeze_startup_objects()
    uvicorn.run(
        application,
        host=host,
        port=port,
        # uvloop, httptools with a header deadline, keep-alive and shutdown timeouts; uvicorn's
        # own lines as JSON too, at CALLVAULT_LOG_LEVEL (logs.py)
        **{
            **server_options(settings.environ),
            "log_config": logging_config(log_level(settings.log_level)),
            "log_level": None,
        },
        # behind a proxy: the visitor's scheme (Secure cookies, HSTS) and address (sign-in
        # throttling) come from the proxy's X-Forwarded-* headers, from these addresses only;
        # None keeps uvicorn's default (FORWARDED_ALLOW_IPS, else 127.0.0.1)
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
    )


def check_before_start(settings: Settings) -> None:
    from callvault.startup import check_before_start as check

    check(settings)


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, the app, mappers) out of the garbage
    collector's reach: full collections then walk only what requests create. Measured: p99 of
    the credentials GET under load 130 ms -> 55 ms (docs/performance.md)."""
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # else done by the first query, after the freeze
    gc.collect()
    gc.freeze()


@app.command()
def worker(
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve this worker's Prometheus metrics on this port (also CALLVAULT_METRICS_PORT).",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="Address of the metrics port (0.0.0.0: all)."
    ),
) -> None:
    """Run the worker only (uploads and webhook deliveries)."""
    from callvault.jobs import make_worker
    from callvault.runtime import Runtime
    from callvault.worker.runner import run_until_signalled

    settings = load_settings(data_dir_rule="require")
    configure_storage(settings.storage)
    configure_logging(settings.log_level)
    check_before_start(settings)
    announce_generated(settings)
    port = metrics_port or settings.metrics_port
    if port is not None:
        serve_worker_metrics(metrics_host, port)
    runtime = Runtime.build(settings)
    freeze_startup_objects()
    # uvloop, like `serve`: less CPU per database round trip and per upload
    uvloop.run(run_until_signalled(runtime, make_worker))


@app.command()
def demo(
    timeout: float = typer.Option(30.0, help="Give up after this many seconds."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temp data dir afterwards."),
) -> None:
    """The whole flow on a fresh temp data dir, with a local webhook receiver."""
    from callvault.demo import run_demo

    raise typer.Exit(run_demo(timeout=timeout, keep=keep))


def serve_worker_metrics(host: str, port: int) -> None:
    """The worker's own /metrics (its upload and webhook counters; the backlog gauges are the
    API's /metrics), from a thread of prometheus_client's: the worker has no HTTP server."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    log.info("worker metrics", url=f"http://{host}:{port}/metrics")


@app.command()
def backup(
    destination: Path = typer.Argument(..., help="A new (or empty) directory for the backup."),
) -> None:
    """Back up the embedded mode while it serves: database, default store, generated keys."""
    from callvault.operations.backup import BackupError
    from callvault.operations.backup import backup as make_backup

    settings = load_settings(data_dir_rule="require")
    try:
        result = make_backup(
            settings.data_dir,
            settings.database_url,
            settings.default_store_url,
            destination.resolve(),
            installed_version(),
        )
    except BackupError as exc:
        err.print(f"backup refused: {exc}")
        raise typer.Exit(2) from None
    err.print(
        f"backup in {result.path}: {result.recordings} recordings, {result.objects} objects, "
        f"{result.bytes} bytes in {result.seconds:.1f} s"
    )
    if result.missing:
        err.print(f"{len(result.missing)} recording(s) moved on during the backup (manifest.json)")
    if "encryption key" not in settings.generated_files:
        # a restored instance without them would make a new key that opens nothing stored
        err.print("the encryption keys come from CALLVAULT_ENCRYPTION_KEYS: keep them with it")


@app.command()
def restore(
    source: Path = typer.Argument(..., help="A directory made by `callvault backup`."),
    data_dir: Path = typer.Option(..., "--data-dir", help="A new (or empty) data dir."),
) -> None:
    """Restore a backup into a new data dir; start `callvault serve` on it afterwards."""
    from callvault.operations.backup import BackupError
    from callvault.operations.backup import restore as restore_backup

    try:
        manifest = restore_backup(source.resolve(), data_dir.resolve())
    except BackupError as exc:
        err.print(f"restore refused: {exc}")
        raise typer.Exit(2) from None
    err.print(
        f"restored {manifest.get('recordings')} recordings into {data_dir.resolve()}; "
        f"start it with CALLVAULT_DATA_DIR={data_dir.resolve()} callvault serve"
    )


@app.command()
def migrate() -> None:
    """Apply database migrations; prints the revisions applied and the one the database is at."""
    settings = load_settings(data_dir_rule="create")
    if settings.data_dir_created:
        typer.echo(f"created the data dir {settings.data_dir} (CALLVAULT_DATA_DIR)", err=True)
    applied = apply_migrations(settings.database_url)
    for revision in applied:
        typer.echo(f"applied {revision}")
    typer.echo(f"database at {head_revision()}" + ("" if applied else " (nothing to apply)"))


def main() -> None:
    app()
