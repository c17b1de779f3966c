"""Operator commands: the backlog, and re-sending webhook events that gave up."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from callvault.config import load_settings
from callvault.db import database_sessions, transaction, utcnow
from callvault.operations.backlog import Backlog, read_backlog
from callvault.operations.retries import failed_event_ids, requeue_event

webhooks_app = typer.Typer(help="Webhook deliveries.", no_args_is_help=True)


async def _backlog() -> Backlog:
    database_url = load_settings(data_dir_rule="require").database_url
    async with database_sessions(database_url) as sessions, sessions() as session:
        return await read_backlog(session)


def status(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Show the backlog: recordings per state, webhook events pending/failed, oldest age."""
    backlog = asyncio.run(_backlog())
    summary = backlog.as_json(utcnow())
    if as_json:
        typer.echo(json.dumps(summary))
        return
    table = Table(title="callvault backlog")
    table.add_column("what")
    table.add_column("count", justify="right")
    for state, count in backlog.recordings_by_state.items():
        table.add_row(f"recordings {state}", str(count))
    table.add_row("webhook events pending", str(backlog.events_pending))
    table.add_row("webhook events failed", str(backlog.events_failed))
    table.add_row("oldest pending age (s)", str(summary["oldest_pending_age_seconds"]))
    Console().print(table)


async def _retry(event_ids: list[str], all_failed: bool) -> int:
    database_url = load_settings(data_dir_rule="require").database_url
    async with database_sessions(database_url) as sessions:
        if all_failed:
            async with sessions() as session:
                event_ids = event_ids + await failed_event_ids(session)
        requeued = 0
        with Progress(console=Console(stderr=True), transient=False) as progress:
            task = progress.add_task("re-queueing webhook events", total=len(event_ids))
            for event_id in event_ids:
                async with transaction(sessions) as session:
                    event = await requeue_event(session, event_id)
                requeued += event is not None
                progress.advance(task)
        return requeued


@webhooks_app.command("retry")
def retry(
    event_ids: list[str] = typer.Argument(None, help="Event ids to send again."),
    all_failed: bool = typer.Option(False, "--all-failed", help="Every event that gave up."),
) -> None:
    """Send webhook events again whose deliveries gave up (the running workers pick them up)."""
    if not event_ids and not all_failed:
        raise typer.BadParameter("name event ids or pass --all-failed")
    count = asyncio.run(_retry(list(event_ids or []), all_failed))
    typer.echo(f"re-queued {count} event(s)")
