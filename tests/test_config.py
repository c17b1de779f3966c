import base64
import stat

import pytest

from callvault.config import load_settings, sqlalchemy_url
from callvault.db import make_engine


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_defaults_generate_private_secrets(tmp_path):
    settings = load_settings({"CALLVAULT_DATA_DIR": str(tmp_path / "data")})
    data = tmp_path / "data"
    assert settings.database_url == f"sqlite:///{data / 'callvault.db'}"
    assert settings.default_store_url == f"file://{data / 'recordings'}"
    assert mode(data / "encryption.key") == 0o600
    assert mode(data / "ingest.token") == 0o600
    assert len(base64.b64decode((data / "encryption.key").read_text())) == 32
    assert settings.ingest_token == (data / "ingest.token").read_text()
    # a second start reuses what the first generated
    again = load_settings({"CALLVAULT_DATA_DIR": str(data)})
    assert again.ingest_token == settings.ingest_token
    assert again.encryption_keys_b64 == settings.encryption_keys_b64


def test_environment_wins_and_nothing_is_generated(tmp_path):
    key = base64.b64encode(b"k" * 32).decode()
    settings = load_settings(
        {
            "CALLVAULT_DATA_DIR": str(tmp_path),
            "CALLVAULT_ENCRYPTION_KEYS": key,
            "CALLVAULT_INGEST_TOKEN": "tok",
            "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "TRUE",
        }
    )
    assert settings.ingest_token == "tok"
    assert settings.allow_private_networks
    assert not (tmp_path / "encryption.key").exists()
    assert not (tmp_path / "ingest.token").exists()


def test_database_urls_map_to_async_drivers():
    assert sqlalchemy_url("postgresql://u@h:5432/db") == "postgresql+asyncpg://u@h:5432/db"
    assert sqlalchemy_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"


async def test_sqlite_file_is_private(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("create table t (x int)")
    await engine.dispose()
    assert mode(tmp_path / "x.db") == 0o600


def test_a_typo_in_a_setting_is_named_with_what_it_likely_meant(tmp_path):
    from callvault.config import unknown_settings

    settings = load_settings(
        {"CALLVAULT_DATA_DIR": str(tmp_path), "CALLVAULT_ENCRYPTION_KEY": "x", "OTHER": "1"}
    )
    assert unknown_settings(settings.environ) == {
        "CALLVAULT_ENCRYPTION_KEY": "CALLVAULT_ENCRYPTION_KEYS"
    }


def test_a_bad_log_level_or_metrics_port_is_a_configuration_error(tmp_path):
    import pytest

    from callvault.config import ConfigurationError

    base = {"CALLVAULT_DATA_DIR": str(tmp_path)}
    assert load_settings({**base, "CALLVAULT_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    with pytest.raises(ConfigurationError, match="CALLVAULT_LOG_LEVEL must be one of"):
        load_settings({**base, "CALLVAULT_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigurationError, match="CALLVAULT_METRICS_PORT must be a port"):
        load_settings({**base, "CALLVAULT_METRICS_PORT": "99999"})


def test_postgresql_never_gets_a_generated_key(tmp_path):
    import pytest

    from callvault.config import ConfigurationError

    settings = load_settings(
        {"CALLVAULT_DATA_DIR": str(tmp_path), "CALLVAULT_DATABASE_URL": "postgresql://h/db"}
    )
    assert settings.encryption_keys_b64 == []
    assert not (tmp_path / "encryption.key").exists()
    with pytest.raises(ConfigurationError, match="CALLVAULT_ENCRYPTION_KEYS is not set"):
        settings.keyring  # noqa: B018


def test_delivery_concurrency_setting(tmp_path):
    env = {"CALLVAULT_DATA_DIR": str(tmp_path)}
    assert load_settings(env).delivery_concurrency == 16
    assert load_settings({**env, "CALLVAULT_DELIVERY_CONCURRENCY": "3"}).delivery_concurrency == 3
    with pytest.raises(ValueError, match="CALLVAULT_DELIVERY_CONCURRENCY"):
        load_settings({**env, "CALLVAULT_DELIVERY_CONCURRENCY": "0"})
