"""A live check of a store: write a small object, read its size back, delete it.

This is what `POST …/actions/validate` runs, so it must answer quickly even against a hung
endpoint, say precisely what failed, and leave nothing behind in the customer's bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from pathlib import Path

from callvault.storage.base import ObjectStore, StorageError, where

PROBE_PREFIX = "callvault-probe/"


def _noun(store: ObjectStore) -> str:
    return str(getattr(store, "noun", "bucket"))


async def probe_store(store: ObjectStore, timeout_secs: float = 15) -> str | None:
    """None when put, head and delete all work; else the reason and the step that failed, e.g.
    "s3 bucket x: SignatureDoesNotMatch — the secret key is wrong (failed at: write)"."""
    key = f"{PROBE_PREFIX}{uuid.uuid4()}"
    subject = where(store.backend, store.bucket, _noun(store))
    body = f"callvault storage probe {key}\n".encode()
    # keep a slice of the budget for the clean-up delete, so the whole stays within timeout
    cleanup_budget = min(3.0, timeout_secs / 5)
    uploaded = False
    step = "write"
    with tempfile.TemporaryDirectory(prefix="callvault-probe-") as tmp:
        path = Path(tmp) / "probe"
        path.write_bytes(body)
        try:
            async with asyncio.timeout(timeout_secs - cleanup_budget):
                await store.put_file(
                    key, path, content_type="text/plain", metadata={"purpose": "probe"}
                )
                uploaded = True
                step = "read back"
                info = await store.head(key)
                if info is None:
                    return f"{subject}: the probe object was written but cannot be found"
                if info.size != len(body):
                    return (
                        f"{subject}: the probe object reads "
                        f"back {info.size} bytes instead of {len(body)}"
                    )
                step = "delete"
                await store.delete(key)
                uploaded = False
        except StorageError as exc:
            if exc.reason.split(": ", 1)[-1].startswith("AssumeRole"):
                step = "assume role"
            return f"{exc.reason} (failed at: {step})"
        except TimeoutError:
            return (
                f"{subject}: timed out after {timeout_secs:g} s — "
                "the storage endpoint did not answer"
            )
        finally:
            if uploaded:
                # best effort: the probe failed after its object was written
                with contextlib.suppress(StorageError, TimeoutError):
                    async with asyncio.timeout(cleanup_budget):
                        await store.delete(key)
    return None
