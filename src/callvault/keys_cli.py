"""`callvault keys`: encryption key rotation (procedure in docs/security.md)."""

from __future__ import annotations

import asyncio
import base64
import secrets

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from callvault.config import load_settings
from callvault.credentials.rotation import (
    DEFAULT_BATCH_SIZE,
    RotationReport,
    count_rows,
    rotate_all,
)
from callvault.db import database_sessions
from callvault.db import migrate as apply_migrations

app = typer.Typer(help="Manage the encryption keys of secrets at rest.", no_args_is_help=True)
err = Console(stderr=True)


@app.command("generate")
def generate() -> None:
    """Print a new random key (base64, 32 bytes) to put first in CALLVAULT_ENCRYPTION_KEYS."""
    typer.echo(base64.b64encode(secrets.token_bytes(32)).decode())


async def _rotate(batch_size: int) -> RotationReport:
    settings = load_settings(data_dir_rule="require")
    async with database_sessions(settings.database_url) as sessions:
        total = await count_rows(sessions)
        with Progress(
            TextColumn("re-encrypting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as bar:
            task = bar.add_task("rotate", total=total)
            return await rotate_all(
                sessions,
                settings.keyring,
                batch_size=batch_size,
                progress=lambda done: bar.advance(task, done),
            )


@app.command("rotate")
def rotate(
    batch_size: int = typer.Option(
        DEFAULT_BATCH_SIZE, min=1, help="Rows per transaction (short transactions keep the API up)."
    ),
) -> None:
    """Re-encrypt every stored secret under the first key of CALLVAULT_ENCRYPTION_KEYS.

    Afterwards the other keys can be removed from CALLVAULT_ENCRYPTION_KEYS.
    """
    settings = load_settings(data_dir_rule="require")
    if settings.is_embedded_database:
        apply_migrations(settings.database_url)
    report = asyncio.run(_rotate(batch_size))
    err.print(
        f"re-encrypted {report.rotated}, already under the active key {report.already_current}"
    )
    if not report.complete:
        # name rows, never values: these are secrets
        for label, row_id in report.unreadable:
            err.print(f"[red]cannot decrypt {label} of {row_id} with any configured key[/red]")
        err.print("[red]Keep the old keys configured until these rows are fixed or deleted.[/red]")
        raise typer.Exit(1)
    err.print("[green]every secret is under the active key; older keys can be removed[/green]")
