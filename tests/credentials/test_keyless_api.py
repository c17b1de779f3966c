"""The keyless forms over the API: `role_arn` (s3, s3-generic) and `sas_token` (azure) — exactly
one form, precise 422s, the ExternalId callvault makes per connection, aws_role_setup, masking
and sas_expires_at, and no SAS token in clear in the database or a response."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.credentials.service import load_configuration
from callvault.runtime import Runtime
from callvault.storage.configuration import EXTERNAL_ID_KEY
from tests.applications.helpers import create_application
from tests.conftest import auth
from tests.credentials.test_at_rest import database_text
from tests.servers import Azurite
from tests.storage.environment import set_storage_env

BASE = "/v2/custom_storage_credentials"
AWS_ROLE = "arn:aws:iam::123456789012:role/callvault-recordings"
SEAWEED_ROLE = "arn:aws:iam::role/RecWriter"
PRINCIPAL = "arn:aws:iam::210987654321:role/callvault-operator"


def role_configuration(backend: str, **overrides: Any) -> dict[str, Any]:
    configuration: dict[str, Any] = {
        "bucket": "recordings-keyless",
        "region": "us-east-1",
        "role_arn": AWS_ROLE,
    }
    if backend == "s3-generic":
        configuration["endpoint"] = "https://s3.example.com"
    return {**configuration, **overrides}


def sas(permission: str = "rcwd", expires_in: timedelta = timedelta(days=30)) -> str:
    # signed with Azurite's well-known key: a real SAS (tests/servers.py), no server needed here
    signer = Azurite(Path("/nonexistent"))
    return signer.container_sas("recordings", permission, datetime.now(UTC) + expires_in)


def only_error(response: httpx.Response) -> dict[str, Any]:
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


@pytest.fixture(autouse=True)
def principal(monkeypatch: pytest.MonkeyPatch) -> None:
    set_storage_env(monkeypatch, "CALLVAULT_AWS_PRINCIPAL_ARN", PRINCIPAL)
    # the s3-generic endpoint's STS may be called with this server's identity
    set_storage_env(
        monkeypatch, "CALLVAULT_STS_ENDPOINTS", "https://other.example.com,https://s3.example.com"
    )
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS", raising=False)


async def test_an_s3_generic_role_needs_an_sts_endpoint_the_operator_allows(
    api: httpx.AsyncClient, account: NewAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AssumeRole is signed with callvault's own AWS identity: a customer's endpoint must never
    see it, so s3-generic + role_arn is refused unless the operator allows that STS."""
    set_storage_env(monkeypatch, "CALLVAULT_STS_ENDPOINTS", "https://other.example.com")
    connection_id = (await create_application(api, account))["id"]
    response = await api.post(
        f"{BASE}/{connection_id}",
        json={"backend": "s3-generic", "configuration": role_configuration("s3-generic")},
        headers=auth(account),
    )
    assert response.status_code == 422, response.text
    error = only_error(response)
    assert error["source"] == {"pointer": "/configuration/role_arn"}
    assert "CALLVAULT_STS_ENDPOINTS" in error["detail"]
    assert "https://s3.example.com" in error["detail"]


@pytest.mark.parametrize("backend", ["s3", "s3-generic"])
@pytest.mark.parametrize("role", [AWS_ROLE, SEAWEED_ROLE])
async def test_a_role_instead_of_keys(
    api: httpx.AsyncClient, account: NewAccount, runtime: Runtime, backend: str, role: str
) -> None:
    connection_id = (await create_application(api, account))["id"]
    configuration = role_configuration(backend, role_arn=role)
    response = await api.post(
        f"{BASE}/{connection_id}",
        json={"backend": backend, "configuration": configuration},
        headers=auth(account),
    )
    assert response.status_code == 200, response.text
    answered = response.json()["data"]["configuration"]
    # the other form's fields are left out, not null
    assert answered == {**configuration, "backend": backend}
    got = await api.get(f"{BASE}/{connection_id}", headers=auth(account))
    assert got.json()["data"]["configuration"] == answered

    # the ExternalId exists as soon as the credentials do, and it is the one the setup shows
    async with runtime.sessions() as session:
        stored = await load_configuration(session, runtime.settings.keyring, connection_id)
    assert stored is not None
    setup = await api.get(f"{BASE}/{connection_id}/aws_role_setup", headers=auth(account))
    assert setup.status_code == 200, setup.text
    assert stored.configuration[EXTERNAL_ID_KEY] == setup.json()["data"]["external_id"]


async def test_keys_answers_keep_their_shape(api: httpx.AsyncClient, account: NewAccount) -> None:
    connection_id = (await create_application(api, account))["id"]
    configuration = {
        "bucket": "recordings-keys",
        "region": "us-east-1",
        "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    }
    response = await api.post(
        f"{BASE}/{connection_id}",
        json={"backend": "s3", "configuration": configuration},
        headers=auth(account),
    )
    assert response.status_code == 200, response.text
    assert set(response.json()["data"]["configuration"]) == {"backend", *configuration}


@pytest.mark.parametrize(
    ("backend", "configuration", "pointer", "words"),
    [
        (
            "s3",
            role_configuration("s3", aws_access_key_id="AKIA", aws_secret_access_key="x" * 20),
            "/configuration/role_arn",
            "not both",
        ),
        (
            "s3-generic",
            role_configuration("s3-generic", aws_access_key_id="AKIA"),
            "/configuration/role_arn",
            "not both",
        ),
        (
            "s3",
            {"bucket": "recordings-x", "region": "us-east-1", "aws_access_key_id": "AKIA"},
            "/configuration/aws_secret_access_key",
            "required",
        ),
        (
            "s3",
            role_configuration("s3", role_arn="arn:aws:s3:::bucket"),
            "/configuration/role_arn",
            "role ARN",
        ),
        ("s3", role_configuration("s3", role_arn="role/x"), "/configuration/role_arn", "role ARN"),
        (
            "s3",
            role_configuration("s3", external_id="chosen-by-the-customer"),
            "/configuration/external_id",
            "",
        ),
    ],
)
async def test_exactly_one_form_and_a_valid_role(
    api: httpx.AsyncClient,
    account: NewAccount,
    backend: str,
    configuration: dict[str, Any],
    pointer: str,
    words: str,
) -> None:
    connection_id = (await create_application(api, account))["id"]
    response = await api.post(
        f"{BASE}/{connection_id}",
        json={"backend": backend, "configuration": configuration},
        headers=auth(account),
    )
    assert response.status_code == 422, response.text
    error = only_error(response)
    assert error["source"]["pointer"] == pointer
    assert words in error["detail"]
    assert (await api.get(f"{BASE}/{connection_id}", headers=auth(account))).status_code == 404


async def test_aws_role_setup_before_any_credentials(
    api: httpx.AsyncClient, account: NewAccount, other_account: NewAccount
) -> None:
    connection_id = (await create_application(api, account))["id"]
    url = f"{BASE}/{connection_id}/aws_role_setup"
    first = await api.get(url, params={"bucket": "my-recordings"}, headers=auth(account))
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    external_id = data["external_id"]
    assert external_id.startswith("callvault-") and len(external_id) >= 32
    assert data["principal_arn"] == PRINCIPAL
    assert data["trust_policy"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"AWS": PRINCIPAL},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
        }
    ]
    [statement] = data["permissions_policy"]["Statement"]
    assert statement["Action"] == ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
    assert statement["Resource"] == "arn:aws:s3:::my-recordings/*"

    # one ExternalId per connection, stable; another connection has its own
    again = await api.get(url, headers=auth(account))
    assert again.json()["data"]["external_id"] == external_id
    assert "BUCKET" in again.json()["data"]["permissions_policy"]["Statement"][0]["Resource"]
    other_connection = (await create_application(api, account))["id"]
    other = await api.get(f"{BASE}/{other_connection}/aws_role_setup", headers=auth(account))
    assert other.json()["data"]["external_id"] != external_id

    # tenancy and input
    assert (await api.get(url, headers=auth(other_account))).status_code == 404
    bad = await api.get(url, params={"bucket": "Not_A_Bucket"}, headers=auth(account))
    assert bad.status_code == 422
    assert only_error(bad)["source"]["parameter"] == "bucket"


async def test_aws_role_setup_without_a_principal_is_a_clear_503(
    api: httpx.AsyncClient, account: NewAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.servers import closed_port

    set_storage_env(monkeypatch, "CALLVAULT_AWS_PRINCIPAL_ARN")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret-0123456789")
    connection_id = (await create_application(api, account))["id"]
    response = await api.get(f"{BASE}/{connection_id}/aws_role_setup", headers=auth(account))
    assert response.status_code == 503, response.text
    assert "CALLVAULT_AWS_PRINCIPAL_ARN" in only_error(response)["detail"]


async def test_a_container_sas_instead_of_the_account_key(
    api: httpx.AsyncClient, account: NewAccount, runtime: Runtime
) -> None:
    connection_id = (await create_application(api, account))["id"]
    token = sas(expires_in=timedelta(days=10))
    configuration = {
        "bucket": "recordings",
        "account_name": "callvaulttest",
        "sas_token": "?" + token,
    }
    response = await api.post(
        f"{BASE}/{connection_id}",
        json={"backend": "azure", "configuration": configuration},
        headers=auth(account),
    )
    assert response.status_code == 200, response.text
    answered = response.json()["data"]["configuration"]
    signature = dict(pair.split("=", 1) for pair in token.split("&"))["sig"]
    assert answered["sas_token"] == "*" * (len(token) - 4) + token[-4:]  # stored without '?'
    assert "account_key" not in answered
    expires = datetime.fromisoformat(answered["sas_expires_at"])
    assert timedelta(days=9) < expires - datetime.now(UTC) <= timedelta(days=10)

    # a PUT that sends the mask back keeps the token
    put = await api.put(
        f"{BASE}/{connection_id}",
        json={
            "backend": "azure",
            "configuration": {**configuration, "sas_token": answered["sas_token"]},
        },
        headers=auth(account),
    )
    assert put.status_code == 200, put.text
    got = await api.get(f"{BASE}/{connection_id}", headers=auth(account))
    assert got.json()["data"]["configuration"] == answered
    for text in (response.text, put.text, got.text):
        assert signature not in text and token not in text

    stored = await database_text(runtime)
    assert token.encode() not in stored and signature.encode() not in stored


@pytest.mark.parametrize(
    ("token", "words"),
    [
        (sas(expires_in=timedelta(minutes=-5)), "sas_token expired at "),
        (sas(permission="r"), "sas_token lacks create/write permission (sp=r)"),
        (sas(permission="cw"), "sas_token lacks read permission (sp=cw)"),
        ("sv=2020-12-06&sp=rcw&sr=c", "sas_token must be a SAS token"),
        ("sv=2020-12-06&sp=rcw&sr=b&se=2099-01-01&sig=abc", "container SAS (sr=c)"),
        ("sv=2020-12-06&sp=rcw&sr=c&sig=abc", "no expiry"),
        # an account SAS: every container of the account (issue 21)
        ("sv=2020-12-06&ss=b&srt=sco&sp=rwdlac&se=2099-01-01&sig=abc", "an account SAS (ss/srt)"),
    ],
)
async def test_an_unusable_sas_is_refused_with_the_problem(
    api: httpx.AsyncClient, account: NewAccount, token: str, words: str
) -> None:
    connection_id = (await create_application(api, account))["id"]
    configuration = {"bucket": "recordings", "account_name": "callvaulttest", "sas_token": token}
    response = await api.post(
        f"{BASE}/{connection_id}",
        json={"backend": "azure", "configuration": configuration},
        headers=auth(account),
    )
    assert response.status_code == 422, response.text
    error = only_error(response)
    assert error["source"]["pointer"] == "/configuration/sas_token"
    assert words in error["detail"]
    signature = dict(pair.split("=", 1) for pair in token.split("&")).get("sig")
    assert signature is None or signature not in response.text


async def test_azure_needs_exactly_one_form(api: httpx.AsyncClient, account: NewAccount) -> None:
    connection_id = (await create_application(api, account))["id"]
    both = {
        "bucket": "recordings",
        "account_name": "callvaulttest",
        "account_key": "Zm9vYmFy",
        "sas_token": sas(),
    }
    response = await api.post(
        f"{BASE}/{connection_id}",
        json={"backend": "azure", "configuration": both},
        headers=auth(account),
    )
    assert response.status_code == 422
    assert only_error(response)["source"]["pointer"] == "/configuration/sas_token"
    neither = {"bucket": "recordings", "account_name": "callvaulttest"}
    response = await api.post(
        f"{BASE}/{connection_id}",
        json={"backend": "azure", "configuration": neither},
        headers=auth(account),
    )
    assert response.status_code == 422
    assert only_error(response)["source"]["pointer"] == "/configuration/account_key"
