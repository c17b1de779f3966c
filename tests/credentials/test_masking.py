from callvault.credentials.masking import looks_masked, mask, masked_configuration, unmask


def test_mask_keeps_only_the_last_four_characters() -> None:
    assert mask("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") == "*" * 36 + "EKEY"
    assert len(mask("x" * 2000)) == 2000


def test_short_secrets_are_masked_whole() -> None:
    assert mask("abc") == "***"
    assert mask("12345678901") == "*" * 11
    assert mask("123456789012") == "********9012"


def test_a_mask_looks_masked_and_a_secret_does_not() -> None:
    assert looks_masked(mask("a-long-enough-secret"))
    assert looks_masked("***") is False
    assert not looks_masked("wJalrXUtnFEMI/K7MDENG")
    assert not looks_masked('{"type": "service_account"}')


def test_masked_configuration_masks_only_the_backends_secrets() -> None:
    config = {
        "bucket": "b",
        "region": "us-east-1",
        "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    }
    masked = masked_configuration("s3", config)
    assert masked["aws_secret_access_key"] == mask(config["aws_secret_access_key"])
    assert masked["aws_access_key_id"] == "AKIAIOSFODNN7EXAMPLE"
    assert masked["bucket"] == "b"
    assert (
        masked_configuration("gcs", {"credentials": "x" * 20})["credentials"] == "*" * 16 + "xxxx"
    )
    assert masked_configuration("azure", {"account_key": "k" * 20})["account_key"].startswith(
        "****"
    )


def test_unmask_puts_the_stored_secret_back_only_for_its_exact_mask() -> None:
    stored = {"bucket": "old", "aws_secret_access_key": "the-stored-secret-value"}
    submitted = {"bucket": "new", "aws_secret_access_key": mask(stored["aws_secret_access_key"])}
    resolved, unresolved = unmask("s3", submitted, stored)
    assert resolved == {"bucket": "new", "aws_secret_access_key": "the-stored-secret-value"}
    assert unresolved == []

    wrong = {"aws_secret_access_key": "****" + "different-tail"[-4:]}
    assert unmask("s3", wrong, stored)[1] == ["aws_secret_access_key"]
    assert unmask("s3", submitted, None)[1] == ["aws_secret_access_key"]

    fresh = {"aws_secret_access_key": "a-brand-new-secret"}
    assert unmask("s3", fresh, stored) == (fresh, [])
