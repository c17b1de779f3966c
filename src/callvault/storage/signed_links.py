"""Self-signed download links for the local default store. Pure functions.

A link is `{public_url}/v2/recording_files/{key}?expires={unix}&signature={hex}` where the
signature is HMAC-SHA256 over "{key}\\n{expires}" with the instance's link secret. The newline
separates the fields so that no (key, expires) pair can be re-split into another.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlencode


def sign_link(secret: bytes, key: str, expires: int) -> str:
    message = f"{key}\n{int(expires)}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_link(secret: bytes, key: str, expires: int, signature: str, now: float) -> bool:
    """True when the signature is right and `expires` is not in the past (constant time)."""
    expected = sign_link(secret, key, expires)
    # compare first, then check the time, so timing does not tell an expired link from a bad one
    valid = hmac.compare_digest(expected.encode(), signature.lower().encode())
    return valid and now <= int(expires)


def link_url(public_url: str, secret: bytes, key: str, expires: int) -> str:
    query = urlencode({"expires": int(expires), "signature": sign_link(secret, key, expires)})
    return f"{public_url.rstrip('/')}/v2/recording_files/{quote(key, safe='/')}?{query}"
