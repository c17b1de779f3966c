"""An S3 connection that stalls mid-transfer fails within the stall bound
(CALLVAULT_STORAGE_STALL_SECS), not after obstore's 300 s request timeout (issue 21): a GET
whose body stops coming, a PUT that is never answered. A real TCP server that stalls
(tests/servers.py StallingServer); the bound is set to 1 s here, the default is 50 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from callvault.storage.base import ObjectStore, StorageError, StorageErrorKind
from callvault.storage.factory import open_custom_store
from tests.servers import StallingServer
from tests.storage.environment import set_storage_env

STALL_SECS = 1.0
# every attempt (the client retries a timeout a few times) gives up after STALL_SECS; before
# the bound the first attempt alone took 300 s
WITHIN_SECS = 20.0


@pytest.fixture
def stalling(monkeypatch: pytest.MonkeyPatch) -> Iterator[StallingServer]:
    set_storage_env(monkeypatch, "CALLVAULT_STORAGE_STALL_SECS", str(STALL_SECS))
    with StallingServer() as server:
        yield server


def store_at(server: StallingServer) -> ObjectStore:
    configuration = {
        "bucket": "recordings",
        "region": "us-east-1",
        "endpoint": server.endpoint,
        "aws_access_key_id": "AKIASTALLEDSTALLED00",
        "aws_secret_access_key": "s" * 40,
    }
    return open_custom_store("s3-generic", configuration, allow_private_networks=True)


async def fails_in_time(what: str, operation: object) -> StorageError:
    started = time.monotonic()
    try:
        async with asyncio.timeout(WITHIN_SECS):
            await operation  # type: ignore[misc]
    except StorageError as exc:
        elapsed = time.monotonic() - started
        assert exc.kind is StorageErrorKind.TRANSIENT, exc  # the worker retries it later
        assert elapsed >= STALL_SECS
        return exc
    except TimeoutError:
        pytest.fail(f"{what}: still waiting after {WITHIN_SECS} s")
    pytest.fail(f"{what}: a stalled transfer succeeded")


async def test_a_get_whose_body_stops_coming_fails_within_the_bound(
    stalling: StallingServer,
) -> None:
    store = store_at(stalling)

    async def read_all() -> None:
        async for _ in store.get_stream("a/recording"):
            pass

    await fails_in_time("GET", read_all())
    assert stalling.requests >= 1


async def test_a_put_that_is_never_answered_fails_within_the_bound(
    stalling: StallingServer,
) -> None:
    store = store_at(stalling)
    put = store.put_file(
        "a/recording", b"x" * 100_000, content_type="audio/wav", metadata={"sha256": "0" * 64}
    )
    await fails_in_time("PUT", put)
    assert stalling.requests >= 1
