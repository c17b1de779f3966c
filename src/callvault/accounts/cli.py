from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console

from callvault.accounts.service import NewAccount, create_account
from callvault.config import Settings, load_settings
from callvault.db import make_engine, make_sessionmaker, migrate, transaction

app = typer.Typer(help="Manage accounts.", no_args_is_help=True)


async def _create(settings: Settings, name: str) -> NewAccount:
    engine = make_engine(settings.database_url)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            return await create_account(session, settings.keyring, name)
    finally:
        await engine.dispose()


@app.command("create")
def create(
    name: str = typer.Argument(..., help="The account's name."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Create an account: prints its id, its API key (shown once) and webhook public key."""
    settings = load_settings(data_dir_rule="create")
    if settings.data_dir_created:
        typer.echo(f"created the data dir {settings.data_dir} (CALLVAULT_DATA_DIR)", err=True)
    if settings.is_embedded_database:
        migrate(settings.database_url)
    created = asyncio.run(_create(settings, name))
    fields = {
        "account_id": created.account_id,
        "api_key": created.api_key,
        "webhook_public_key": created.webhook_public_key,
    }
    if as_json:
        typer.echo(json.dumps(fields))
        return
    console = Console()
    for key, value in fields.items():
        console.print(f"[bold]{key}[/bold]: {value}")
    console.print("[yellow]The API key is shown only now; store it safely.[/yellow]")
