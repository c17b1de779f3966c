"""`make image`: build localhost/callvault:<version> and :latest from this working tree with no
registry and no network inside the build (docs/deploy.md, "Building the image").

The Containerfile is the one recipe; this script only prepares its two inputs offline:

1. the base image, `localhost/callvault-base:bookworm-<key>`: Debian bookworm from the machine's
   own apt mirror (`debootstrap --variant=minbase` with python3, python3-venv, ca-certificates),
   imported into podman. Built once and reused while its inputs (the key) stay the same.
2. the wheels, in `image/wheels/`: `deps/` downloaded by pip on the host for the image's Python
   (cp311, manylinux x86_64) from the pinned constraints.txt, reused while the key of the
   constraints and the runtime dependencies stays the same; `app/` the project's own wheel,
   rebuilt every time but replaced only when its bytes change (so the layer cache holds).

then runs `podman build --network none --format docker` (docker format: OCI images drop the
HEALTHCHECK). Podman runs with a private containers.conf (runc, cgroupfs, ulimits no higher than
this shell's hard limits: crun and raised rlimits fail on this kind of machine), written next to
the wheels; `podman_environment()` gives it to anyone running the image here (the image test).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/callvault"
BASE_REPOSITORY = "localhost/callvault-base"
WHEELS = ROOT / "image" / "wheels"
STATE = ROOT / "image" / ".state"  # generated: containers.conf, the wheels' key, the image id
IMAGE_ID_FILE = STATE / "image-id"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# bump when the way the base is made changes (what is removed from the rootfs, …)
BASE_RECIPE = "2"
# what a slim image leaves out of the rootfs: package caches and lists, man pages, message
# translations, logs (and docs but their copyright files)
SLIM_REMOVE = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "var/log/*.log",
)
# the image's Python: Debian bookworm's python3 (3.11), glibc 2.36
WHEEL_PLATFORM = [
    "--only-binary=:all:",
    "--python-version", "3.11",
    "--implementation", "cp",
    "--abi", "cp311",
    "--platform", "manylinux2014_x86_64",
    "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux_2_28_x86_64",
]  # fmt: skip
# wheels built from the working tree carry this date: the same sources give the same bytes
SOURCE_DATE_EPOCH = "315532800"
LOCK = Path(tempfile.gettempdir()) / "callvault-image.lock"


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


# --------------------------------------------------------------------------------------------
# podman on this machine


def containers_conf() -> Path:
    """The private containers.conf (reference: runc, cgroupfs, ulimits within the hard limits)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1024 * 1024 if nofile == resource.RLIM_INFINITY else nofile
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    text = (
        "# written by image/build.py: podman on a machine without systemd cgroups\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    path = STATE / "containers.conf"
    if not path.exists() or path.read_text() != text:
        STATE.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def podman_environment() -> dict[str, str]:
    """The environment for podman commands here (an existing CONTAINERS_CONF wins)."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(containers_conf()))
    return env


def podman(*args: str, capture: bool = False, **kwargs: object) -> str:
    done = run("podman", *args, env=podman_environment(), capture_output=capture, **kwargs)
    return done.stdout if capture else ""


def image_exists(ref: str) -> bool:
    return (
        subprocess.run(
            ["podman", "image", "exists", ref], env=podman_environment(), check=False
        ).returncode
        == 0
    )


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One build at a time on this machine (worktrees share podman's image store)."""
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------------------------
# 1. the base image


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (DEBIAN_MIRROR overrides)."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in deb822.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if re.match(r"^[A-Za-z-]+:", line)
            )
            suites = fields.get("Suites", "").split()
            if SUITE in suites and "URIs" in fields:
                return fields["URIs"].split()[0]
    for sources in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if sources.exists():
            for line in sources.read_text().splitlines():
                parts = line.split()
                if parts[:1] == ["deb"] and SUITE in parts:
                    return next(p for p in parts[1:] if "://" in p)
    raise SystemExit(f"no apt source for {SUITE} found: set DEBIAN_MIRROR")


def base_tag() -> str:
    mirror = apt_mirror()
    key = hashlib.sha256(
        json.dumps([BASE_RECIPE, SUITE, "minbase", BASE_PACKAGES, mirror]).encode()
    ).hexdigest()[:12]
    return f"{BASE_REPOSITORY}:{SUITE}-{key}"


def build_base(tag: str) -> None:
    mirror = apt_mirror()
    log(f"building the base {tag} with debootstrap from {mirror} (about a minute, once)")
    with tempfile.TemporaryDirectory(prefix="callvault-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
            stdout=subprocess.DEVNULL,
        )
        for pattern in SLIM_REMOVE:
            for path in rootfs.glob(pattern):
                if path.name == "locale.alias":
                    continue
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
            "import",
            "--change", "CMD /bin/bash",
            "--message", f"debootstrap {SUITE} minbase + {' '.join(BASE_PACKAGES)}",
            "-", tag,
            stdin=tar.stdout, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if tar.wait() != 0:
            raise SystemExit("tar of the rootfs failed")


def ensure_base() -> str:
    tag = base_tag()
    if image_exists(tag):
        log(f"base {tag}: reused")
        return tag
    build_base(tag)
    # bases of earlier inputs are not used anymore
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPOSITORY, capture=True)
    for old in set(listed.split()) - {tag}:
        subprocess.run(["podman", "rmi", old], env=podman_environment(), check=False)
    return tag


# --------------------------------------------------------------------------------------------
# 2. the wheels


def project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return data


def wheels_key() -> str:
    return hashlib.sha256(
        json.dumps(
            [(ROOT / "constraints.txt").read_text(), project()["dependencies"], WHEEL_PLATFORM]
        ).encode()
    ).hexdigest()


def wheel_builder() -> Path:
    """A Python with the project's build backend, made once (pip's build isolation would
    install it again on every build: 5 s)."""
    env = STATE / "wheel-builder"
    python = env / "bin" / "python"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    stamp = env / "requires.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != requires:
        run(sys.executable, "-m", "venv", "--clear", str(env))
        run(str(python), "-m", "pip", "install", "--quiet", *requires)
        stamp.write_text(json.dumps(requires))
    return python


def build_app_wheel() -> None:
    """The project's wheel from a clean copy of its sources (no build/ or egg-info left here)."""
    app = WHEELS / "app"
    with tempfile.TemporaryDirectory(prefix="callvault-wheel-") as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        shutil.copytree(
            ROOT / "src",
            source / "src",
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
        )
        out = Path(tmp) / "out"
        run(
            str(wheel_builder()), "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--wheel-dir", str(out), str(source),
            env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH},
        )  # fmt: skip
        [wheel] = out.glob("callvault-*.whl")
        current = app / wheel.name
        if current.exists() and current.read_bytes() == wheel.read_bytes():
            log(f"project wheel {wheel.name}: unchanged")
            return
        if app.exists():
            shutil.rmtree(app)
        app.mkdir(parents=True)
        shutil.copy2(wheel, current)
        log(f"project wheel {wheel.name}: rebuilt")


def ensure_wheels() -> None:
    build_app_wheel()
    deps = WHEELS / "deps"
    key_file = STATE / "wheels.key"
    key = wheels_key()
    if deps.is_dir() and key_file.exists() and key_file.read_text() == key:
        log(f"dependency wheels: reused ({len(list(deps.glob('*.whl')))} wheels)")
        return
    log("dependency wheels: downloading for cp311 manylinux x86_64 from constraints.txt")
    if deps.exists():
        shutil.rmtree(deps)
    [app_wheel] = (WHEELS / "app").glob("callvault-*.whl")
    run(
        sys.executable, "-m", "pip", "download", "--quiet", *WHEEL_PLATFORM,
        "-c", str(ROOT / "constraints.txt"), "-d", str(deps), str(app_wheel),
    )  # fmt: skip
    (deps / app_wheel.name).unlink(missing_ok=True)  # pip download copies the named wheel too
    STATE.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)


# --------------------------------------------------------------------------------------------
# 3. the image


def build_image(base: str) -> list[str]:
    version = str(project()["version"])
    tags = [f"{IMAGE}:{version}", f"{IMAGE}:latest"]
    podman(
        "build",
        "--network", "none",  # everything the build needs is in the context already
        "--format", "docker",  # keeps HEALTHCHECK (the OCI format has no field for it)
        "--layers",
        "--pull-never",
        # what this working tree built, whatever another one tags :latest afterwards
        "--iidfile", str(IMAGE_ID_FILE),
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"VERSION={version}",
        *(arg for tag in tags for arg in ("--tag", tag)),
        "--file", str(ROOT / "Containerfile"),
        str(ROOT),
    )  # fmt: skip
    return tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-conf", action="store_true", help="print CONTAINERS_CONF")
    args = parser.parse_args()
    if args.print_conf:
        print(containers_conf())
        return
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: `make image-tools` installs them")
    started = time.monotonic()
    with exclusive():
        base = ensure_base()
        ensure_wheels()
        tags = build_image(base)
    built = IMAGE_ID_FILE.read_text().strip()
    size = podman("image", "inspect", "--format", "{{.Size}}", built, capture=True).strip()
    log(
        f"built {' and '.join(tags)} in {time.monotonic() - started:.0f} s, "
        f"{int(size) / 1e6:.0f} MB"
    )


if __name__ == "__main__":
    main()
