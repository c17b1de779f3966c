"""The embedded default store: a directory on this machine, links signed by callvault itself.

- Durable puts: the file (or the bytes given) is copied to a temp file (same filesystem),
  fsynced, renamed into place and the directory fsynced, so a crash leaves either the whole
  object or none (ingest answers 202 only after this).
- Temp files are written in `{root}/.callvault-tmp/`, named after their process, so the temp
  file of a put cut short by kill -9 is removed by the next process (callvault/scratch.py).
- Content type and metadata live with the object, in an extended attribute (`user.callvault`,
  JSON) set on the file before it is fsynced and renamed into place, so `head` of a visible
  object always finds them, with no second file and no extra fsync (issue 14; the recording's
  row holds them too). On a filesystem without user xattrs they go to a JSON sidecar under
  `{root}/.callvault-meta/{key}.json`, written durably before the rename (as every object did
  before); `head` reads either.
- `move_file` (ingest): the received file, on the same filesystem, becomes the object by a
  rename — 2 fsyncs (file, directory) instead of a copy and 4 fsyncs.
- Reads go through obstore's LocalStore; a delete unlinks the file and its sidecar in one thread
  hop (the worker deletes every staging copy); `local_path` gives the HTTP layer the file
  to serve for `/v2/recording_files/{key}` after it has checked the link with `verify_link`,
  and the worker the file to upload to custom storage.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import obstore
from obstore.store import LocalStore as ObstoreLocalStore

from callvault.scratch import reclaim, temp_path
from callvault.storage.base import (
    ObjectInfo,
    ObjectStore,
    StorageError,
    StorageErrorKind,
    check_metadata,
)
from callvault.storage.signed_links import link_url

META_DIR = ".callvault-meta"
XATTR = "user.callvault"
TEMP_DIR = ".callvault-tmp"
_TEMP_PREFIX = ".callvault-tmp-"
_COPY_BUFFER = 1024 * 1024
READ_CHUNK = 1024 * 1024


class LocalStore(ObjectStore):
    backend = "local"
    checks_uploads = False  # a local copy: nothing on the way to corrupt it
    noun = "store"

    def __init__(self, root: Path, public_url: str, link_secret: bytes) -> None:
        if not link_secret:
            raise ValueError("link_secret must not be empty")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.bucket = str(self.root)
        self.public_url = public_url.rstrip("/")
        self._link_secret = link_secret
        self._store = ObstoreLocalStore(self.root)
        self._temp_dir = self.root / TEMP_DIR
        reclaim(self._temp_dir)  # puts of a process that was killed

    def path_for(self, key: str) -> Path:
        """The file that holds `key` (which may not exist). ValueError for unsafe keys."""
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or "\x00" in key
            or any(part in ("", ".", "..") for part in parts)
            or parts[0] in (META_DIR, TEMP_DIR)
            or parts[-1].startswith(_TEMP_PREFIX)
        ):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def local_path(self, key: str) -> Path:
        return self.path_for(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / f"{key}.json"

    async def put_file(
        self, key: str, source: Path | bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        await self._place(key, source, content_type, metadata, move=False)

    async def move_file(
        self, key: str, path: Path, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        """`put_file` that takes the file itself (renamed into place: it is gone afterwards);
        copied instead when it is on another filesystem."""
        await self._place(key, path, content_type, metadata, move=True)

    async def _place(
        self,
        key: str,
        source: Path | bytes,
        content_type: str,
        metadata: Mapping[str, str],
        *,
        move: bool,
    ) -> None:
        target = self.path_for(key)
        attributes = json.dumps(
            {"content_type": content_type, "metadata": check_metadata(metadata)}
        ).encode()
        if not isinstance(source, bytes):
            source = Path(source)
        try:
            await asyncio.to_thread(self._put_durably, source, target, attributes, key, move)
        except _MissingSource as missing:
            raise FileNotFoundError(missing.source) from None
        except OSError as exc:
            raise self._error(exc) from None

    def _put_durably(
        self, source: Path | bytes, target: Path, attributes: bytes, key: str, move: bool
    ) -> None:
        # checked in this thread hop rather than one of its own: a missing source is our own
        # bug (FileNotFoundError), not the store's (a StorageError)
        if isinstance(source, Path) and not source.is_file():
            raise _MissingSource(source)
        _make_dirs_durably(target.parent)

        def copy(out: BinaryIO) -> None:
            if isinstance(source, bytes):
                out.write(source)
            else:
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out, _COPY_BUFFER)
            out.flush()
            self._describe(out.fileno(), key, attributes)

        try:
            describe = lambda fd: self._describe(fd, key, attributes)  # noqa: E731
            moved = move and isinstance(source, Path) and _move_durably(source, target, describe)
            if not moved:
                # bytes, or a copy: written to a temp file, fsynced, renamed into place
                _write_durably(target, copy, self._temp_dir)
        except BaseException:
            # e.g. the disk filled up: no sidecar without its object (nothing partial is left)
            if not target.exists():
                self._meta_path(key).unlink(missing_ok=True)
            raise

    def _describe(self, fd: int, key: str, attributes: bytes) -> None:
        """Content type and metadata onto the file not yet in place (fsynced with it)."""
        try:
            os.setxattr(fd, XATTR, attributes)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.E2BIG, errno.ENOSPC):
                raise
            # no user xattrs here (or too large for one): the sidecar, durable before the rename
            _write_durably(self._meta_path(key), lambda out: out.write(attributes), self._temp_dir)
        else:
            # an older object's sidecar under this key would be stale now
            self._meta_path(key).unlink(missing_ok=True)

    async def head(self, key: str) -> ObjectInfo | None:
        target = self.path_for(key)

        def stat() -> ObjectInfo | None:
            try:
                size = target.stat().st_size
            except FileNotFoundError:
                return None
            described: dict[str, object] = {}
            try:
                described = json.loads(os.getxattr(target, XATTR))
            except (OSError, ValueError):
                try:
                    described = json.loads(self._meta_path(key).read_text())
                except (FileNotFoundError, ValueError):
                    # written by hand: the object is there, its type unknown
                    described = {}
            content_type = described.get("content_type")
            metadata = described.get("metadata")
            return ObjectInfo(
                size=size,
                content_type=content_type if isinstance(content_type, str) else None,
                metadata=dict(metadata) if isinstance(metadata, dict) else {},
            )

        try:
            return await asyncio.to_thread(stat)
        except OSError as exc:
            raise self._error(exc) from None

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        self.path_for(key)  # reject unsafe keys before touching the disk
        try:
            result = await obstore.get_async(self._store, key)
            async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)
        except FileNotFoundError:
            raise StorageError.build(
                StorageErrorKind.PERMANENT_NOT_FOUND,
                "local",
                self.bucket,
                "no such object",
                noun=self.noun,
            ) from None
        except Exception as exc:
            raise self._error(exc) from None

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        try:
            await asyncio.to_thread(_delete_with_sidecar, path, self._meta_path(key))
        except OSError as exc:
            raise self._error(exc) from None

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        if expires_in < 1:
            raise ValueError("expires_in must be positive")
        self.path_for(key)
        return link_url(self.public_url, self._link_secret, key, int(time.time()) + expires_in)

    def canonical_url(self, key: str) -> str:
        """A file:// URI: where the object lives (not a download link; see signed_get_url)."""
        return self.path_for(key).as_uri()

    def _error(self, exc: BaseException) -> StorageError:
        # disk full, permissions, I/O errors: the operator can fix them, so retrying helps
        name = getattr(exc, "strerror", None) or type(exc).__name__
        return StorageError.build(
            StorageErrorKind.TRANSIENT, "local", self.bucket, str(name), noun=self.noun
        )


def _delete_with_sidecar(path: Path, meta: Path) -> None:
    """The object, then its sidecar (objects described by one: no xattrs there, or written by
    an older version): a crash in between leaves an orphan sidecar, never an object without its
    content type. Both in one thread hop; a missing one is fine (idempotent)."""
    path.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)


class _MissingSource(Exception):
    """The file to put is not there (not an OSError: it must not read as the store's)."""

    def __init__(self, source: Path) -> None:
        super().__init__(str(source))
        self.source = source


def _write_durably(target: Path, fill: Callable[[BinaryIO], object], temp_dir: Path) -> None:
    """Write via temp file + fsync + rename + directory fsync (`temp_dir`: same filesystem)."""
    _make_dirs_durably(target.parent)
    temp = temp_path(temp_dir, suffix="")
    try:
        with temp.open("wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _move_durably(source: Path, target: Path, describe: Callable[[int], None]) -> bool:
    """Rename `source` to `target` durably (file fsynced, then the rename, then the
    directory fsynced); False, nothing done, when they are on different filesystems."""
    if source.stat().st_dev != target.parent.stat().st_dev:
        return False
    fd = os.open(source, os.O_RDWR)
    try:
        describe(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(source, target)
    _fsync_dir(target.parent)
    return True


def _make_dirs_durably(directory: Path) -> None:
    """mkdir -p, fsyncing each parent that gained an entry, so new directories survive a crash."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue  # a concurrent put made it
        _fsync_dir(new.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
