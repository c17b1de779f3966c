from __future__ import annotations

import pytest

from callvault.storage.registry import bucket_name_error


@pytest.mark.parametrize(
    "name",
    ["abc", "my-bucket", "my.bucket.1", "a" * 63, "tacrde12904", "1bucket"],
)
def test_valid_s3_names(name: str) -> None:
    assert bucket_name_error("s3", name) is None
    assert bucket_name_error("s3-generic", name) is None


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "My-Bucket",
        "my_bucket",
        "-bucket",
        "bucket-",
        "my..bucket",
        "192.168.5.4",
        "bucket/key",
        "bucket?x",
        "",
    ],
)
def test_invalid_s3_names(name: str) -> None:
    assert bucket_name_error("s3", name)
    assert bucket_name_error("s3-generic", name)


def test_aws_reserved_affixes_only_for_aws() -> None:
    assert bucket_name_error("s3", "xn--bucket")
    assert bucket_name_error("s3", "bucket-s3alias")
    assert bucket_name_error("s3-generic", "xn--bucket") is None


@pytest.mark.parametrize(
    "name", ["abc", "my_bucket", "my-bucket", "a.b.c", ("a" * 63 + ".") * 3 + "abc"]
)
def test_valid_gcs_names(name: str) -> None:
    assert bucket_name_error("gcs", name) is None


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,  # no dots: 63 at most
        "a" * 64 + ".com",  # a dotted part longer than 63
        ("a" * 60 + ".") * 4,  # over 222 and ends with a dot
        "Bucket",
        "_bucket",
        "googbucket",
        "my-google-bucket",
        "10.0.0.1",
    ],
)
def test_invalid_gcs_names(name: str) -> None:
    assert bucket_name_error("gcs", name)


@pytest.mark.parametrize("name", ["abc", "recs", "my-container-1", "a" * 63, "1abc"])
def test_valid_azure_names(name: str) -> None:
    assert bucket_name_error("azure", name) is None


@pytest.mark.parametrize(
    "name", ["ab", "a" * 64, "my--container", "-abc", "abc-", "my_container", "My", "a.b.c"]
)
def test_invalid_azure_names(name: str) -> None:
    assert bucket_name_error("azure", name)


def test_unknown_backend() -> None:
    assert bucket_name_error("ftp", "abc")
