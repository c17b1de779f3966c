"""From a provider's failure to (kind, cause): the table every provider module shares.

obstore reports S3 and Azure failures as exceptions whose text carries the HTTP status, the
service's XML error `<Code>` and the transport error kind; google-cloud-storage raises
`GoogleAPICallError`s with a status code. Both are reduced to an error code or status here and
looked up in one table, so the same fault reads the same on every backend. Causes are built only
from codes and statuses, never from raw provider text, so no credential can leak through them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callvault.storage.base import StorageErrorKind

AUTH = StorageErrorKind.PERMANENT_AUTH
NOT_FOUND = StorageErrorKind.PERMANENT_NOT_FOUND
TRANSIENT = StorageErrorKind.TRANSIENT


@dataclass(frozen=True)
class Cause:
    kind: StorageErrorKind
    text: str


# Service error codes (S3 XML, Azure XML) -> kind and an explanation a customer can act on.
_CODES: dict[str, tuple[StorageErrorKind, str]] = {
    # S3 and S3-compatible
    "SignatureDoesNotMatch": (AUTH, "the secret key is wrong"),
    "InvalidAccessKeyId": (AUTH, "the access key id is unknown"),
    "AccessDenied": (AUTH, "the credentials may not use this bucket"),
    "InvalidToken": (AUTH, "the session token is invalid"),
    "ExpiredToken": (AUTH, "the session token has expired"),
    "AuthorizationHeaderMalformed": (AUTH, "the region does not match the bucket's"),
    "AllAccessDisabled": (AUTH, "all access to this bucket is disabled"),
    "AccountProblem": (AUTH, "the storage account has a problem"),
    "NoSuchBucket": (NOT_FOUND, "no such bucket"),
    "PermanentRedirect": (NOT_FOUND, "the bucket is in another region"),
    "InvalidBucketName": (NOT_FOUND, "the bucket name is invalid"),
    "NoSuchKey": (NOT_FOUND, "no such object"),
    "RequestTimeTooSkewed": (TRANSIENT, "this server's clock differs from the storage's"),
    "SlowDown": (TRANSIENT, "the storage asks to slow down"),
    "ServiceUnavailable": (TRANSIENT, "the storage service is unavailable"),
    "InternalError": (TRANSIENT, "the storage had an internal error"),
    # Azure Blob
    "AuthenticationFailed": (AUTH, "the account key is wrong"),
    "AuthorizationFailure": (AUTH, "the account key is wrong or may not use this container"),
    "AuthorizationPermissionMismatch": (AUTH, "the credentials may not use this container"),
    "InvalidAuthenticationInfo": (AUTH, "the authentication information is invalid"),
    "AccountIsDisabled": (AUTH, "the storage account is disabled"),
    "ContainerNotFound": (NOT_FOUND, "no such container"),
    "BlobNotFound": (NOT_FOUND, "no such blob"),
    "InvalidResourceName": (NOT_FOUND, "the container name is invalid"),
    "ServerBusy": (TRANSIENT, "the storage is busy"),
    "OperationTimedOut": (TRANSIENT, "the storage timed out"),
}

# Azure's bulk delete reports its error as a sentence, not as a code
_PHRASES = {
    "The specified container does not exist": "ContainerNotFound",
    "The specified blob does not exist": "BlobNotFound",
}

# transport failures, most specific first: (pattern in the error text, cause)
_TRANSPORT: tuple[tuple[str, str], ...] = (
    ("Connection refused", "connection refused — the storage endpoint is unreachable"),
    ("dns error", "dns error — the endpoint's host name does not resolve"),
    ("certificate", "TLS error — the endpoint's certificate is not trusted"),
    ("kind: Timeout", "timed out — the storage endpoint did not answer in time"),
    ("TimedOut", "timed out — the storage endpoint did not answer in time"),
    ("Connection reset", "connection reset — the storage endpoint dropped the connection"),
    ("IncompleteMessage", "connection closed — the storage endpoint dropped the connection"),
    ("connection closed", "connection closed — the storage endpoint dropped the connection"),
    ("kind: Connect", "cannot connect — the storage endpoint is unreachable"),
    ("error sending request", "request failed — the storage endpoint is unreachable"),
    ("error decoding response body", "response broken — the storage endpoint dropped it"),
)

_XML_CODE = re.compile(r"<Code>\s*([A-Za-z]+)\s*</Code>")
_STATUS = re.compile(r"(?:status code: |status: |\(code: )(\d{3})")


def cause_for_code(code: str, *, backend: str) -> Cause | None:
    entry = _CODES.get(code)
    if entry is None:
        return None
    kind, text = entry
    if code == "NoSuchBucket" and backend == "azure":
        text = "no such container"
    return Cause(kind, f"{code} — {text}")


def cause_for_status(status: int, *, missing: str = "no such object") -> Cause:
    """The fallback when a response carries no known error code (e.g. every HEAD)."""
    if status in (401, 403):
        return Cause(AUTH, f"HTTP {status} — access denied")
    if status in (404, 410):
        return Cause(NOT_FOUND, f"HTTP {status} — {missing}")
    if status in (408, 429) or status >= 500:
        return Cause(TRANSIENT, f"HTTP {status} — the storage is unavailable, try again")
    # other 4xx: the same request will be refused again, so retrying cannot help
    return Cause(AUTH, f"HTTP {status} — the storage rejected the request")


def cause_from_text(text: str, *, backend: str, missing: str = "no such object") -> Cause | None:
    """Read a code, a status or a transport failure out of an obstore error's text."""
    match = _XML_CODE.search(text)
    if match and (cause := cause_for_code(match.group(1), backend=backend)):
        return cause
    for phrase, phrase_code in _PHRASES.items():
        if phrase in text and (cause := cause_for_code(phrase_code, backend=backend)):
            return cause
    status = _STATUS.search(text)
    if status:
        cause = cause_for_status(int(status.group(1)), missing=missing)
        if match:
            # an unknown service code still says more than the status alone
            return Cause(cause.kind, f"{match.group(1)} — {cause.text.split(' — ', 1)[1]}")
        return cause
    for pattern, transport in _TRANSPORT:
        if pattern in text:
            return Cause(TRANSIENT, transport)
    return None
