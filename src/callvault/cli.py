"""The `callvault` command (pinned interface, DESIGN.md). Sub-commands live with their domain."""

from __future__ import annotations

import dataclasses
import gc
import os

import typer
import uvicorn
import uvloop
from rich.console import Console

from callvault.accounts.cli import app as accounts_app
from callvault.config import Settings, load_settings
from callvault.db import migrate as apply_migrations
from callvault.encryption_keys.cli import decrypt as decrypt_command
from callvault.handoff.cli import app as handoff_app
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
app.add_typer(handoff_app, name="handoff")
app.command("status")(status_command)
app.command("ingest")(ingest_command)
app.command("decrypt")(decrypt_command)
err = Console(stderr=True)


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
        # uvloop, httptools with a header deadline, keep-alive and shutdown timeouts
        **server_options(settings.environ),
        # behind a proxy: the visitor's scheme (Secure cookies, HSTS) and address (sign-in
        # throttling) come from the proxy's X-Forwarded-* headers, from these addresses only;
        # None keeps uvicorn's default (FORWARDED_ALLOW_IPS, else 127.0.0.1)
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
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
def migrate() -> None:
    """Apply database migrations."""
    settings = load_settings()
    apply_migrations(settings.database_url)
    err.print("database is up to date")


def main() -> None:
    app()
