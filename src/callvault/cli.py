"""The `callvault` command (pinned interface, DESIGN.md). Sub-commands live with their domain."""

from __future__ import annotations

import dataclasses
import gc
import os
from pathlib import Path

import typer
import uvicorn
import uvloop
from rich.console import Console

from callvault.accounts.cli import app as accounts_app
from callvault.config import Settings, load_settings
from callvault.db import migrate as apply_migrations
from callvault.encryption_keys.cli import decrypt as decrypt_command
from callvault.keys_cli import app as keys_app
from callvault.logs import configure_logging
from callvault.operations.cli import status as status_command
from callvault.operations.cli import webhooks_app
from callvault.recordings.cli import ingest as ingest_command
from callvault.worker.cli import recordings_app

app = typer.Typer(
    help="callvault: call recordings stored where their owner chooses.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(accounts_app, name="accounts")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(keys_app, name="keys")
app.add_typer(recordings_app, name="recordings")
app.command("status")(status_command)
app.command("ingest")(ingest_command)
app.command("decrypt")(decrypt_command)
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
    settings = load_settings()
    if not os.environ.get("CALLVAULT_PUBLIC_URL"):
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        settings = dataclasses.replace(settings, public_url=f"http://{shown_host}:{port}")
    return settings


def announce_generated(settings: Settings) -> None:
    for what, path in settings.generated_files.items():
        err.print(f"[dim]{what}: {path} (mode 0600)[/dim]")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    no_worker: bool = typer.Option(False, "--no-worker", help="API only; run workers apart."),
) -> None:
    """Run the API (and, unless --no-worker, the worker) in this process."""
    from callvault.app import create_app
    from callvault.runtime import Runtime

    configure_logging()
    settings = settings_for_server(host, port)
    if settings.is_embedded_database:
        apply_migrations(settings.database_url)
    announce_generated(settings)
    err.print(f"callvault on http://{host}:{port}  data dir {settings.data_dir}")
    application = create_app(Runtime.build(settings), run_worker=not no_worker)
    freeze_startup_objects()
    uvicorn.run(
        application,
        host=host,
        port=port,
        # explicit: "auto" would fall back silently to the slower pure-Python loop and parser
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        # longer than load balancers' idle timeouts (60 s) and clients' pools (httpx: 5 s), so a
        # client never reuses a connection the server is closing at that very moment
        timeout_keep_alive=75,
        timeout_graceful_shutdown=30,
    )


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, the app, mappers) out of the garbage
    collector's reach: full collections then walk only what requests create. Measured: p99 of
    the credentials GET under load 130 ms -> 55 ms (docs/performance.md)."""
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # else done by the first query, after the freeze
    gc.collect()
    gc.freeze()


@app.command()
def worker() -> None:
    """Run the worker only (uploads and webhook deliveries)."""
    from callvault.runtime import Runtime
    from callvault.worker.runner import run_until_signalled

    configure_logging()
    settings = load_settings()
    if settings.is_embedded_database:
        apply_migrations(settings.database_url)
    runtime = Runtime.build(settings)
    freeze_startup_objects()
    # uvloop, like `serve`: less CPU per database round trip and per upload
    uvloop.run(run_until_signalled(runtime))


@app.command()
def demo(
    timeout: float = typer.Option(30.0, help="Give up after this many seconds."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temp data dir afterwards."),
) -> None:
    """The whole flow on a fresh temp data dir, with a local webhook receiver."""
    from callvault.demo import run_demo

    raise typer.Exit(run_demo(timeout=timeout, keep=keep))


@app.command()
def backup(
    destination: Path = typer.Argument(..., help="A new (or empty) directory for the backup."),
) -> None:
    """Back up the embedded mode while it serves: database, default store, generated keys."""
    from callvault.operations.backup import BackupError
    from callvault.operations.backup import backup as make_backup

    settings = load_settings(_existing_data_dir())
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


def _existing_data_dir() -> dict[str, str]:
    """The environment, after checking the data dir exists (a backup never creates one)."""
    environ = dict(os.environ)
    data_dir = Path(environ.get("CALLVAULT_DATA_DIR", "./.callvault")).resolve()
    if not data_dir.is_dir():
        err.print(f"no data dir at {data_dir}")
        raise typer.Exit(2)
    return environ


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    settings = load_settings()
    apply_migrations(settings.database_url)
    err.print("database is up to date")


def main() -> None:
    app()
