"""Storage's part of the settings: parsed from the environment by storage itself, handed to it
by the entry point (storage/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callvault.config import load_settings
from callvault.storage.settings import DEFAULT_AZURE_BLOB_ENDPOINT, StorageSettings


def test_the_defaults_apply_when_nothing_is_set() -> None:
    assert StorageSettings.from_environ({}) == StorageSettings()
    assert StorageSettings().azure_blob_endpoint == DEFAULT_AZURE_BLOB_ENDPOINT
    assert StorageSettings().stall_secs == 50.0


def test_every_storage_variable_is_parsed() -> None:
    parsed = StorageSettings.from_environ(
        {
            "CALLVAULT_AZURE_BLOB_ENDPOINT": "http://127.0.0.1:10000/{account_name}",
            "CALLVAULT_STORAGE_STALL_SECS": "2.5",
            "CALLVAULT_STORAGE_THREADS": "4",
            "CALLVAULT_STS_ENDPOINTS": "https://a.example, https://minio.example/",
            "CALLVAULT_AWS_PRINCIPAL_ARN": "arn:aws:iam::210987654321:role/cv",
        }
    )
    assert parsed == StorageSettings(
        azure_blob_endpoint="http://127.0.0.1:10000/{account_name}",
        stall_secs=2.5,
        threads=4,
        sts_endpoints=frozenset({"https://a.example", "https://minio.example"}),
        aws_principal_arn="arn:aws:iam::210987654321:role/cv",
    )


@pytest.mark.parametrize("name", ["CALLVAULT_STORAGE_STALL_SECS", "CALLVAULT_STORAGE_THREADS"])
def test_a_value_out_of_range_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        StorageSettings.from_environ({name: "0"})


def test_the_settings_object_carries_storage_s_part(tmp_path: Path) -> None:
    settings = load_settings(
        {"CALLVAULT_DATA_DIR": str(tmp_path), "CALLVAULT_STORAGE_THREADS": "3"}
    )
    assert settings.storage == StorageSettings(threads=3)


def test_the_operator_endpoints_are_ours_and_the_sdks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    settings = StorageSettings(sts_endpoints=frozenset({"https://sts.internal:8443"}))
    assert settings.operator_endpoints() == (
        "http://127.0.0.1:8333",
        "",
        "",
        "https://sts.internal:8443",
        DEFAULT_AZURE_BLOB_ENDPOINT,
    )
