"""What the operator tunes about storage: storage's own part of the settings.

Storage stands alone (shared/layers.json: it imports neither the settings nor any other
plumbing), so the values come to it instead: config.py fills a `StorageSettings` from the
environment with `from_environ` (the names are parsed here, next to what they tune) and keeps
it as `Settings.storage`; the entry point hands it to storage once with `configure` (cli.py:
`serve`, `worker`). Until then — a library use, an in-process test — the defaults apply.

Variables the cloud SDKs define (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_STS, STORAGE_EMULATOR_HOST)
are not settings of ours: they are read where they are used (s3.py, aws_roles.py, gcs.py), as
the SDKs read them, and config.OTHER_ENVIRONMENT documents them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

AZURE_BLOB_ENDPOINT_ENV = "CALLVAULT_AZURE_BLOB_ENDPOINT"
STALL_ENV = "CALLVAULT_STORAGE_STALL_SECS"
THREADS_ENV = "CALLVAULT_STORAGE_THREADS"
STS_ENDPOINTS_ENV = "CALLVAULT_STS_ENDPOINTS"
PRINCIPAL_ENV = "CALLVAULT_AWS_PRINCIPAL_ARN"

DEFAULT_AZURE_BLOB_ENDPOINT = "https://{account_name}.blob.core.windows.net"
# A transfer that stops moving fails after this long without a byte read (obstore's
# read_timeout), not after the whole-request `timeout`. Nothing is read while a part is being
# sent, so it must also cover sending one part: 10 s + a 5 MiB part (obstore_store.py
# DEFAULT_PART_SIZE) at 128 KiB/s. With the retries (at most 60 s of them) a stalled request
# fails within two of these.
DEFAULT_STALL_SECS = 10.0 + 5 * 1024 * 1024 / (128 * 1024)
DEFAULT_THREADS = 16
# the SDK variables naming endpoints the operator chose (their hosts may be private:
# outbound/egress.py trusts them)
SDK_ENDPOINT_ENVS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "STORAGE_EMULATOR_HOST")


@dataclass(frozen=True)
class StorageSettings:
    # template of Azure blob endpoints (Azurite, sovereign clouds)
    azure_blob_endpoint: str = DEFAULT_AZURE_BLOB_ENDPOINT
    # a storage request that moves nothing for this long fails (obstore_store.py)
    stall_secs: float = DEFAULT_STALL_SECS
    # threads of the pool blocking storage clients run in (blocking.py)
    threads: int = DEFAULT_THREADS
    # STS endpoints allowed besides AWS_ENDPOINT_URL_STS and AWS's own (aws_roles.py)
    sts_endpoints: frozenset[str] = frozenset()
    # callvault's own AWS principal ("": ask STS GetCallerIdentity; aws_roles.py)
    aws_principal_arn: str = ""

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> StorageSettings:
        stall = float(env.get(STALL_ENV) or DEFAULT_STALL_SECS)
        if not stall > 0:
            raise ValueError(f"{STALL_ENV} must be a positive number of seconds")
        threads = int(env.get(THREADS_ENV) or DEFAULT_THREADS)
        if threads < 1:
            raise ValueError(f"{THREADS_ENV} must be at least 1")
        raw_sts = env.get(STS_ENDPOINTS_ENV, "")
        return cls(
            azure_blob_endpoint=env.get(AZURE_BLOB_ENDPOINT_ENV) or DEFAULT_AZURE_BLOB_ENDPOINT,
            stall_secs=stall,
            threads=threads,
            sts_endpoints=frozenset(
                value.strip().rstrip("/") for value in raw_sts.split(",") if value.strip()
            ),
            aws_principal_arn=env.get(PRINCIPAL_ENV, ""),
        )

    def operator_endpoints(self) -> tuple[str, ...]:
        """Every endpoint the operator configured, for the egress guard to trust: ours and
        the SDK variables' (read now, as the SDKs read them when a client opens)."""
        sdk = tuple(os.environ.get(name, "") for name in SDK_ENDPOINT_ENVS)
        return (*sdk, *sorted(self.sts_endpoints), self.azure_blob_endpoint)


_current = StorageSettings()


def configure(settings: StorageSettings) -> None:
    """This process's storage settings, from now on (the entry point calls it once)."""
    global _current
    _current = settings


def current() -> StorageSettings:
    return _current
