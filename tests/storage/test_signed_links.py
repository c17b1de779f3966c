from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

from callvault.storage.signed_links import link_url, sign_link, verify_link

SECRET = b"link-secret-for-tests"


def test_signature_is_hmac_sha256_over_key_newline_expires() -> None:
    expected = hmac.new(SECRET, b"acct/2022-02-02/leg-1.wav\n1700000000", hashlib.sha256)
    assert sign_link(SECRET, "acct/2022-02-02/leg-1.wav", 1700000000) == expected.hexdigest()


def test_valid_link_verifies_until_it_expires() -> None:
    sig = sign_link(SECRET, "k", 1000)
    assert verify_link(SECRET, "k", 1000, sig, now=999)
    assert verify_link(SECRET, "k", 1000, sig, now=1000)
    assert not verify_link(SECRET, "k", 1000, sig, now=1001)


def test_tampering_fails() -> None:
    sig = sign_link(SECRET, "k", 1000)
    assert not verify_link(SECRET, "other", 1000, sig, now=0)
    assert not verify_link(SECRET, "k", 2000, sig, now=0)
    assert not verify_link(b"another-secret", "k", 1000, sig, now=0)
    assert not verify_link(SECRET, "k", 1000, sig[:-1] + ("0" if sig[-1] != "0" else "1"), now=0)
    assert not verify_link(SECRET, "k", 1000, "", now=0)


def test_fields_cannot_be_re_split() -> None:
    # "a\n1" + expires 2 must not equal "a" + expires "1\n2"-like splits
    assert sign_link(SECRET, "a1", 2) != sign_link(SECRET, "a", 12)


def test_link_url_form() -> None:
    url = link_url("https://vault.example/", SECRET, "acct/d/leg 1.wav", 1700000600)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://vault.example/v2/recording_files/acct/d/leg%201.wav"
    )
    query = parse_qs(parts.query)
    assert query["expires"] == ["1700000600"]
    assert verify_link(SECRET, "acct/d/leg 1.wav", 1700000600, query["signature"][0], now=0)
