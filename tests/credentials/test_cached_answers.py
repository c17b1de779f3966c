"""GET /v2/custom_storage_credentials/{id} from the answer cache (credentials/answers.py,
credentials/cached_get.py), on SQLite and PostgreSQL: a repeated GET reads no row, and no
change — by this process, another process or a cascade — is ever answered stale."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from callvault.accounts.service import NewAccount
from callvault.credentials import service
from callvault.credentials.answers import AnswerCache
from callvault.credentials.schemas import CredentialsResponse
from callvault.generation import generation_reader
from callvault.runtime import Runtime
from tests.conftest import auth
from tests.credentials.helpers import BASE, counting, other_process_engine, saved
from tests.credentials.samples import body
from tests.servers import ServiceAccount


def bucket_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    bucket: str = response.json()["data"]["configuration"]["bucket"]
    return bucket


async def test_repeated_gets_read_no_row_and_share_the_generation_read(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
) -> None:
    await saved(api, account, connection_id, gcs_service_account)
    url, headers = f"{BASE}/{connection_id}", auth(account)
    first = await api.get(url, headers=headers)
    assert first.status_code == 200
    on_loop = generation_reader(runtime).loop_reader is not None

    with counting(runtime) as counter:
        second = await api.get(url, headers=headers)
    assert second.status_code == 200 and second.content == first.content
    assert second.headers["content-type"] == "application/json"
    # SQLite: the generation is read on the event loop (db.LoopReader), outside SQLAlchemy;
    # PostgreSQL: the generation only — never the credentials row
    assert len(counter.statements) == (0 if on_loop else 1), counter.statements
    assert all("storage_credentials" not in sql for sql in counter.statements)

    with counting(runtime) as counter:
        answers = await asyncio.gather(*(api.get(url, headers=headers) for _ in range(20)))
    assert {answer.status_code for answer in answers} == {200}
    assert all(answer.content == first.content for answer in answers)
    assert all("storage_credentials" not in sql for sql in counter.statements)
    reads = [sql for sql in counter.statements if "credentials_generation" in sql]
    if on_loop:
        assert reads == []
    else:  # one read shared by the GETs waiting at once
        assert 1 <= len(reads) <= 5, f"{len(reads)} generation reads for 20 concurrent GETs"


async def test_changes_by_another_process_and_cascades_are_seen(
    api: httpx.AsyncClient,
    other_process: httpx.AsyncClient,
    account: NewAccount,
    connection_id: str,
    runtime: Runtime,
    gcs_service_account: ServiceAccount,
) -> None:
    sent = await saved(api, account, connection_id, gcs_service_account)
    url, headers = f"{BASE}/{connection_id}", auth(account)
    assert bucket_of(await api.get(url, headers=headers)) == sent["configuration"]["bucket"]
    assert bucket_of(await api.get(url, headers=headers)) == sent["configuration"]["bucket"]

    replacement = body("s3", gcs_service_account)
    response = await other_process.put(url, json=replacement, headers=headers)
    assert response.status_code == 200, response.text
    assert bucket_of(await api.get(url, headers=headers)) == replacement["configuration"]["bucket"]

    # a deletion this process's code never sees: the application's row, its credentials
    # going with it by ON DELETE CASCADE, from another connection
    async with other_process_engine(runtime) as connection:
        await connection.execute(
            text("DELETE FROM applications WHERE id = :id"), {"id": connection_id}
        )
    gone = await api.get(url, headers=headers)
    assert gone.status_code == 404, gone.text


async def test_a_change_while_rendering_is_not_served_afterwards(
    api: httpx.AsyncClient,
    other_process: httpx.AsyncClient,
    account: NewAccount,
    connection_id: str,
    gcs_service_account: ServiceAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process replaces the credentials right after this GET read the row, before it
    is cached: the answer was rendered from the older row, so it must be labelled with the
    older generation (read before the row) and never served once the change is committed."""
    sent = await saved(api, account, connection_id, gcs_service_account)
    url, headers = f"{BASE}/{connection_id}", auth(account)
    replacement = body("s3", gcs_service_account)
    original = service.retrieve

    async def retrieve_then_replace(*args: Any) -> CredentialsResponse:
        response = await original(*args)
        monkeypatch.setattr(service, "retrieve", original)
        put = await other_process.put(url, json=replacement, headers=headers)
        assert put.status_code == 200, put.text
        return response

    monkeypatch.setattr(service, "retrieve", retrieve_then_replace)
    assert bucket_of(await api.get(url, headers=headers)) == sent["configuration"]["bucket"]
    assert bucket_of(await api.get(url, headers=headers)) == replacement["configuration"]["bucket"]


async def test_the_cache_keeps_its_rules_for_other_requests(
    api: httpx.AsyncClient,
    account: NewAccount,
    other_account: NewAccount,
    connection_id: str,
    gcs_service_account: ServiceAccount,
) -> None:
    await saved(api, account, connection_id, gcs_service_account)
    url = f"{BASE}/{connection_id}"
    assert (await api.get(url, headers=auth(account))).status_code == 200  # cached now

    # another account's key: the same 404 as for a connection that does not exist
    assert (await api.get(url, headers=auth(other_account))).status_code == 404
    # an unknown query parameter: the route's 400, not the cached answer
    refused = await api.get(url, params={"page[size]": "1"}, headers=auth(account))
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["code"] == "190005"
    # a wrong key: 401
    wrong = await api.get(url, headers={"Authorization": "Bearer KEYnot-a-key"})
    assert wrong.status_code == 401
    # no key at all: 401
    assert (await api.get(url)).status_code == 401


def test_the_answer_cache_is_bounded_and_exact() -> None:
    cache = AnswerCache(max_entries=2)
    cache.put("c1", "a1", 5, b"one")
    assert cache.get("c1", "a1", 5) == b"one"
    assert cache.get("c1", "a2", 5) is None  # another account
    assert cache.get("c1", "a1", 6) is None  # the generation moved: dropped
    assert cache.get("c1", "a1", 5) is None
    for number in range(3):
        cache.put(f"c{number}", "a1", 7, b"x")
    assert len(cache) == 2
    assert cache.get("c0", "a1", 7) is None  # the oldest went first
    assert cache.get("c2", "a1", 7) == b"x"
