"""From a provider's failure to (kind, cause): the machinery every provider module shares.

obstore reports failures as exceptions whose text carries the HTTP status, the service's XML
error `<Code>` and the transport error kind; google-cloud-storage raises `GoogleAPICallError`s
with a status code. Both are reduced to an error code or status here; codes are looked up in the
provider's own table (its module owns it), statuses and transport failures in the shared ones
below, so the same fault reads the same on every backend. Causes are built only
from codes and statuses, never from raw provider text, so no credential can leak through them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from callvault.outbound.egress import REFUSED_PREFIX
from callvault.storage.base import StorageErrorKind

AUTH = StorageErrorKind.PERMANENT_AUTH
NOT_FOUND = StorageErrorKind.PERMANENT_NOT_FOUND
TRANSIENT = StorageErrorKind.TRANSIENT
# a body refused (or caught) because its checksum did not match what the store received:
# corrupted on the way, so sending it again is right (issue 14; every provider says it so)
CORRUPTED_UPLOAD = "the upload arrived corrupted (checksum mismatch)"
# the egress guard refused a connection (a redirect or a name that now resolves elsewhere)
EGRESS_REFUSED = (
    "endpoint refused — a connection would have gone to a private, loopback or otherwise "
    "non-public address (a policy of this server: CALLVAULT_ALLOW_PRIVATE_NETWORKS)"
)


@dataclass(frozen=True)
class Cause:
    kind: StorageErrorKind
    text: str


# A provider's service error codes (S3 XML, Azure XML) -> kind and an explanation a customer
# can act on. Each provider module has its own table (s3.ERROR_CODES, azure.ERROR_CODES).
Codes = Mapping[str, tuple[StorageErrorKind, str]]
# errors some services report as a sentence rather than a code: sentence -> code
Phrases = Mapping[str, str]

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


def cause_for_code(code: str, codes: Codes) -> Cause | None:
    entry = codes.get(code)
    if entry is None:
        return None
    kind, text = entry
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


def cause_from_text(
    text: str, *, codes: Codes, phrases: Phrases | None = None, missing: str = "no such object"
) -> Cause | None:
    """Read a code, a status or a transport failure out of an obstore error's text."""
    if REFUSED_PREFIX in text:
        return Cause(AUTH, EGRESS_REFUSED)
    match = _XML_CODE.search(text)
    if match and (cause := cause_for_code(match.group(1), codes)):
        return cause
    for phrase, phrase_code in (phrases or {}).items():
        if phrase in text and (cause := cause_for_code(phrase_code, codes)):
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
