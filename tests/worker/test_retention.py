"""Nothing grows without bound: webhook history past CALLVAULT_WEBHOOK_RETENTION_DAYS is pruned
in batches, default-store recordings past CALLVAULT_RECORDING_RETENTION_DAYS are deleted and
their rows marked; pending work and customer-bucket recordings are never touched."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from callvault.accounts.service import NewAccount
from callvault.db import transaction, utcnow
from callvault.jobs import make_worker
from callvault.metrics import RECORDINGS_EXPIRED, WEBHOOK_EVENTS_PRUNED
from callvault.recordings.retention import RecordingRetention, expire_recordings
from callvault.runtime import Runtime
from callvault.webhooks.models import WebhookAttempt, WebhookEvent
from callvault.webhooks.retention import WebhookRetention, prune_webhooks
from tests.worker.flow import insert_recording, recording_row, wait_until


def test_settings_are_parsed_by_their_domains() -> None:
    assert WebhookRetention.from_env({}).days == 30
    assert WebhookRetention.from_env({"CALLVAULT_WEBHOOK_RETENTION_DAYS": "7"}).days == 7
    assert RecordingRetention.from_env({}).days is None  # keep forever
    assert RecordingRetention.from_env({}).cutoff(utcnow()) is None
    assert RecordingRetention.from_env({"CALLVAULT_RECORDING_RETENTION_DAYS": "90"}).days == 90
    for bad in ("0", "-1"):
        with pytest.raises(ValueError):
            WebhookRetention.from_env({"CALLVAULT_WEBHOOK_RETENTION_DAYS": bad})
        with pytest.raises(ValueError):
            RecordingRetention.from_env({"CALLVAULT_RECORDING_RETENTION_DAYS": bad})


async def add_event(runtime: Runtime, account_id: str, status: str, age_days: float) -> str:
    created = utcnow() - timedelta(days=age_days)
    event_id = str(uuid.uuid4())
    async with transaction(runtime.sessions) as session:
        session.add(
            WebhookEvent(
                id=event_id,
                account_id=account_id,
                application_id="app",
                recording_id=None,
                event_type="call.recording.saved",
                api_version="2",
                payload={},
                status=status,
                created_at=created,
                occurred_at=created,
            )
        )
        await session.flush()
        for attempt in (1, 2):
            session.add(
                WebhookAttempt(
                    event_id=event_id, attempt=attempt, url="https://x.test", created_at=created
                )
            )
    return event_id


async def count(runtime: Runtime, model: type, ids: list[str], column: str) -> int:
    async with runtime.sessions() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(model).where(getattr(model, column).in_(ids))
            )
            or 0
        )


async def test_old_finished_webhook_history_is_pruned_in_batches(
    runtime: Runtime, account: NewAccount
) -> None:
    old = [
        await add_event(runtime, account.account_id, status, 40)
        for status in ("delivered", "failed", "delivered", "failed", "delivered")
    ]
    kept = [
        await add_event(runtime, account.account_id, "delivered", 2),
        await add_event(runtime, account.account_id, "pending", 40),  # still work
    ]
    before = WEBHOOK_EVENTS_PRUNED._value.get()
    pruned = await prune_webhooks(runtime, WebhookRetention(30), utcnow(), batch=2)
    assert pruned.events >= 5 and pruned.attempts >= 10 + 2  # + the pending one's old attempts
    assert await count(runtime, WebhookEvent, old, "id") == 0
    assert await count(runtime, WebhookAttempt, old, "event_id") == 0
    assert await count(runtime, WebhookEvent, kept, "id") == 2
    # the recent event keeps its attempts; the pending one keeps its row, old attempts go
    assert await count(runtime, WebhookAttempt, kept[:1], "event_id") == 2
    assert await count(runtime, WebhookAttempt, kept[1:], "event_id") == 0
    assert WEBHOOK_EVENTS_PRUNED._value.get() - before == pruned.events


async def default_store_recording(
    runtime: Runtime, account: NewAccount, age_days: float, **kw: object
) -> tuple[str, Path]:
    key = f"{account.account_id}/2020-01-01/{uuid.uuid4()}.wav"
    path = runtime.default_store.path_for(key)  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")
    created = utcnow() - timedelta(days=age_days)
    fields = dict(status="stored", default_store_key=key, created_at=created, next_attempt_at=None)
    fields.update(kw)
    recording_id = await insert_recording(runtime, account.account_id, "conn", **fields)
    return recording_id, path


async def test_expired_default_store_recordings_are_deleted_and_marked(
    runtime: Runtime, account: NewAccount
) -> None:
    old_stored = await default_store_recording(runtime, account, 100)
    old_failed = await default_store_recording(runtime, account, 100, status="failed")
    recent = await default_store_recording(runtime, account, 1)
    in_customer_bucket = await default_store_recording(
        runtime, account, 100, backend="s3", bucket="b", object_key="k"
    )
    before = RECORDINGS_EXPIRED._value.get()
    assert await expire_recordings(runtime, RecordingRetention(None), utcnow()) == 0
    assert await expire_recordings(runtime, RecordingRetention(90), utcnow(), batch=1) >= 2
    for recording_id, path in (old_stored, old_failed):
        row = await recording_row(runtime, recording_id)
        assert row.status == "deleted" and row.default_store_key is None
        assert row.error_detail and "CALLVAULT_RECORDING_RETENTION_DAYS" in row.error_detail
        assert not path.exists()
    for recording_id, path in (recent, in_customer_bucket):
        assert (await recording_row(runtime, recording_id)).status == "stored"
        assert path.exists()
    assert RECORDINGS_EXPIRED._value.get() - before >= 2


async def test_the_worker_runs_retention(runtime: Runtime, account: NewAccount) -> None:
    old = await add_event(runtime, account.account_id, "delivered", 10)
    expired, path = await default_store_recording(runtime, account, 10)
    environ = {
        **runtime.settings.environ,
        "CALLVAULT_WEBHOOK_RETENTION_DAYS": "5",
        "CALLVAULT_RECORDING_RETENTION_DAYS": "5",
    }
    settings = dataclasses.replace(runtime.settings, environ=environ)
    short = Runtime.build(settings)
    worker = make_worker(short, poll_seconds=0.1)
    await worker.start()
    try:

        async def done() -> bool:
            gone = await count(runtime, WebhookEvent, [old], "id") == 0
            return gone and (await recording_row(runtime, expired)).status == "deleted"

        await wait_until(done, within=20, what="retention ran")
        assert not path.exists()
    finally:
        await worker.stop()
        await short.close()
