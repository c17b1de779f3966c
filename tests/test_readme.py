"""The README's commands, run as written (issue 26): the quickstart's API calls against a
`callvault serve` (what `make run` starts), and "Try custom storage and webhooks on your
machine" from its first line to its last — SeaweedFS from the venv, a bucket, the receiver that
checks signatures, a recording that lands in the bucket.

Each runs in a network namespace of its own (only loopback, up): the README's fixed ports
(8000, 8333, 9000, …) cannot collide with anything else on the machine, and nothing can reach
beyond it. Needs root for `unshare --net`, as the fault tests do.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from tests.faults.cluster import clean_environment

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TRY_HEADING = "## Try custom storage and webhooks on your machine"


def bash_blocks(after: str) -> list[str]:
    """The ```bash blocks of the README section that starts with heading `after`."""
    text = README.read_text()
    start = text.index(after)
    end = text.find("\n## ", start + len(after))
    return re.findall(r"```bash\n(.*?)```", text[start : end if end > 0 else None], re.DOTALL)


def run_isolated(
    script: str, tmp_path: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`script` with `bash -e` from the repository's root, in a new network namespace."""
    path = tmp_path / "readme.sh"
    path.write_text(script)
    env = clean_environment()
    env.pop("CALLVAULT_ALLOW_PRIVATE_NETWORKS")  # the README sets what it needs
    env["TMPDIR"] = str(tmp_path)  # mktemp -d lands here, removed with tmp_path
    process = subprocess.Popen(
        ["unshare", "--net", "--", "bash", "-c", 'ip link set lo up && exec bash -e "$0"', path],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its background jobs are killed with it, whatever happens
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        raise AssertionError(f"the README's commands did not finish:\n{out[-5000:]}") from None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(process.args, process.returncode, out, "")


def logs_of(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {log}\n{log.read_text()[-3000:]}" for log in sorted(tmp_path.rglob("*.log"))
    )


def test_try_custom_storage_and_webhooks_as_written(tmp_path: Path) -> None:
    (block,) = bash_blocks(TRY_HEADING)
    done = run_isolated(block, tmp_path)
    assert done.returncode == 0, done.stdout[-5000:] + logs_of(tmp_path)
    out = done.stdout
    assert '"status":"ok"' in out, out  # the validate probe wrote to the bucket
    assert "verified call.recording.saved" in out, out  # signed, checked by the receiver
    assert '"location":"custom"' in out and '"state":"stored"' in out, out
    # its download link is a presigned GET on the SeaweedFS bucket
    assert '"download_urls":{"wav":"http://127.0.0.1:8333/recordings/' in out, out


def test_the_quickstart_commands_as_written(tmp_path: Path) -> None:
    """The quickstart's second block, with what it asks the reader to fill in filled in: the
    API key it printed (`export KEY=...`) and the application id (`<application id>`)."""
    blocks = bash_blocks("## Quickstart")
    # blocks[0] is `make run` / `make test`: this suite is the second, the first starts serve
    commands = blocks[1]
    assert "export KEY=..." in commands and "<application id>" in commands
    commands = commands.replace(
        'accounts create "Acme" --json',
        'accounts create "Acme" --json | tee $QS/account.json',
    )
    commands = commands.replace(
        "export KEY=...", "export KEY=$(json '[\"api_key\"]' < $QS/account.json)"
    )
    commands = commands.replace("<application id>", "$APP")
    # the application's id, from the answer of the POST that created it
    capture = ' | tee $QS/app.json\nAPP=$(json \'["data"]["id"]\' < $QS/app.json); echo\n'
    commands = re.sub(
        r"(curl -s -X POST http://127.0.0.1:8000/v2/call_control_applications.*?\}')\n",
        lambda match: match[1] + capture,
        commands,
        flags=re.DOTALL,
    )
    script = "\n".join(
        [
            "export QS=$(mktemp -d) CALLVAULT_DATA_DIR=$(mktemp -d)/data",
            'json() { .venv/bin/python -c "import json, sys; print(json.load(sys.stdin)$1)"; }',
            # what `make run` runs, once the venv is set up
            ".venv/bin/callvault serve > $QS/callvault.log 2>&1 &",
            "until curl -sf http://127.0.0.1:8000/ready > /dev/null; do sleep 1; done",
            commands,
            "kill $(jobs -p)",
        ]
    )
    done = run_isolated(script, tmp_path)
    assert done.returncode == 0, done.stdout[-5000:] + logs_of(tmp_path)
    out = done.stdout
    assert '{"status":"ok"}' in out  # /health
    assert '"record_type":"call_control_application"' in out
    # the credentials GET: stored, the secret masked to its last 4 characters
    assert '"backend":"s3"' in out and '"bucket":"my-recordings"' in out, out
    assert '"aws_secret_access_key":"' in out and '"aws_secret_access_key":"..."' not in out
