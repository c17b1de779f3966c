"""The Recordings API (/v2/recordings) and the signed download links of the local store."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update

from callvault.accounts.service import NewAccount
from callvault.db import transaction
from callvault.recordings.models import Recording, RecordingStatus
from callvault.recordings.service import download_urls_for
from callvault.runtime import Runtime
from callvault.storage.signed_links import link_url
from tests.conftest import auth
from tests.recordings.conftest import (
    add_application,
    ingest_ok,
    local_store,
    recording_row,
)
from tests.recordings.samples import make_mp3, make_wav

pytestmark = pytest.mark.usefixtures("clean_incoming")


def local_path(url: str) -> str:
    """The path and query of a download link, to fetch it through the in-process client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def set_row(runtime: Runtime, recording_id: str, **values: object) -> None:
    async with transaction(runtime.sessions) as session:
        await session.execute(update(Recording).where(Recording.id == recording_id).values(values))


async def test_get_returns_telnyx_shape_with_a_fresh_download_link(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    audio = make_wav(seconds=0.5, channels=2)
    recording_id = await ingest_ok(api, runtime, connection_id, audio, channels="dual")

    response = await api.get(f"/v2/recordings/{recording_id}", headers=auth(account))

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["id"] == recording_id
    assert data["record_type"] == "recording"
    assert data["connection_id"] == connection_id
    assert data["channels"] == "dual" and data["format"] == "wav"
    assert data["status"] == "completed" and data["source"] == "call"
    assert data["duration_millis"] == 500
    assert data["storage"] == {
        "state": "stored",  # no custom storage: stored at ingest (issue 14)
        "location": "default",
        "backend": None,
        "error": None,
        "detail": None,
    }
    assert data["recording_started_at"].endswith("Z")
    assert set(data["download_urls"]) == {"wav"}
    link = data["download_urls"]["wav"]
    assert link.startswith(runtime.settings.public_url + "/v2/recording_files/")
    expires = int(dict(p.split("=") for p in urlsplit(link).query.split("&"))["expires"])
    assert 590 <= expires - time.time() <= 601

    download = await api.get(local_path(link))  # no API key: the signature is the auth
    assert download.status_code == 200
    assert download.content == audio
    assert download.headers["content-type"] == "audio/wav"
    head = await api.head(local_path(link))
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(audio)
    partial = await api.get(local_path(link), headers={"Range": "bytes=0-43"})
    assert partial.status_code == 206 and partial.content == audio[:44]


async def test_mp3_download_link_and_content_type(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    audio = make_mp3(frames=10)
    recording_id = await ingest_ok(api, runtime, connection_id, audio, format="mp3")
    data = (await api.get(f"/v2/recordings/{recording_id}", headers=auth(account))).json()["data"]
    download = await api.get(local_path(data["download_urls"]["mp3"]))
    assert download.content == audio
    assert download.headers["content-type"] == "audio/mpeg"


async def test_expired_or_tampered_links_are_403(
    api: httpx.AsyncClient, runtime: Runtime, connection_id: str
) -> None:
    recording_id = await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1))
    key = (await recording_row(runtime, recording_id)).default_store_key
    assert key is not None
    secret = runtime.settings.link_secret
    public = runtime.settings.public_url
    good = local_path(link_url(public, secret, key, int(time.time()) + 60))
    assert (await api.get(good)).status_code == 200

    expired = local_path(link_url(public, secret, key, int(time.time()) - 1))
    path, query = good.split("?")
    signature = query.split("signature=")[1]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    later = query.replace("expires=", "expires=9").replace(f"signature={signature}", "")
    other_key = path.replace(".wav", ".mp3")
    wrong_secret = local_path(link_url(public, b"another secret", key, int(time.time()) + 60))
    for url in (
        expired,
        f"{path}?{query.replace(signature, flipped)}",
        f"{path}?{later}signature={signature}",  # expiry pushed out, same signature
        f"{other_key}?{query}",
        wrong_secret,
        path,  # no query at all
        f"{path}?expires=soon&signature={signature}",
    ):
        response = await api.get(url)
        assert response.status_code == 403, url
        assert response.json()["errors"][0]["title"] == "Authorization failed"


async def test_links_cannot_escape_the_store_root(api: httpx.AsyncClient, runtime: Runtime) -> None:
    secret, public = runtime.settings.link_secret, runtime.settings.public_url
    for key in ("../callvault.db", "a/../../ingest.token", "/etc/passwd"):
        expires = int(time.time()) + 60
        signed = link_url(public, secret, key, expires)
        signature = signed.rsplit("signature=", 1)[1]
        # percent-encoded dots, so no client normalizes them away before the server sees them
        raw = key.replace(".", "%2E")
        response = await api.get(
            f"/v2/recording_files/{raw}?expires={expires}&signature={signature}"
        )
        # the signature holds (the key is what was signed): the path check refuses it
        assert response.status_code == 403, key
        assert b"root:" not in response.content


async def test_a_symlink_out_of_the_store_is_not_served(
    api: httpx.AsyncClient, runtime: Runtime, tmp_path: Path
) -> None:
    secret = tmp_path / "outside.wav"
    secret.write_bytes(b"RIFF not a recording of this store")
    key = "acct/2022-02-02/linked-1643805460.wav"
    link = local_store(runtime).path_for(key)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    signed = link_url(runtime.settings.public_url, runtime.settings.link_secret, key, 2**40)
    response = await api.get(local_path(signed))
    assert response.status_code == 404
    assert b"not a recording" not in response.content


async def test_list_pages_and_filters(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    other_account: NewAccount,
    connection_id: str,
    other_connection_id: str,
) -> None:
    second_connection = await add_application(runtime, account.account_id)
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = [
        await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1)),
        await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1)),
        await ingest_ok(api, runtime, second_connection, make_wav(seconds=0.1)),
    ]
    foreign = await ingest_ok(api, runtime, other_connection_id, make_wav(seconds=0.1))
    after = datetime.now(UTC) + timedelta(seconds=1)
    headers = auth(account)

    async def listed(**params: object) -> dict:
        response = await api.get("/v2/recordings", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    everything = await listed()
    assert {r["id"] for r in everything["data"]} == set(ids)
    assert foreign not in {r["id"] for r in everything["data"]}
    assert everything["meta"] == {
        "page_number": 1,
        "page_size": 20,
        "total_pages": 1,
        "total_results": 3,
    }
    assert all(set(r["download_urls"]) == {"wav"} for r in everything["data"])

    first = await listed(**{"page[size]": 2, "page[number]": 1})
    second = await listed(**{"page[size]": 2, "page[number]": 2})
    assert first["meta"]["total_pages"] == 2 and len(first["data"]) == 2
    assert len(second["data"]) == 1
    assert {r["id"] for r in first["data"] + second["data"]} == set(ids)
    beyond = await listed(**{"page[size]": 2, "page[number]": 3})
    assert beyond["data"] == [] and beyond["meta"]["total_results"] == 3

    by_connection = await listed(**{"filter[connection_id]": second_connection})
    assert [r["id"] for r in by_connection["data"]] == [ids[2]]
    sample = everything["data"][0]
    for field in ("call_leg_id", "call_control_id", "call_session_id"):
        found = await listed(**{f"filter[{field}]": sample[field]})
        assert [r["id"] for r in found["data"]] == [sample["id"]], field
    assert (await listed(**{"filter[connection_id]": other_connection_id}))["data"] == []

    in_range = await listed(
        **{
            "filter[created_at][gte]": before.isoformat(),
            "filter[created_at][lte]": after.isoformat(),
        }
    )
    assert in_range["meta"]["total_results"] == 3
    assert (await listed(**{"filter[created_at][gte]": after.isoformat()}))["data"] == []
    assert (await listed(**{"filter[created_at][lte]": before.isoformat()}))["data"] == []


@pytest.mark.parametrize(
    "params",
    [{"page[size]": 0}, {"page[size]": 251}, {"page[number]": 0}, {"page[number]": "x"}],
)
async def test_bad_page_parameters_are_422(
    api: httpx.AsyncClient, account: NewAccount, params: dict
) -> None:
    response = await api.get("/v2/recordings", params=params, headers=auth(account))
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"]["parameter"] == next(iter(params))


async def test_recordings_need_an_api_key(api: httpx.AsyncClient) -> None:
    for method, url in (
        ("GET", "/v2/recordings"),
        ("GET", "/v2/recordings/00000000-0000-0000-0000-000000000000"),
        ("DELETE", "/v2/recordings/00000000-0000-0000-0000-000000000000"),
        ("POST", "/v2/recordings/actions/delete"),
    ):
        response = await api.request(method, url, json={"ids": []} if method == "POST" else None)
        assert response.status_code == 401, url


async def test_other_accounts_and_invalid_ids_are_404(
    api: httpx.AsyncClient,
    runtime: Runtime,
    other_account: NewAccount,
    connection_id: str,
) -> None:
    recording_id = await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1))
    headers = auth(other_account)
    for rid in (recording_id, "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        for method in ("GET", "DELETE"):
            response = await api.request(method, f"/v2/recordings/{rid}", headers=headers)
            assert response.status_code == 404, (method, rid)
            assert response.json()["errors"][0]["code"] == "10005"
    row = await recording_row(runtime, recording_id)
    assert row.status == RecordingStatus.STORED  # untouched by the other account's delete
    assert row.default_store_key is not None
    assert local_store(runtime).path_for(row.default_store_key).exists()


async def test_delete_removes_the_default_store_object(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    recording_id = await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1))
    key = (await recording_row(runtime, recording_id)).default_store_key
    assert key is not None
    link = local_path(
        (await api.get(f"/v2/recordings/{recording_id}", headers=auth(account))).json()["data"][
            "download_urls"
        ]["wav"]
    )

    response = await api.delete(f"/v2/recordings/{recording_id}", headers=auth(account))

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["id"] == recording_id
    assert data["download_urls"] == {}
    assert data["storage"]["state"] == "deleted"
    assert not local_store(runtime).path_for(key).exists()
    assert await local_store(runtime).head(key) is None
    row = await recording_row(runtime, recording_id)
    assert row.status == RecordingStatus.DELETED and row.default_store_key is None
    assert (await api.get(link)).status_code == 404  # a link handed out before is dead
    again = await api.get(f"/v2/recordings/{recording_id}", headers=auth(account))
    assert again.status_code == 404
    assert (
        await api.delete(f"/v2/recordings/{recording_id}", headers=auth(account))
    ).status_code == 404
    listed = await api.get("/v2/recordings", headers=auth(account))
    assert recording_id not in {r["id"] for r in listed.json()["data"]}


async def test_bulk_delete_deletes_only_the_accounts_recordings(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    connection_id: str,
    other_connection_id: str,
) -> None:
    mine = [await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1)) for _ in range(3)]
    theirs = await ingest_ok(api, runtime, other_connection_id, make_wav(seconds=0.1))
    ids = [mine[0], mine[1].upper(), theirs, "nope", "00000000-0000-0000-0000-000000000000"]

    response = await api.post(
        "/v2/recordings/actions/delete", json={"ids": ids}, headers=auth(account)
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}
    states = {rid: (await recording_row(runtime, rid)).status for rid in [*mine, theirs]}
    assert states == {
        mine[0]: RecordingStatus.DELETED,
        mine[1]: RecordingStatus.DELETED,
        mine[2]: RecordingStatus.STORED,
        theirs: RecordingStatus.STORED,
    }
    theirs_key = (await recording_row(runtime, theirs)).default_store_key
    assert theirs_key is not None and local_store(runtime).path_for(theirs_key).exists()


async def test_bulk_delete_body_is_validated(api: httpx.AsyncClient, account: NewAccount) -> None:
    response = await api.post(
        "/v2/recordings/actions/delete", json={"ids": "x"}, headers=auth(account)
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"]["pointer"] == "/ids"


async def test_custom_storage_and_failed_states(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    stored = await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1))
    failed = await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1))
    canonical = "s3://customer-bucket/acct/2024-05-17/leg-1715938212"
    # what the worker writes once the copy to the customer's bucket is verified
    stored_key = (await recording_row(runtime, stored)).default_store_key
    await set_row(
        runtime,
        stored,
        status=RecordingStatus.STORED,
        backend="s3",
        bucket="customer-bucket",
        object_key="acct/2024-05-17/leg-1715938212",
        recording_url=canonical,
        default_store_key=None,
    )
    assert stored_key is not None
    await local_store(runtime).delete(stored_key)
    await set_row(
        runtime,
        failed,
        status=RecordingStatus.FAILED,
        error_reason="bad credentials",
        error_detail="s3 bucket b: SignatureDoesNotMatch — the secret key is wrong",
    )

    got = (await api.get(f"/v2/recordings/{stored}", headers=auth(account))).json()["data"]
    # the connection has no credentials to presign with: no link rather than an s3:// URI
    # (presigned links: tests/recordings/test_download_urls.py)
    assert got["download_urls"] == {}
    assert got["storage"] == {
        "state": "stored",
        "location": "custom",
        "backend": "s3",
        "error": None,
        "detail": None,
    }
    row = await recording_row(runtime, stored)
    assert row.recording_url == canonical
    assert await download_urls_for(runtime, row) == {}

    got = (await api.get(f"/v2/recordings/{failed}", headers=auth(account))).json()["data"]
    assert got["storage"]["state"] == "failed"
    assert got["storage"]["location"] == "default"
    assert got["storage"]["error"] == "bad credentials"
    # the precise reason too, as the call.recording.error webhook's `detail` (issue 26)
    assert (
        got["storage"]["detail"] == "s3 bucket b: SignatureDoesNotMatch — the secret key is wrong"
    )
    assert (await api.get(local_path(got["download_urls"]["wav"]))).status_code == 200

    # deleting a recording in the customer's bucket only marks it: their bucket is theirs
    response = await api.delete(f"/v2/recordings/{stored}", headers=auth(account))
    assert response.status_code == 200
    assert (await recording_row(runtime, stored)).status == RecordingStatus.DELETED


async def test_bulk_delete_takes_more_ids_than_one_batch(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    # the spec sets no maximum on ids; callvault deletes them in batches of 250
    real = [await ingest_ok(api, runtime, connection_id, make_wav(seconds=0.1)) for _ in range(2)]
    ids = [str(uuid.uuid4()) for _ in range(598)] + real
    response = await api.post(
        "/v2/recordings/actions/delete", json={"ids": ids}, headers=auth(account)
    )
    assert response.status_code == 200, response.text
    for recording_id in real:
        gone = await api.get(f"/v2/recordings/{recording_id}", headers=auth(account))
        assert gone.status_code == 404
