"""Backup and restore of the embedded mode (docs/deploy.md, "Backup and restore").

A backup is a directory: `callvault.db` (SQLite's online backup API: a consistent copy taken
while `serve` writes), `recordings/` (the local default store's objects with their metadata),
the generated secrets (`encryption.key`, `ingest.token`) with their modes, and `manifest.json`.

Order, and why it holds "every recording acknowledged before the backup started is in it":
ingest makes the object durable before it commits the row and answers 202, and afterwards an
object only leaves the default store once its row no longer needs it (moved to the customer's
bucket, deleted, expired). So the objects are copied first, then the database is copied, then
objects that appeared meanwhile are copied. A row in the copy that names an object missing from
the backup can only belong to a recording that moved on during the backup; the database and the
late objects are copied again (a few rounds) until none is left, and any that remain are named
in the manifest.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from callvault.storage.local import META_DIR, TEMP_DIR, XATTR

DATABASE_FILE = "callvault.db"
STORE_DIR = "recordings"
MANIFEST = "manifest.json"
SECRET_FILES = ("encryption.key", "ingest.token")
FORMAT = 1
ROUNDS = 3
# rows that need their default-store object: waiting for the worker, kept after a failure, or
# stored for good in the default store (a recording in a customer's bucket keeps its staging
# key a moment after the staging copy is gone: not needed, and not waited for)
NEEDS_OBJECT = (
    "SELECT id, default_store_key FROM recordings WHERE default_store_key IS NOT NULL "
    "AND (status IN ('received', 'failed') OR (status = 'stored' AND backend IS NULL))"
)


class BackupError(Exception):
    """A backup or restore that cannot be made; the message names the fix."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    recordings: int
    objects: int
    bytes: int
    seconds: float
    missing: list[str]


def sqlite_path(database_url: str) -> Path:
    if not database_url.startswith("sqlite"):
        raise BackupError(
            "backup covers the embedded mode (SQLite); scaled out, back up PostgreSQL with "
            "pg_dump or PITR and version the default store's bucket (docs/deploy.md)"
        )
    return Path(database_url.split(":///", 1)[1])


def local_store_root(default_store_url: str) -> Path | None:
    """The local default store's directory, or None for a bucket (not copied)."""
    parsed = urlparse(default_store_url)
    return Path(parsed.path) if parsed.scheme == "file" else None


def _empty_or_absent(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _objects(root: Path) -> Iterator[Path]:
    """Every object file under the store root (temp files of puts in progress excluded)."""
    if not root.exists():
        return
    for directory, dirs, files in os.walk(root):
        if Path(directory) == root:
            dirs[:] = [d for d in dirs if d != TEMP_DIR]
        for name in files:
            yield Path(directory) / name


def copy_object(source: Path, target: Path, target_root: Path) -> int:
    """One object with its mode and its metadata (the `user.callvault` xattr, or, where the
    target has no user xattrs, the sidecar the local store reads instead). Bytes copied; 0
    when the object vanished meanwhile (it moved on: the database copy says where)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(source, target)
        os.chmod(target, stat.S_IMODE(source.stat().st_mode))
    except FileNotFoundError:
        target.unlink(missing_ok=True)
        return 0
    try:
        described = os.getxattr(source, XATTR)
    except OSError:
        described = None  # described by a sidecar (copied as a file) or not at all
    if described is not None:
        try:
            os.setxattr(target, XATTR, described)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.E2BIG, errno.ENOSPC):
                raise
            key = target.relative_to(target_root).as_posix()
            sidecar = target_root / META_DIR / f"{key}.json"
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            sidecar.write_bytes(described)
    return target.stat().st_size


def _copy_new_objects(source_root: Path, target_root: Path, done: set[str]) -> tuple[int, int]:
    count = size = 0
    for source in _objects(source_root):
        relative = source.relative_to(source_root).as_posix()
        if relative in done:
            continue
        copied = copy_object(source, target_root / relative, target_root)
        if copied or (target_root / relative).exists():
            done.add(relative)
            count += 1
            size += copied
    return count, size


def online_copy(database: Path, target: Path) -> None:
    """SQLite's online backup API: one step, under one read transaction, so the copy is the
    database as of one moment while `serve` keeps writing (WAL readers do not block writers)."""
    target.unlink(missing_ok=True)
    source = sqlite3.connect(database, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy, pages=-1)
            # a self-contained file: no -wal beside it
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        source.close()
    os.chmod(target, 0o600)


def _missing_objects(database: Path, store_root: Path) -> list[str]:
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute(NEEDS_OBJECT).fetchall()
    finally:
        connection.close()
    return [rid for rid, key in rows if not (store_root / key).is_file()]


def _prune_unreferenced(database: Path, store_root: Path) -> tuple[int, int]:
    """Drop copied objects no row of the database copy needs any more (staging copies of
    recordings that reached the customer's bucket while the backup ran); (count, bytes)."""
    connection = sqlite3.connect(database)
    try:
        wanted = {key for _, key in connection.execute(NEEDS_OBJECT)}
    finally:
        connection.close()
    count = size = 0
    for path in list(_objects(store_root)):
        relative = path.relative_to(store_root).as_posix()
        if relative.startswith(f"{META_DIR}/"):
            key = relative.removeprefix(f"{META_DIR}/").removesuffix(".json")
        else:
            key = relative
        if key not in wanted:
            if not relative.startswith(f"{META_DIR}/"):
                count, size = count + 1, size + path.stat().st_size
            path.unlink()
    return count, size


def _count_recordings(database: Path) -> int:
    connection = sqlite3.connect(database)
    try:
        return int(connection.execute("SELECT count(*) FROM recordings").fetchone()[0])
    finally:
        connection.close()


def _copy_database_and_store(
    database: Path, store_root: Path | None, destination: Path
) -> tuple[int, int, list[str]]:
    """The database and the local store's objects it refers to, copied in rounds while the
    service runs: objects, bytes, and the recordings whose object still was not copied."""
    target_store = destination / STORE_DIR
    target_store.mkdir(mode=0o700, exist_ok=True)
    done: set[str] = set()
    objects = size = 0
    if store_root is not None:
        objects, size = _copy_new_objects(store_root, target_store, done)
    missing: list[str] = []
    for _ in range(ROUNDS):
        online_copy(database, destination / DATABASE_FILE)
        if store_root is None:
            break
        more, more_size = _copy_new_objects(store_root, target_store, done)
        objects, size = objects + more, size + more_size
        missing = _missing_objects(destination / DATABASE_FILE, target_store)
        if not missing:
            break
    if store_root is not None:
        pruned, pruned_size = _prune_unreferenced(destination / DATABASE_FILE, target_store)
        objects, size = objects - pruned, size - pruned_size
    return objects, size, missing


def _copy_secrets(data_dir: Path, destination: Path) -> list[str]:
    secrets = []
    for name in SECRET_FILES:
        source = data_dir / name
        if source.exists():
            shutil.copy2(source, destination / name)  # mode 0600 kept
            secrets.append(name)
    return secrets


def backup(
    data_dir: Path, database_url: str, default_store_url: str, destination: Path, version: str
) -> BackupResult:
    started = time.monotonic()
    database = sqlite_path(database_url)
    if not database.exists():
        raise BackupError(f"no database at {database}")
    if not _empty_or_absent(destination):
        raise BackupError(f"{destination} exists and is not empty: give a new directory")
    destination.mkdir(parents=True, exist_ok=True)
    os.chmod(destination, 0o700)

    store_root = local_store_root(default_store_url)
    objects, size, missing = _copy_database_and_store(database, store_root, destination)
    secrets = _copy_secrets(data_dir, destination)
    result = BackupResult(
        path=destination,
        recordings=_count_recordings(destination / DATABASE_FILE),
        objects=objects,
        bytes=size + (destination / DATABASE_FILE).stat().st_size,
        seconds=time.monotonic() - started,
        missing=missing,
    )
    manifest = {
        "format": FORMAT,
        "callvault_version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "database": DATABASE_FILE,
        "default_store": STORE_DIR if store_root is not None else default_store_url,
        "secrets": secrets,
        "recordings": result.recordings,
        "objects": result.objects,
        "bytes": result.bytes,
        # recordings that moved on while the backup ran, whose object is not in it
        "missing_objects": missing,
    }
    manifest_path = destination / MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    os.chmod(manifest_path, 0o600)
    return result


# the job tables (the database is the queue): their leases
RELEASE_LEASES = (
    "UPDATE recordings SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL",
    "UPDATE webhook_events SET lease_owner = NULL, lease_until = NULL "
    "WHERE lease_owner IS NOT NULL",
)


def release_leases(database: Path) -> int:
    """Jobs leased when the backup was taken belong to a process that will never come back:
    released, the restored instance takes them at once instead of after the lease (60 s)."""
    connection = sqlite3.connect(database)
    try:
        with connection:
            return sum(connection.execute(sql).rowcount for sql in RELEASE_LEASES)
    finally:
        connection.close()


def restore(source: Path, data_dir: Path) -> dict[str, object]:
    """Copy a backup into a new data dir (refused when it exists and is not empty)."""
    manifest_path = source / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{source} is not a callvault backup (no {MANIFEST})")
    manifest: dict[str, object] = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r} is not {FORMAT}")
    if not _empty_or_absent(data_dir):
        raise BackupError(f"{data_dir} exists and is not empty: restore into a new directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    shutil.copy2(source / DATABASE_FILE, data_dir / DATABASE_FILE)
    secrets = manifest.get("secrets", [])
    for name in secrets if isinstance(secrets, list) else []:
        shutil.copy2(source / str(name), data_dir / str(name))
    release_leases(data_dir / DATABASE_FILE)
    store = source / STORE_DIR
    target_store = data_dir / STORE_DIR
    target_store.mkdir(mode=0o700, exist_ok=True)
    for object_path in _objects(store):
        relative = object_path.relative_to(store)
        copy_object(object_path, target_store / relative, target_store)
    return manifest
