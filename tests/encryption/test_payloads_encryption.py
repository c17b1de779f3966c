"""encryption_details in webhook payloads (pure): v2 carries them, v1 keeps the seed's shape,
unencrypted recordings carry nothing new."""

from __future__ import annotations

from callvault.encryption_keys.scheme import ALGORITHM, object_metadata, stored_content_type
from callvault.webhooks import payloads
from tests.webhooks.test_payloads import SEED_URL, SeedRecording, at

DETAILS = {
    "algorithm": ALGORITHM,
    "public_key_id": "5c1c8d44-0b0e-4b5e-9d53-6a3f0c2f0e11",
    "fingerprint": "ab" * 32,
    "encrypted_cek": "Q0VL",
    "iv": "SVY=",
}


def saved(version: str, details: dict[str, str] | None) -> dict[str, object]:
    return payloads.saved_payload(
        SeedRecording(),
        recording_url=SEED_URL,
        occurred_at=at("2022-02-04T11:36:13.508869Z"),
        api_version=version,
        encryption_details=details,
    )


def test_v2_carries_the_details_and_v1_keeps_the_seed_shape() -> None:
    assert saved("2", DETAILS)["encryption_details"] == DETAILS
    assert saved("1", DETAILS) == saved("1", None)
    assert "encryption_details" not in saved("2", None)


def test_object_metadata_and_content_type() -> None:
    assert object_metadata(DETAILS) == {
        "encrypted_cek": "Q0VL",
        "iv": "SVY=",
        "public_key_id": DETAILS["public_key_id"],
    }
    assert object_metadata(None) == {}
    assert stored_content_type("audio/wav", DETAILS) == "application/octet-stream"
    assert stored_content_type("audio/wav", None) == "audio/wav"
