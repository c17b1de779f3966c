from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from callvault.accounts import repository
from callvault.accounts.cache import REVOCATION_LAG_SECS
from callvault.accounts.service import (
    KeyNameRefused,
    NewAccount,
    NewApiKey,
    create_account,
    create_api_key,
    revoke_api_key,
)
from callvault.config import Settings, load_settings
from callvault.db import database_sessions, migrate, transaction

app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
# not to be confused with `callvault keys`: the keys of the secrets at rest
api_keys_app = typer.Typer(
    help="An account's API keys: create, list, revoke (rotation).", no_args_is_help=True
)
app.add_typer(api_keys_app, name="api-keys")
err = Console(stderr=True)


async def _create(settings: Settings, name: str) -> NewAccount:
    async with (
        database_sessions(settings.database_url) as sessions,
        transaction(sessions) as session,
    ):
        return await create_account(session, settings.keyring, name)


def _show_new_key(fields: Mapping[str, str | None], as_json: bool) -> None:
    """Prints what was created, with the API key that is shown this once only."""
    if as_json:
        typer.echo(json.dumps(fields))
        return
    console = Console()
    for key, value in fields.items():
        console.print(f"[bold]{key}[/bold]: {value if value is not None else ''}")
    console.print("[yellow]The API key is shown only now; store it safely.[/yellow]")


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
    _show_new_key(fields, as_json)


# ---- api keys


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _new_key(account_id: str, name: str | None) -> NewApiKey | None:
    database_url = load_settings(data_dir_rule="require").database_url
    async with database_sessions(database_url) as sessions, transaction(sessions) as session:
        if await repository.by_id(session, account_id) is None:
            return None
        return await create_api_key(session, account_id, name)


async def _listed(account_id: str) -> list[dict[str, Any]] | None:
    database_url = load_settings(data_dir_rule="require").database_url
    async with database_sessions(database_url) as sessions, sessions() as session:
        if await repository.by_id(session, account_id) is None:
            return None
        return [
            {
                "id": key.id,
                "name": key.name,
                "created_at": _when(key.created_at),
                "last_used_at": _when(key.last_used_at),
            }
            for key in await repository.keys_of(session, account_id)
        ]


async def _revoke(key_id: str) -> bool:
    database_url = load_settings(data_dir_rule="require").database_url
    async with database_sessions(database_url) as sessions, transaction(sessions) as session:
        revoked = await revoke_api_key(session, key_id)
    if revoked:  # until then a process may still take it from its cache (accounts/cache.py)
        await asyncio.sleep(REVOCATION_LAG_SECS)
    return revoked


def _no_account(account_id: str) -> typer.Exit:
    err.print(f"no account {account_id}")
    return typer.Exit(1)


@api_keys_app.command("create")
def create_key(
    account_id: str = typer.Argument(..., help="The account's id."),
    name: str | None = typer.Option(None, "--name", help="What the key is for (max 200)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Add an API key to an account: prints its id, the key (shown once) and its name."""
    try:
        created = asyncio.run(_new_key(account_id, name))
    except KeyNameRefused as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    if created is None:
        raise _no_account(account_id)
    fields = {"id": created.id, "api_key": created.api_key, "name": created.name}
    _show_new_key(fields, as_json)


@api_keys_app.command("list")
def list_keys(
    account_id: str = typer.Argument(..., help="The account's id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List an account's API keys (never the keys themselves)."""
    listed = asyncio.run(_listed(account_id))
    if listed is None:
        raise _no_account(account_id)
    if as_json:
        typer.echo(json.dumps({"account_id": account_id, "api_keys": listed}))
        return
    table = Table(title=f"API keys of {account_id}")
    for column in ("id", "name", "created_at", "last_used_at"):
        table.add_column(column)
    for item in listed:
        table.add_row(
            *(str(item[column] or "") for column in ("id", "name", "created_at", "last_used_at"))
        )
    Console().print(table)


@api_keys_app.command("revoke")
def revoke_key(key_id: str = typer.Argument(..., help="The API key's id.")) -> None:
    """Revoke an API key: it answers 401 from now on, and its console sessions end."""
    if not asyncio.run(_revoke(key_id)):
        err.print(f"no API key {key_id}")
        raise typer.Exit(1)
    err.print(f"API key {key_id} revoked")
