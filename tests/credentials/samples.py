"""Valid configurations for each backend, with fresh random secrets per call (so a test that
searches the database for a secret finds only its own)."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from tests.servers import ServiceAccount

BACKENDS = ("s3", "s3-generic", "gcs", "azure")
SECRET_FIELD = {
    "s3": "aws_secret_access_key",
    "s3-generic": "aws_secret_access_key",
    "gcs": "credentials",
    "azure": "account_key",
}


def configuration(
    backend: str, service_account: ServiceAccount, **overrides: Any
) -> dict[str, Any]:
    token = secrets.token_hex(8)
    if backend in ("s3", "s3-generic"):
        config: dict[str, Any] = {
            "bucket": f"recordings-{token}",
            "region": "us-east-1",
            "aws_access_key_id": "AKIA" + token.upper(),
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/" + secrets.token_urlsafe(24),
        }
        if backend == "s3-generic":
            config["endpoint"] = "https://s3.example.com"
    elif backend == "gcs":
        info = {**service_account.info, "private_key_id": secrets.token_hex(20)}
        config = {"bucket": f"recordings-{token}", "credentials": ServiceAccount(info).json}
    else:
        config = {
            "bucket": f"recordings-{token}",
            "account_name": "callvaulttest",
            "account_key": base64.b64encode(secrets.token_bytes(64)).decode(),
        }
    return {**config, **overrides}


def body(backend: str, service_account: ServiceAccount, **overrides: Any) -> dict[str, Any]:
    return {
        "backend": backend,
        "configuration": configuration(backend, service_account, **overrides),
    }


def mask(value: str) -> str:
    return "*" * (len(value) - 4) + value[-4:]
