"""`callvault recordings redeliver`: put many recordings back through the pipeline at once
(the operator's form of `POST /v2/recordings/{id}/actions/redeliver`), with a progress bar.

Each recording is re-queued in its own transaction (`transitions.requeue_for_redelivery`: a
failed recording, or one kept in the default store); the running workers pick them up at
their next poll (0.5 s). Recordings in a customer bucket already, or still in progress, are
skipped and counted as such.
"""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from callvault.config import load_settings
from callvault.db import database_sessions, transaction, utcnow
from callvault.recordings import repository, transitions

recordings_app = typer.Typer(help="Recordings in the pipeline.", no_args_is_help=True)
err = Console(stderr=True)


async def _redeliver(recording_ids: list[str], failed: bool, connection_id: str | None) -> int:
    url = load_settings(data_dir_rule="require").database_url
    async with database_sessions(url) as sessions:
        if failed:
            async with sessions() as session:
                recording_ids = recording_ids + await repository.failed_recording_ids(
                    session, connection_id
                )
        requeued = 0
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
        ) as progress:
            task = progress.add_task("re-queueing recordings", total=len(recording_ids))
            for recording_id in dict.fromkeys(recording_ids):  # each once, in order
                async with transaction(sessions) as session:
                    requeued += await transitions.requeue_for_redelivery(
                        session, recording_id, utcnow()
                    )
                progress.advance(task)
        return requeued


@recordings_app.command("redeliver")
def redeliver(
    recording_ids: list[str] = typer.Argument(None, help="Recording ids to store again."),
    failed: bool = typer.Option(
        False, "--failed", help="Every recording that failed (kept in the default store)."
    ),
    connection_id: str | None = typer.Option(
        None, "--connection-id", help="With --failed: only this connection's recordings."
    ),
) -> None:
    """Store recordings again and send their webhooks (the running workers pick them up)."""
    if not recording_ids and not failed:
        raise typer.BadParameter("name recording ids or pass --failed")
    if connection_id is not None and not failed:
        raise typer.BadParameter("--connection-id goes with --failed")
    ids = list(recording_ids or [])
    count = asyncio.run(_redeliver(ids, failed, connection_id))
    typer.echo(f"re-queued {count} recording(s)")
