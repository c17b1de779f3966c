"""/v2/recording_encryption_keys and the application's recording_encryption_key_id, through the
ASGI app on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from callvault.accounts.service import NewAccount
from callvault.encryption_keys.models import RecordingEncryptionKey
from callvault.runtime import Runtime
from tests.applications.helpers import create_application
from tests.conftest import auth
from tests.encryption.keys import BASE, private_pem, public_pem, register_key, rsa_private, use_key


def only_error(response: httpx.Response) -> dict[str, Any]:
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


async def stored_texts(runtime: Runtime) -> str:
    async with runtime.sessions() as session:
        rows = (await session.scalars(select(RecordingEncryptionKey))).all()
    return "\n".join(row.public_key_pem + row.name for row in rows)


async def test_create_answers_id_fingerprint_and_size(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    key = rsa_private(2048)
    response = await api.post(
        BASE, json={"public_key": public_pem(key), "name": "ops key"}, headers=auth(account)
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert data == {
        **data,
        "record_type": "recording_encryption_key",
        "name": "ops key",
        "fingerprint": hashlib.sha256(der).hexdigest(),
        "key_size": 2048,
    }
    assert set(data) == {"id", "record_type", "name", "fingerprint", "key_size", "created_at"}
    assert data["created_at"].endswith("Z")
    again = await api.get(f"{BASE}/{data['id']}", headers=auth(account))
    assert again.status_code == 200 and again.json()["data"] == data


async def test_pkcs1_rsa_public_key_and_4096_bits_accepted(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    key = rsa_private(4096)
    pkcs1 = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .decode()
    )
    assert "BEGIN RSA PUBLIC KEY" in pkcs1
    response = await api.post(BASE, json={"public_key": pkcs1, "name": "k"}, headers=auth(account))
    assert response.status_code == 201, response.text
    assert response.json()["data"]["key_size"] == 4096


def self_signed_certificate() -> str:
    key = rsa_private(2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callvault test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def refused_inputs() -> list[tuple[str, str, str]]:
    rsa2048 = rsa_private(2048)
    return [
        ("private-pkcs8", private_pem(rsa2048), "private key"),
        (
            "private-pkcs1",
            private_pem(rsa2048, serialization.PrivateFormat.TraditionalOpenSSL),
            "private key",
        ),
        # a public key with the private key pasted after it: still refused, nothing stored
        ("public+private", public_pem(rsa2048) + private_pem(rsa2048), "private key"),
        ("ec", public_pem(ec.generate_private_key(ec.SECP256R1())), "only RSA"),
        ("certificate", self_signed_certificate(), "certificate"),
        ("garbage", "hello, this is not a key", "not a PEM"),
        (
            "broken-pem",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "not a valid",
        ),
        ("rsa-1024", public_pem(rsa_private(1024)), "1024 bits"),
        ("too-long", "-----BEGIN PUBLIC KEY-----\n" + "A" * 20000, "longer than"),
    ]


@pytest.mark.parametrize("case", range(9))
async def test_anything_but_an_rsa_public_key_of_allowed_size_is_422_with_the_reason(
    case: int,
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    label, text, reason = refused_inputs()[case]
    response = await api.post(
        BASE, json={"public_key": text, "name": f"refused-{label}"}, headers=auth(account)
    )
    assert response.status_code == 422, (label, response.text)
    error = only_error(response)
    assert error["code"] == "10015"
    assert error["source"] == {"pointer": "/public_key"}
    assert reason in error["detail"], (label, error["detail"])
    # never echoed, stored or logged: not even one line of the key's base64 body
    # (the public half of "public+private" is a registered key's: only the private half counts)
    secret = text[text.index("-----BEGIN PRIVATE") :] if label == "public+private" else text
    body_lines = [line for line in secret.splitlines() if line and "-----" not in line]
    captured = capsys.readouterr()
    seen = response.text + await stored_texts(runtime) + caplog.text + captured.out + captured.err
    assert f"refused-{label}" not in await stored_texts(runtime)
    for line in body_lines[:40]:
        assert line not in seen, label


async def test_name_required(api: httpx.AsyncClient, account: NewAccount) -> None:
    response = await api.post(
        BASE, json={"public_key": public_pem(rsa_private())}, headers=auth(account)
    )
    assert response.status_code == 422
    assert only_error(response)["source"] == {"pointer": "/name"}


async def test_list_is_paged_newest_first_with_telnyx_meta(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    ids = [
        (await register_key(api, account.api_key, rsa_private(), f"k{i}"))["id"] for i in range(3)
    ]
    first = await api.get(BASE, params={"page[size]": 2}, headers=auth(account))
    second = await api.get(BASE, params={"page[size]": 2, "page[number]": 2}, headers=auth(account))
    assert first.status_code == second.status_code == 200
    assert first.json()["meta"] == {
        "page_number": 1,
        "page_size": 2,
        "total_pages": 2,
        "total_results": 3,
    }
    listed = [item["id"] for item in first.json()["data"] + second.json()["data"]]
    assert listed == list(reversed(ids))
    bad = await api.get(BASE, params={"page[size]": 0}, headers=auth(account))
    assert bad.status_code == 422


async def test_another_accounts_key_is_404_and_cannot_be_used(
    api: httpx.AsyncClient, account: NewAccount, other_account: NewAccount
) -> None:
    key = await register_key(api, account.api_key, rsa_private())
    for method in ("GET", "DELETE"):
        response = await api.request(method, f"{BASE}/{key['id']}", headers=auth(other_account))
        assert response.status_code == 404, (method, response.text)
        assert only_error(response)["code"] == "10005"
    listed = await api.get(BASE, headers=auth(other_account))
    assert key["id"] not in {item["id"] for item in listed.json()["data"]}
    # B cannot point its application at A's key, at creation or later
    response = await api.post(
        "/v2/call_control_applications",
        json={
            "application_name": "b",
            "webhook_event_url": "https://example.com/hook",
            "recording_encryption_key_id": key["id"],
        },
        headers=auth(other_account),
    )
    assert response.status_code == 422, response.text
    assert only_error(response)["source"] == {"pointer": "/recording_encryption_key_id"}
    b_app = (await create_application(api, other_account))["id"]
    response = await api.patch(
        f"/v2/call_control_applications/{b_app}",
        json={"recording_encryption_key_id": key["id"]},
        headers=auth(other_account),
    )
    assert response.status_code == 422, response.text
    assert (await api.get(f"{BASE}/{key['id']}", headers=auth(account))).status_code == 200


async def test_application_field_set_cleared_and_delete_409_while_used(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    key = await register_key(api, account.api_key, rsa_private())
    created = await api.post(
        "/v2/call_control_applications",
        json={
            "application_name": "enc",
            "webhook_event_url": "https://example.com/hook",
            "recording_encryption_key_id": key["id"],
        },
        headers=auth(account),
    )
    assert created.status_code == 201, created.text
    app_id = created.json()["data"]["id"]
    assert created.json()["data"]["recording_encryption_key_id"] == key["id"]
    plain_app = (await create_application(api, account))["id"]
    shown = await api.get(f"/v2/call_control_applications/{plain_app}", headers=auth(account))
    assert shown.json()["data"]["recording_encryption_key_id"] is None

    busy = await api.delete(f"{BASE}/{key['id']}", headers=auth(account))
    assert busy.status_code == 409, busy.text
    assert app_id in only_error(busy)["detail"]
    # an unrelated change keeps the key
    renamed = await api.patch(
        f"/v2/call_control_applications/{app_id}",
        json={"application_name": "renamed"},
        headers=auth(account),
    )
    assert renamed.json()["data"]["recording_encryption_key_id"] == key["id"]
    await use_key(api, account.api_key, app_id, None)
    deleted = await api.delete(f"{BASE}/{key['id']}", headers=auth(account))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["data"]["id"] == key["id"]
    assert (await api.get(f"{BASE}/{key['id']}", headers=auth(account))).status_code == 404
    gone = await api.patch(
        f"/v2/call_control_applications/{app_id}",
        json={"recording_encryption_key_id": key["id"]},
        headers=auth(account),
    )
    assert gone.status_code == 422


async def test_openapi_documents_the_keys_and_the_application_field(
    api: httpx.AsyncClient,
) -> None:
    spec = (await api.get("/v2/openapi.json")).json()
    assert {"post", "get"} <= set(spec["paths"][BASE])
    assert {"get", "delete"} <= set(spec["paths"][BASE + "/{id}"])
    schemas = spec["components"]["schemas"]
    for name in (
        "CreateCallControlApplicationRequest",
        "UpdateCallControlApplicationRequest",
        "CallControlApplication",
    ):
        assert "recording_encryption_key_id" in schemas[name]["properties"], name
    assert "encryption_details" in schemas["RecordingData"]["properties"]
