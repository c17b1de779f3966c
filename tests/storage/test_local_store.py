"""The embedded default store: durability, key safety, metadata (xattr, sidecar fallback),
moving a received file in."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from callvault.storage import LocalStore, StorageError, StorageErrorKind
from callvault.storage.local import TEMP_DIR, XATTR

KEY = "acct/2022-02-02/leg-1643805460.wav"


async def test_put_lands_atomically_with_its_metadata(
    local_store: LocalStore, tmp_path: Path
) -> None:
    source = tmp_path / "in.wav"
    source.write_bytes(b"RIFF" + os.urandom(3000))
    await local_store.put_file(KEY, source, content_type="audio/wav", metadata={"sha256": "ab"})

    target = local_store.path_for(KEY)
    assert target == local_store.root / "acct" / "2022-02-02" / "leg-1643805460.wav"
    assert target.read_bytes() == source.read_bytes()
    assert source.exists()  # copied, not moved: the caller owns its file
    # on the file itself (an extended attribute), no sidecar
    assert json.loads(os.getxattr(target, XATTR)) == {
        "content_type": "audio/wav",
        "metadata": {"sha256": "ab"},
    }
    assert not (local_store.root / ".callvault-meta").exists()
    info = await local_store.head(KEY)
    assert info is not None
    assert (info.size, info.content_type, info.metadata) == (3004, "audio/wav", {"sha256": "ab"})
    # no temp files left next to the object
    assert list((local_store.root / TEMP_DIR).iterdir()) == []


async def test_bytes_put_lands_atomically_with_its_metadata(local_store: LocalStore) -> None:
    data = b"RIFF" + os.urandom(3000)
    await local_store.put_file(KEY, data, content_type="audio/wav", metadata={"sha256": "ab"})
    target = local_store.path_for(KEY)
    assert target.read_bytes() == data
    assert json.loads(os.getxattr(target, XATTR)) == {
        "content_type": "audio/wav",
        "metadata": {"sha256": "ab"},
    }
    assert list((local_store.root / TEMP_DIR).iterdir()) == []


async def test_failed_bytes_put_leaves_nothing(
    local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = os.fsync
    written: list[int] = []

    def disk_full(fd: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return fsync(fd)  # directories: as usual
        written.append(os.fstat(fd).st_size)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageError) as caught:
        await local_store.put_file(KEY, b"x" * 10, content_type="audio/wav", metadata={})
    assert written == [10]  # the bytes reached the temp file; its fsync failed before the rename
    assert caught.value.kind is StorageErrorKind.TRANSIENT
    assert not local_store.path_for(KEY).exists()
    assert list((local_store.root / TEMP_DIR).iterdir()) == []


async def test_move_renames_the_file_into_place(local_store: LocalStore, tmp_path: Path) -> None:
    source = local_store.root.parent / "incoming-file"  # same filesystem as the store
    data = b"RIFF" + os.urandom(3000)
    source.write_bytes(data)
    inode = source.stat().st_ino
    await local_store.move_file(KEY, source, content_type="audio/wav", metadata={"sha256": "cd"})
    target = local_store.path_for(KEY)
    assert not source.exists()
    assert target.stat().st_ino == inode  # renamed, not copied
    assert target.read_bytes() == data
    info = await local_store.head(KEY)
    assert info is not None
    assert (info.content_type, info.metadata) == ("audio/wav", {"sha256": "cd"})


async def test_without_xattrs_the_sidecar_holds_the_metadata(
    local_store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", unsupported)
    source = tmp_path / "in.wav"
    source.write_bytes(b"RIFF")
    await local_store.put_file(KEY, source, content_type="audio/wav", metadata={"sha256": "ef"})
    sidecar = local_store.root / ".callvault-meta" / f"{KEY}.json"
    assert json.loads(sidecar.read_text()) == {
        "content_type": "audio/wav",
        "metadata": {"sha256": "ef"},
    }
    info = await local_store.head(KEY)
    assert info is not None
    assert (info.content_type, info.metadata) == ("audio/wav", {"sha256": "ef"})
    await local_store.delete(KEY)
    assert not sidecar.exists()


async def test_failed_copy_leaves_nothing(
    local_store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.wav"
    source.write_bytes(b"x" * 10)

    def disk_full(src: object, dst: object, length: int = 0) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(StorageError) as caught:
        await local_store.put_file(KEY, source, content_type="audio/wav", metadata={})
    assert caught.value.kind is StorageErrorKind.TRANSIENT
    assert str(caught.value).endswith("No space left on device")
    assert not local_store.path_for(KEY).exists()
    assert list((local_store.root / TEMP_DIR).iterdir()) == []


async def test_head_without_sidecar_still_reports_the_object(
    local_store: LocalStore,
) -> None:
    target = local_store.path_for(KEY)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"12345")
    info = await local_store.head(KEY)
    assert info is not None
    assert (info.size, info.content_type, info.metadata) == (5, None, {})


async def test_delete_removes_the_object(local_store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "in.wav"
    source.write_bytes(b"data")
    await local_store.put_file(KEY, source, content_type="audio/wav", metadata={})
    await local_store.delete(KEY)
    assert not local_store.path_for(KEY).exists()
    assert not (local_store.root / ".callvault-meta" / f"{KEY}.json").exists()
    await local_store.delete(KEY)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../outside",
        "acct/../../outside",
        "acct//leg",
        "acct/./leg",
        ".callvault-meta/acct/x.json",
        "acct/.callvault-tmp-123",
        "acct\\leg",
        "acct/leg\x00",
    ],
)
async def test_unsafe_keys_are_refused(local_store: LocalStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        local_store.path_for(key)
    source = tmp_path / "in"
    source.write_bytes(b"x")
    with pytest.raises(ValueError):
        await local_store.put_file(key, source, content_type="audio/wav", metadata={})
    with pytest.raises(ValueError):
        await local_store.signed_get_url(key, 600)
    assert not (tmp_path / "outside").exists()


def test_backend_and_bucket(local_store: LocalStore) -> None:
    assert local_store.backend == "local"
    assert Path(local_store.bucket) == local_store.root


def test_empty_link_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalStore(tmp_path, "https://vault.test", b"")
