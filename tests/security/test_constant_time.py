"""Tokens, API keys and link signatures: every near miss is refused, and the comparison that
decides is `hmac.compare_digest` (a plain `==` leaks how many leading characters matched)."""

from __future__ import annotations

import hmac

import pytest

from callvault.storage.signed_links import sign_link, verify_link
from tests.conftest import auth

INGEST = "/internal/v1/recordings"


def near_misses(secret: str) -> list[str]:
    flipped_last = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    flipped_first = ("A" if secret[0] != "A" else "B") + secret[1:]
    return [flipped_last, flipped_first, secret[:-1], secret + "x", "", "é" * 8]


def bearer(token: str) -> dict[str, bytes]:
    # bytes: a non-ASCII token must reach the server, not fail in the client
    return {"Authorization": f"Bearer {token}".encode()}


class ComparisonSpy:
    def __init__(self) -> None:
        self.calls: list[tuple[object, object]] = []
        self._real = hmac.compare_digest

    def __call__(self, a: object, b: object) -> bool:
        self.calls.append((a, b))
        return self._real(a, b)  # type: ignore[arg-type]

    def compared(self, secret: str) -> bool:
        wanted = {secret, secret.encode()}
        return any(a in wanted or b in wanted for a, b in self.calls)


@pytest.fixture
def spy(monkeypatch) -> ComparisonSpy:
    spy = ComparisonSpy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    return spy


async def test_the_ingest_token_refuses_every_near_miss(api, runtime, spy):
    token = runtime.settings.ingest_token
    for wrong in near_misses(token):
        response = await api.post(INGEST, headers=bearer(wrong))
        assert response.status_code == 401, wrong
        assert response.json()["errors"][0]["code"] == "10009"
    assert spy.compared(token)


async def test_an_api_key_refuses_every_near_miss(api, account, spy):
    from callvault.accounts.keys import hash_api_key

    assert (
        await api.get("/v2/call_control_applications", headers=auth(account))
    ).status_code == 200
    assert spy.compared(hash_api_key(account.api_key))
    for wrong in near_misses(account.api_key):
        response = await api.get("/v2/call_control_applications", headers=bearer(wrong))
        assert response.status_code == 401, wrong


def test_a_link_signature_refuses_every_near_miss(spy):
    secret = b"s" * 32
    signature = sign_link(secret, "acct/2026-01-01/leg-1.wav", 2_000_000_000)
    assert verify_link(secret, "acct/2026-01-01/leg-1.wav", 2_000_000_000, signature, now=0)
    assert spy.compared(signature)
    for wrong in near_misses(signature):
        assert not verify_link(secret, "acct/2026-01-01/leg-1.wav", 2_000_000_000, wrong, now=0)
    # the signature covers key and expiry: neither can be changed under a valid signature
    assert not verify_link(secret, "acct/2026-01-01/leg-2.wav", 2_000_000_000, signature, now=0)
    assert not verify_link(secret, "acct/2026-01-01/leg-1.wav", 2_000_000_001, signature, now=0)
    assert not verify_link(secret, "acct/2026-01-01/leg-1.wav", 2_000_000_000, signature, 3e9)
