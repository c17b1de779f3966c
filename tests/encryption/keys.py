"""Key material for encryption tests, generated once per process (RSA generation is slow)."""

from __future__ import annotations

from functools import cache
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

BASE = "/v2/recording_encryption_keys"


def rsa_private(bits: int = 2048, which: int = 0) -> rsa.RSAPrivateKey:
    """The same key for the same (bits, which), however the arguments are spelled."""
    return _generated(bits, which)


@cache
def _generated(bits: int, which: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(
    key: Any, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8
) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


async def register_key(
    client: httpx.AsyncClient, api_key: str, key: rsa.RSAPrivateKey, name: str = "ops key"
) -> dict[str, Any]:
    response = await client.post(
        BASE,
        json={"public_key": public_pem(key), "name": name},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def use_key(
    client: httpx.AsyncClient, api_key: str, connection_id: str, key_id: str | None
) -> None:
    response = await client.patch(
        f"/v2/call_control_applications/{connection_id}",
        json={"recording_encryption_key_id": key_id},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["recording_encryption_key_id"] == key_id
