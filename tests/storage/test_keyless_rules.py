"""Pure rules of keyless access: role ARNs, STS endpoints, session freshness, what an STS
refusal says, SAS tokens' expiry and permissions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from callvault.storage import aws_roles
from callvault.storage.azure import parse_sas, sas_error
from callvault.storage.base import StorageErrorKind
from tests.storage.environment import set_storage_env

TARGET = aws_roles.RoleTarget(
    role_arn="arn:aws:iam::123456789012:role/rec",
    external_id="callvault-abc",
    session_name="callvault-1",
    sts_endpoint="https://sts.us-east-1.amazonaws.com",
    region="us-east-1",
)


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:role/callvault-recordings",
        "arn:aws:iam::123456789012:role/service-role/path/rec_writer+=,.@-",
        "arn:aws-cn:iam::123456789012:role/rec",
        "arn:aws:iam::role/RecWriter",  # SeaweedFS
    ],
)
def test_role_arns_accepted(arn: str) -> None:
    assert aws_roles.ROLE_ARN.match(arn)


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:user/someone",
        "arn:aws:s3:::bucket",
        "arn:aws:iam::12345:role/short-account",
        "arn:aws:iam::123456789012:role/",
        "role/rec",
        "arn:aws:iam::123456789012:role/a b",
    ],
)
def test_other_arns_refused(arn: str) -> None:
    assert not aws_roles.ROLE_ARN.match(arn)


def test_sts_endpoint_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # not STS's
    assert aws_roles.sts_endpoint(generic_endpoint=None, region="eu-west-1") == (
        "https://sts.eu-west-1.amazonaws.com"
    )
    assert aws_roles.sts_endpoint(generic_endpoint=None, region="cn-north-1") == (
        "https://sts.cn-north-1.amazonaws.com.cn"
    )
    # a customer's endpoint is an STS endpoint only when the operator allows it
    set_storage_env(monkeypatch, "CALLVAULT_STS_ENDPOINTS")
    assert aws_roles.sts_endpoint(generic_endpoint="https://minio.example/", region="x") is None
    set_storage_env(
        monkeypatch, "CALLVAULT_STS_ENDPOINTS", "https://a.example, https://minio.example/"
    )
    assert aws_roles.sts_endpoint(generic_endpoint="https://minio.example/", region="x") == (
        "https://minio.example"
    )
    assert aws_roles.sts_endpoint(generic_endpoint="https://minio.example.evil", region="x") is None
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9/")
    assert aws_roles.sts_endpoint(generic_endpoint="https://minio.example", region="x") == (
        "http://127.0.0.1:9"
    )


def test_session_name_names_the_connection() -> None:
    assert aws_roles.session_name_for("1684641123236054244") == "callvault-1684641123236054244"
    assert aws_roles.session_name_for("a b/c" * 30) == ("callvault-" + "a-b-c" * 30)[:64]


def test_sessions_are_renewed_before_they_end() -> None:
    now = datetime.now(UTC)
    session = aws_roles.Session("ASIA", "secret", "token", now + timedelta(minutes=16))
    assert session.fresh(now)
    assert not session.fresh(now + timedelta(minutes=2))  # < 15 min left: renew
    assert session.as_obstore()["expires_at"] == now + timedelta(minutes=16)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "raw text"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "AssumeRole",
    )


def test_an_assume_role_refusal_names_the_role_and_what_to_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_storage_env(monkeypatch, "CALLVAULT_AWS_PRINCIPAL_ARN", "arn:aws:iam::210987654321:role/cv")
    error = aws_roles.role_error(_client_error("AccessDenied", 403), TARGET)
    assert error.kind is StorageErrorKind.PERMANENT_AUTH
    assert error.reason == (
        "AssumeRole of arn:aws:iam::123456789012:role/rec failed: AccessDenied — check that the "
        "role exists, that its trust policy allows arn:aws:iam::210987654321:role/cv to call "
        "sts:AssumeRole and that its sts:ExternalId condition is callvault-abc"
    )
    assert "raw text" not in error.reason


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (_client_error("Throttling", 400), StorageErrorKind.TRANSIENT, "slow down"),
        (_client_error("Weird", 503), StorageErrorKind.TRANSIENT, "HTTP 503"),
        (_client_error("Weird", 400), StorageErrorKind.PERMANENT_AUTH, "Weird — STS refused"),
        (
            _client_error("InvalidClientTokenId", 403),
            StorageErrorKind.PERMANENT_AUTH,
            "callvault's own AWS credentials",
        ),
        (NoCredentialsError(), StorageErrorKind.PERMANENT_AUTH, "no AWS identity of its own"),
        (
            EndpointConnectionError(endpoint_url="https://sts.example"),
            StorageErrorKind.TRANSIENT,
            "unreachable",
        ),
    ],
)
def test_sts_failures_map_to_kinds(exc: Exception, kind: StorageErrorKind, words: str) -> None:
    error = aws_roles.role_error(exc, TARGET)
    assert error.kind is kind
    assert words in error.reason
    assert error.reason.startswith(f"AssumeRole of {TARGET.role_arn} failed: ")


def test_policies() -> None:
    trust = aws_roles.trust_policy("arn:aws:iam::1:role/cv", "callvault-x")
    [statement] = trust["Statement"]
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "callvault-x"}}
    [allowed] = aws_roles.permissions_policy("bars")["Statement"]
    assert allowed["Resource"] == "arn:aws:s3:::bars/*"


def test_sas_expiry_and_permissions_are_read_from_the_token() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    sas = parse_sas("?sv=2020-12-06&se=2027-01-01T00%3A00%3A00Z&sr=c&sp=rcw&sig=abc%3D")
    assert not isinstance(sas, str)
    assert sas.expires_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert sas.permissions == "rcw"
    assert ("sig", "abc=") in sas.pairs
    date_only = parse_sas("se=2027-01-01&sp=rw&sig=x")
    assert not isinstance(date_only, str) and date_only.expires_at.tzinfo is UTC
    assert sas_error("se=2027-01-01&sp=rw&sig=x", now) is None
    assert sas_error("se=2026-11-30T23:59:59Z&sp=rw&sig=x", now) == (
        "sas_token expired at 2026-11-30T23:59:59Z"
    )
    assert "lacks create/write" in str(sas_error("se=2027-01-01&sp=rl&sig=x", now))
    assert "lacks read" in str(sas_error("se=2027-01-01&sp=cw&sig=x", now))
    assert "not an ISO 8601" in str(sas_error("se=tomorrow&sp=rw&sig=x", now))
