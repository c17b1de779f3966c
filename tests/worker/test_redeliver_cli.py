"""`callvault recordings redeliver --failed [--connection-id]` with a progress bar, against a
real HTTP server with its worker (LiveServer) and SeaweedFS."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from typer.testing import CliRunner

from callvault.accounts.service import NewAccount
from callvault.cli import app
from callvault.runtime import Runtime
from tests.conftest import LiveServer
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import (
    bearer,
    create_application,
    ingest,
    make_wav,
    new_bucket,
    recording_row,
    s3_generic,
    set_credentials,
    wait_for_status,
)


def cli_env(server: LiveServer) -> dict[str, str]:
    """The server's database and keys, so the command finds what the server wrote."""
    settings = server.settings
    return {
        "CALLVAULT_DATA_DIR": str(settings.data_dir),
        "CALLVAULT_DATABASE_URL": settings.database_url,
        "CALLVAULT_ENCRYPTION_KEYS": ",".join(settings.encryption_keys_b64),
        "CALLVAULT_INGEST_TOKEN": settings.ingest_token,
    }


async def run_cli(server: LiveServer, *args: str) -> tuple[int, str, str]:
    # in a thread: the command runs its own event loop (asyncio.run), this test is in one
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=cli_env(server))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


async def failing_connection(
    client: httpx.AsyncClient, account: NewAccount, seaweedfs: SeaweedFS, url: str
) -> str:
    """An application whose credentials SeaweedFS refuses: its recordings fail for good."""
    connection_id = await create_application(client, account.api_key, url)
    wrong = s3_generic(
        seaweedfs, new_bucket(seaweedfs), aws_secret_access_key="not-the-secret-" + "x" * 20
    )
    await set_credentials(client, account.api_key, connection_id, "s3-generic", wrong)
    return connection_id


async def test_failed_recordings_of_a_connection_are_stored_again(
    live_server: LiveServer,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
) -> None:
    token = live_server.settings.ingest_token
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        connection_id = await failing_connection(
            client, account, seaweedfs, webhook_receiver.url("/mine")
        )
        other_id = await failing_connection(
            client, account, seaweedfs, webhook_receiver.url("/other")
        )
        mine = [(await ingest(client, token, connection_id, make_wav(0.2)))[0] for _ in range(3)]
        other, _ = await ingest(client, token, other_id, make_wav(0.2))
        for recording_id in [*mine, other]:
            await wait_for_status(runtime, recording_id, "failed")
        await webhook_receiver.wait_for(4)  # four call.recording.error
        # without credentials the recordings stay in the default store when stored again
        for connection in (connection_id, other_id):
            deleted = await client.delete(
                f"/v2/custom_storage_credentials/{connection}", headers=bearer(account.api_key)
            )
            assert deleted.status_code == 204

    code, out, err = await run_cli(
        live_server, "recordings", "redeliver", "--failed", "--connection-id", connection_id
    )

    assert code == 0, err
    assert "re-queued 3 recording(s)" in out
    assert "re-queueing recordings" in err  # the progress bar
    for recording_id in mine:
        row = await wait_for_status(runtime, recording_id, "stored")
        assert row.backend is None and row.default_store_key  # in the default store
    saved = await webhook_receiver.wait_for(
        3, path="/mine", where=lambda d: d.event_type == "call.recording.saved"
    )
    assert sorted(d.payload["recording_id"] for d in saved) == sorted(mine)
    # the other connection's failure was left alone
    assert (await recording_row(runtime, other)).status == "failed"
    assert not [
        d for d in webhook_receiver.received("/other") if d.event_type == "call.recording.saved"
    ]

    # by id: the other one too; a stored recording in the default store can be re-sent as well
    code, out, err = await run_cli(live_server, "recordings", "redeliver", other, mine[0])
    assert code == 0, err
    assert "re-queued 2 recording(s)" in out
    await wait_for_status(runtime, other, "stored")


@pytest.mark.parametrize(
    "args",
    [["recordings", "redeliver"], ["recordings", "redeliver", "--connection-id", "1"]],
)
async def test_redeliver_needs_ids_or_failed(live_server: LiveServer, args: list[str]) -> None:
    code, _, err = await run_cli(live_server, *args)
    assert code == 2
    assert "--failed" in err
