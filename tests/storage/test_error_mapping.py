"""Provider failures -> (kind, reason), and no credential ever inside a reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from google.api_core import exceptions as api_exceptions

from callvault.storage import StorageError, StorageErrorKind, open_custom_store
from callvault.storage.azure import AzureObjectStore, sdk_cause
from callvault.storage.base import redact
from callvault.storage.error_mapping import cause_from_text
from callvault.storage.gcs import gcs_cause
from callvault.storage.obstore_store import ObstoreObjectStore
from callvault.storage.s3 import S3ObjectStore
from tests.servers import make_service_account

AUTH = StorageErrorKind.PERMANENT_AUTH
NOT_FOUND = StorageErrorKind.PERMANENT_NOT_FOUND
TRANSIENT = StorageErrorKind.TRANSIENT

# shapes of real obstore error texts (trimmed), as SeaweedFS and Azurite produced them
S3_WRONG_SECRET = (
    "The operation lacked the necessary privileges to complete for path k: Error performing PUT "
    "http://127.0.0.1:1/bars/k in 586µs - Server returned non-2xx status code: 403 Forbidden: "
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>'
    "<Message>The request signature we calculated does not match</Message></Error>"
)
S3_NO_BUCKET = (
    "Object at location k not found: Error performing PUT http://127.0.0.1:1/nobucket/k - Server "
    "returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>"
)
HEAD_403 = (
    "The operation lacked the necessary privileges to complete for path a/b: Error performing "
    "HEAD http://127.0.0.1:1/bars/a/b - Server returned non-2xx status code: 403 Forbidden: "
)
AZURE_NO_CONTAINER_DELETE = (
    "Object at location k not found: Bulk delete request failed for key k: The specified "
    "container does not exist. (code: 404)"
)
REFUSED = (
    "Generic S3 error: Error performing PUT http://127.0.0.1:2/bars/k - HTTP error: error sending "
    'request\n HttpError { kind: Connect, ConnectError("tcp connect error", Os { code: 111, '
    'kind: ConnectionRefused, message: "Connection refused" }'
)
TIMEOUT = (
    "Generic S3 error: Error performing PUT http://127.0.0.1:2/b/k in 4.1s, after 1 retries - "
    "HTTP error: error sending request\n HttpError { kind: Timeout, source: TimedOut }"
)
DNS = (
    "Generic S3 error: Error performing HEAD http://no-such-host.invalid:9/b/k - HTTP error: "
    'error sending request kind: Connect ConnectError("dns error", failed to lookup address'
)


@pytest.mark.parametrize(
    ("text", "backend", "kind", "cause"),
    [
        (S3_WRONG_SECRET, "s3", AUTH, "SignatureDoesNotMatch — the secret key is wrong"),
        (S3_NO_BUCKET, "s3-generic", NOT_FOUND, "NoSuchBucket — no such bucket"),
        (HEAD_403, "s3", AUTH, "HTTP 403 — access denied"),
        (AZURE_NO_CONTAINER_DELETE, "azure", NOT_FOUND, "ContainerNotFound — no such container"),
        (REFUSED, "s3", TRANSIENT, "connection refused — the storage endpoint is unreachable"),
        (TIMEOUT, "s3", TRANSIENT, "timed out — the storage endpoint did not answer in time"),
        (DNS, "s3", TRANSIENT, "dns error — the endpoint's host name does not resolve"),
        ("status code: 503 Service Unavailable", "s3", TRANSIENT, "HTTP 503"),
        ("status code: 429 Too Many Requests", "azure", TRANSIENT, "HTTP 429"),
        ("status code: 400 Bad Request: <Code>Weird</Code>", "s3", AUTH, "Weird — the storage"),
        ("<Code>AuthenticationFailed</Code>", "azure", AUTH, "AuthenticationFailed — the account"),
        ("<Code>SlowDown</Code> status code: 503", "s3", TRANSIENT, "SlowDown"),
    ],
)
def test_obstore_texts(text: str, backend: str, kind: StorageErrorKind, cause: str) -> None:
    store_class = AzureObjectStore if backend == "azure" else S3ObjectStore
    found = cause_from_text(text, codes=store_class.codes, phrases=store_class.phrases)
    assert found is not None
    assert found.kind is kind
    assert found.text.startswith(cause)


def test_unknown_text_is_not_guessed() -> None:
    assert cause_from_text("something else entirely", codes=S3ObjectStore.codes) is None


def test_reason_names_backend_and_bucket() -> None:
    store = S3ObjectStore(object(), backend="s3-generic", bucket="bars", endpoint=None)  # type: ignore[arg-type]
    error = store.error(Exception(S3_WRONG_SECRET))
    assert error.kind is AUTH
    assert str(error) == "s3-generic bucket bars: SignatureDoesNotMatch — the secret key is wrong"
    assert (error.backend, error.bucket, error.reason) == ("s3-generic", "bars", str(error))
    azure = AzureObjectStore(
        object(),  # type: ignore[arg-type]
        container="recs",
        account_name="acct",
        endpoint="http://127.0.0.1:1/acct",
        account_key="",
        uploader=object(),  # type: ignore[arg-type]
    )
    assert str(azure.error(Exception(AZURE_NO_CONTAINER_DELETE))).startswith(
        "azure container recs: ContainerNotFound"
    )


def test_unknown_exception_is_transient_and_does_not_echo_its_text() -> None:
    store = ObstoreObjectStore(object(), backend="s3", bucket="x", secrets=["s3cr3t-value-123"])
    error = store.error(RuntimeError("boom s3cr3t-value-123"))
    assert error.kind is TRANSIENT
    assert "s3cr3t" not in str(error)
    assert "RuntimeError" in str(error)


class _Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self._body = body


@pytest.mark.parametrize(
    ("exc", "operation", "kind", "cause"),
    [
        (api_exceptions.Unauthorized("Invalid Credentials"), "put", AUTH, "HTTP 401"),
        (api_exceptions.Forbidden("denied"), "head", AUTH, "HTTP 403"),
        (api_exceptions.NotFound("Not Found"), "put", NOT_FOUND, "HTTP 404 — no such bucket"),
        (api_exceptions.NotFound("Not Found"), "get", NOT_FOUND, "HTTP 404 — no such object"),
        (
            api_exceptions.NotFound("The specified bucket does not exist."),
            "delete",
            NOT_FOUND,
            "HTTP 404 — no such bucket",
        ),
        (api_exceptions.ServiceUnavailable("later"), "put", TRANSIENT, "HTTP 503"),
        (api_exceptions.TooManyRequests("slow"), "put", TRANSIENT, "HTTP 429"),
        (
            api_exceptions.RetryError(
                "Timeout of 3.0s exceeded",
                requests.exceptions.ConnectionError("[Errno 111] Connection refused"),
            ),
            "put",
            TRANSIENT,
            "connection refused",
        ),
        (requests.exceptions.ReadTimeout("read timed out"), "head", TRANSIENT, "timed out"),
        (KeyError("x"), "head", TRANSIENT, "unexpected KeyError"),
        # GCS's refusal of a body that does not match the CRC32C sent with it
        (
            api_exceptions.BadRequest(
                'Provided CRC32C "n03x6A==" doesn\'t match calculated CRC32C "K5mw4Q==".'
            ),
            "put",
            TRANSIENT,
            "CRC32C mismatch — the upload arrived corrupted",
        ),
        (api_exceptions.BadRequest("Invalid argument."), "put", AUTH, "HTTP 400"),
    ],
)
def test_gcs_exceptions(
    exc: BaseException, operation: str, kind: StorageErrorKind, cause: str
) -> None:
    found = gcs_cause(exc, operation=operation)
    assert found.kind is kind
    assert found.text.startswith(cause)


def _http_error(status: int, code: str | None, message: str) -> HttpResponseError:
    error = HttpResponseError(message=message)
    error.status_code = status
    error.error_code = code  # type: ignore[attr-defined]  # the storage SDK sets it
    return error


@pytest.mark.parametrize(
    ("exc", "kind", "cause"),
    [
        (
            _http_error(400, "Md5Mismatch", "The MD5 value specified in the request did not match"),
            TRANSIENT,
            "Md5Mismatch — the upload arrived corrupted",
        ),
        # Azurite's way of saying the same
        (
            _http_error(400, "InvalidOperation", "Provided contentMD5 doesn't match.\nRequestId:1"),
            TRANSIENT,
            "Md5Mismatch — the upload arrived corrupted",
        ),
        (_http_error(403, "AuthorizationFailure", "not authorized"), AUTH, "AuthorizationFailure"),
        (_http_error(404, "ContainerNotFound", "no"), NOT_FOUND, "ContainerNotFound"),
        (_http_error(400, "InvalidOperation", "something else"), AUTH, "HTTP 400"),
        (_http_error(503, None, "busy"), TRANSIENT, "HTTP 503"),
        (ServiceRequestError("[Errno 111] Connection refused"), TRANSIENT, "connection refused"),
        (ServiceResponseError("Read timed out. (read timeout=3)"), TRANSIENT, "timed out"),
        (KeyError("sig=s3cr3t"), TRANSIENT, "unexpected KeyError"),
    ],
)
def test_azure_sdk_exceptions(exc: BaseException, kind: StorageErrorKind, cause: str) -> None:
    found = sdk_cause(exc)
    assert found.kind is kind
    assert found.text.startswith(cause)
    assert "s3cr3t" not in found.text


def test_redact() -> None:
    key = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    )
    text = f"failed with {key} and wJalrXUtnFEMI/K7MDENG"
    cleaned = redact(text, [key, "wJalrXUtnFEMI/K7MDENG", "", "short"])
    assert "MIIEvQ" not in cleaned
    assert "wJalrX" not in cleaned
    assert cleaned.count("***") >= 2


def test_storage_error_build_redacts_secrets() -> None:
    error = StorageError.build(
        AUTH, "s3", "b", "rejected wJalrXUtnFEMI/K7MDENG", secrets=["wJalrXUtnFEMI/K7MDENG"]
    )
    assert "wJalrX" not in str(error)
    assert str(error) == "s3 bucket b: rejected ***"


# Configurations that fail before any request: the reason must describe the problem without
# repeating the secret the customer sent.
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("backend", "configuration", "kind"),
    [
        (
            "s3-generic",
            {
                "bucket": "bars",
                "region": "us-east-1",
                "aws_access_key_id": "AKIA",
                "aws_secret_access_key": SECRET,
                "endpoint": f"ftp://{SECRET}@host",
            },
            AUTH,
        ),
        (
            "s3",
            {"bucket": "Bad_Bucket", "aws_access_key_id": "AKIA", "aws_secret_access_key": SECRET},
            NOT_FOUND,
        ),
        ("azure", {"bucket": "recs", "account_name": "acct", "account_key": SECRET + "!"}, AUTH),
        ("azure", {"bucket": "recs", "account_name": SECRET, "account_key": "Zm9v"}, AUTH),
        ("gcs", {"bucket": "recs", "credentials": SECRET}, AUTH),
        ("ftp", {"bucket": "recs", "password": SECRET}, AUTH),
    ],
)
def test_configuration_errors_keep_secrets_out(
    backend: str, configuration: dict[str, str], kind: StorageErrorKind
) -> None:
    with pytest.raises(StorageError) as caught:
        open_custom_store(backend, configuration)
    assert caught.value.kind is kind
    assert SECRET not in str(caught.value)
    assert "wJalrX" not in str(caught.value)


def test_gcs_broken_private_key_is_not_echoed() -> None:
    info = dict(make_service_account().info)
    info["private_key"] = info["private_key"].replace("MII", "XXX", 1)[:-40] + "\n"
    with pytest.raises(StorageError) as caught:
        open_custom_store("gcs", {"bucket": "recs", "credentials": json.dumps(info)})
    assert caught.value.kind is AUTH
    assert str(caught.value).startswith("gcs bucket recs: Invalid credentials json")
    body_line = info["private_key"].splitlines()[1]
    assert body_line not in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)
