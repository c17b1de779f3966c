"""Bucket and container naming rules, checked before any request. Pure functions.

Sources: AWS "General purpose bucket naming rules", Google Cloud "Bucket naming requirements",
Azure "Naming and referencing containers". A name that breaks them can never work, so the API
rejects it at once instead of letting the first upload fail.
"""

from __future__ import annotations

import ipaddress
import re

_S3_CHARS = re.compile(r"^[a-z0-9.-]+$")
_GCS_CHARS = re.compile(r"^[a-z0-9._-]+$")
_AZURE_CHARS = re.compile(r"^[a-z0-9-]+$")
_S3_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_error(backend: str, name: str) -> str | None:
    """None when `name` is a valid bucket (container) name for `backend`, else why not."""
    if backend in ("s3", "s3-generic"):
        return _s3_error(name, aws=backend == "s3")
    if backend == "gcs":
        return _gcs_error(name)
    if backend == "azure":
        return _azure_error(name)
    return f"unknown backend {backend!r}"


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def _alnum_ends(name: str) -> bool:
    return name[0].isalnum() and name[-1].isalnum()


def _s3_error(name: str, *, aws: bool) -> str | None:
    if not 3 <= len(name) <= 63:
        return "bucket name must be 3 to 63 characters long"
    if not _S3_CHARS.match(name):
        return "bucket name may contain only lowercase letters, digits, dots and hyphens"
    if not _alnum_ends(name):
        return "bucket name must begin and end with a letter or digit"
    if ".." in name:
        return "bucket name must not contain two adjacent dots"
    if _is_ip_address(name):
        return "bucket name must not be formatted as an IP address"
    # AWS reserves these for its own features; other S3-compatible stores do not
    if aws and name.startswith(_S3_RESERVED_PREFIXES):
        return "bucket name must not start with a prefix AWS reserves (xn--, sthree-, ...)"
    if aws and name.endswith(_S3_RESERVED_SUFFIXES):
        return "bucket name must not end with a suffix AWS reserves (-s3alias, --ol-s3, ...)"
    return None


def _gcs_error(name: str) -> str | None:
    # up to 222 characters only when dotted, each dot-separated part at most 63
    if not 3 <= len(name) <= (222 if "." in name else 63):
        return "bucket name must be 3 to 63 characters long (up to 222 with dots)"
    if not _GCS_CHARS.match(name):
        return (
            "bucket name may contain only lowercase letters, digits, hyphens, underscores and dots"
        )
    if not _alnum_ends(name):
        return "bucket name must begin and end with a letter or digit"
    if any(not 1 <= len(part) <= 63 for part in name.split(".")):
        return "each dot-separated part of a bucket name must be 1 to 63 characters long"
    if _is_ip_address(name):
        return "bucket name must not be formatted as an IP address"
    if name.startswith("goog") or "google" in name:
        return "bucket name must not begin with 'goog' or contain 'google'"
    return None


def _azure_error(name: str) -> str | None:
    if not 3 <= len(name) <= 63:
        return "container name must be 3 to 63 characters long"
    if not _AZURE_CHARS.match(name):
        return "container name may contain only lowercase letters, digits and hyphens"
    if not _alnum_ends(name):
        return "container name must begin and end with a letter or digit"
    if "--" in name:
        return "container name must not contain two consecutive hyphens"
    return None
