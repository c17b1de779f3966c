"""Issue 21's hole, closed: a customer's storage endpoint cannot lead callvault inside.

`egress_scenario.py` plays the attack in a private network namespace (its docstring says how):
a hostile endpoint redirects every request to a subdomain that resolves to 127.0.0.1, or to
127.0.0.1 itself, and a rebinding name answers a public address, then loopback. Against the code
before the egress guard, the internal service answered HEAD, GET and DELETE (and the rebinding
PUT); with the guard, nothing reaches it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOSTS = """127.0.0.1 localhost
11.22.33.44 evil.test acct.evil.test gcs.evil.test
127.0.0.1 sub.evil.test
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a private network namespace",
)


def play(workdir: Path) -> dict:
    (workdir / "hosts").write_text(HOSTS)
    (workdir / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    (workdir / "nsswitch.conf").write_text("hosts: files dns\n")
    inside = (
        f"mount --bind {workdir}/hosts /etc/hosts && "
        f"mount --bind {workdir}/resolv.conf /etc/resolv.conf && "
        f"mount --bind {workdir}/nsswitch.conf /etc/nsswitch.conf && "
        "ip link set lo up && ip addr add 11.22.33.44/32 dev lo && "
        f"exec {sys.executable} -m tests.security.egress_scenario {workdir}"
    )
    done = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", inside],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_no_redirect_or_rebinding_reaches_an_internal_service(tmp_path):
    result = play(tmp_path)
    cases = result["cases"]
    # every store (s3-generic by name and rebinding, azure, gcs) x two targets x five operations
    assert len(cases) == 4 * 2 * 5
    assert result["internal_hits"] == [], result["internal_hits"]
    assert not [c for c in cases if "internal-secret" in c["outcome"]]
    # every read, delete and probe failed; none timed out waiting on something
    assert not [c for c in cases if c["outcome"] == "timed out"], cases
    for case in cases:
        if case["operation"] in ("head", "get", "delete", "put"):
            assert case["outcome"].startswith("error"), case
    # and it is the guard that said no, for every client library
    refused = {c["case"].split(" -> ")[0] for c in cases if "endpoint refused" in c["outcome"]}
    assert refused == {
        "s3-generic subdomain",
        "s3-generic rebinding",
        "azure subdomain",
        "gcs subdomain",
    }, cases
