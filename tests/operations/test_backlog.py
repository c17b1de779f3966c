import uuid
from datetime import timedelta

from callvault.db import transaction, utcnow
from callvault.operations.backlog import read_backlog
from callvault.recordings.models import Recording
from callvault.webhooks.models import WebhookEvent
from tests.conftest import auth


def recording_row(account_id: str, status: str, age: timedelta) -> Recording:
    started = utcnow() - age
    return Recording(
        id=str(uuid.uuid4()),
        account_id=account_id,
        connection_id="1",
        call_control_id="cc",
        call_leg_id=str(uuid.uuid4()),
        call_session_id="cs",
        format="wav",
        channels="single",
        recording_started_at=started,
        recording_ended_at=started,
        size_bytes=1,
        sha256="0" * 64,
        duration_millis=1,
        status=status,
        created_at=started,
    )


def event_row(account_id: str, status: str, age: timedelta = timedelta()) -> WebhookEvent:
    return WebhookEvent(
        id=str(uuid.uuid4()),
        account_id=account_id,
        application_id="1",
        event_type="call.recording.saved",
        api_version="2",
        payload={},
        status=status,
        created_at=utcnow() - age,
        next_attempt_at=None,
    )


async def test_backlog_counts_states_and_the_oldest_waiting_job(runtime, account):
    async with runtime.sessions() as session:
        before = await read_backlog(session)
    async with transaction(runtime.sessions) as session:
        session.add_all(
            [
                recording_row(account.account_id, "received", timedelta(hours=3)),
                recording_row(account.account_id, "stored", timedelta(0)),
                recording_row(account.account_id, "failed", timedelta(0)),
                event_row(account.account_id, "pending"),
                event_row(account.account_id, "failed"),
            ]
        )
    async with runtime.sessions() as session:
        after = await read_backlog(session)
    for state in ("received", "stored", "failed"):
        assert after.recordings_by_state[state] == before.recordings_by_state[state] + 1
    assert after.events_pending == before.events_pending + 1
    assert after.events_failed == before.events_failed + 1
    assert after.oldest_pending_age_seconds(utcnow()) >= 3 * 3600 - 5


async def test_retry_requeues_a_failed_event_of_the_caller_only(
    api, runtime, account, other_account
):
    failed = event_row(account.account_id, "failed")
    delivered = event_row(account.account_id, "delivered")
    async with transaction(runtime.sessions) as session:
        session.add_all([failed, delivered])
    path = f"/v2/webhook_deliveries/{failed.id}/actions/retry"

    foreign = await api.post(path, headers=auth(other_account))
    assert foreign.status_code == 404
    assert foreign.json()["errors"][0]["code"] == "10005"

    response = await api.post(path, headers=auth(account))
    assert response.status_code == 202, response.text
    assert response.json()["data"] == {
        "id": failed.id,
        "record_type": "webhook_delivery",
        "status": "pending",
        "attempts": 0,
    }
    async with runtime.sessions() as session:
        assert (await session.get(WebhookEvent, failed.id)).status == "pending"

    again = await api.post(
        f"/v2/webhook_deliveries/{delivered.id}/actions/retry", headers=auth(account)
    )
    assert again.status_code == 409
    unknown = await api.post(
        f"/v2/webhook_deliveries/{uuid.uuid4()}/actions/retry", headers=auth(account)
    )
    assert unknown.status_code == 404
    no_auth = await api.post(path)
    assert no_auth.status_code == 401
    assert no_auth.json() == {
        "errors": [
            {
                "code": "10009",
                "title": "Authentication failed",
                "detail": "Authentication failed: send 'Authorization: Bearer <API key>'.",
                "meta": {"url": "https://developers.telnyx.com/docs/overview/errors/10009"},
            }
        ]
    }
