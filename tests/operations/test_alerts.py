"""deploy/prometheus/alerts.yml and deploy/grafana/callvault.json (issue 25).

- `promtool check rules` and `promtool test rules` (deploy/prometheus/alerts_test.yml, one
  firing and one quiet case per alert), with Debian's prometheus package (Makefile ops-tools).
- End to end: a real Prometheus scrapes a real `callvault serve` every second with the rules
  (the backlog threshold and `for:` shortened in a test-only copy); the webhook receiver is
  stopped, the next recording's webhook waits, and CallvaultBacklogOld fires.
- The dashboard and the rules name only metrics that `/metrics` really exports.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.faults.cluster import Processes, clean_environment, run_cli
from tests.faults.wavs import noise_wav
from tests.receiver import WebhookReceiver
from tests.servers import REPO_ROOT, free_port
from tests.worker.flow import ingest_metadata

RULES = REPO_ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = REPO_ROOT / "deploy/prometheus/alerts_test.yml"
DASHBOARD = REPO_ROOT / "deploy/grafana/callvault.json"
METRIC = re.compile(r"\bcallvault_[a-z0-9_]+")


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool missing: `make ops-tools` installs Debian's prometheus"
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(RULES))
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    defined = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert tested == defined  # every alert has its unit test


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str, rules: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: `make ops-tools` installs Debian's prometheus"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": "callvault", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def alerts(url: str) -> dict[str, str]:
    """alertname -> state (pending / firing) of the alerts Prometheus holds now."""
    try:
        answer = httpx.get(f"{url}/api/v1/alerts", timeout=2)
    except httpx.HTTPError:
        return {}
    if answer.status_code != 200:
        return {}
    return {a["labels"]["alertname"]: a["state"] for a in answer.json()["data"]["alerts"]}


def wait_until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_backlog_alert_fires_when_the_webhook_receiver_stops(tmp_path: Path) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for rule in rules["groups"][0]["rules"]:
        if rule["alert"] == "CallvaultBacklogOld":  # 15 min / 5 min would not fit a test
            rule["expr"] = rule["expr"].replace("> 15 * 60", "> 3")
            rule["for"] = "2s"
    test_rules = tmp_path / "alerts.yml"
    test_rules.write_text(yaml.safe_dump(rules))

    env = clean_environment(
        CALLVAULT_DATA_DIR=str(tmp_path / "data"),
        CALLVAULT_WEBHOOK_SCHEDULE=",".join(["1"] * 60),
    )
    account = json.loads(run_cli(env, "accounts", "create", "alerts", "--json"))
    token = (tmp_path / "data" / "ingest.token").read_text().strip()
    receiver = WebhookReceiver().start()
    with Processes(tmp_path / "logs") as processes:
        serve = processes.api("serve", env).start().wait_ready()
        api = httpx.Client(
            base_url=serve.url,
            headers={"Authorization": f"Bearer {account['api_key']}"},
            timeout=30,
        )
        created = api.post(
            "/v2/call_control_applications",
            json={
                "application_name": "alerts",
                "webhook_event_url": receiver.url(),
                "webhook_api_version": "2",
            },
        )
        assert created.status_code == 201, created.text
        connection_id = str(created.json()["data"]["id"])

        def ingest_one() -> None:
            answer = httpx.post(
                f"{serve.url}/internal/v1/recordings",
                files={
                    "metadata": (None, json.dumps(ingest_metadata(connection_id))),
                    "audio": ("r.wav", noise_wav(0.2), "audio/wav"),
                },
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text

        with prometheus(tmp_path, f"127.0.0.1:{serve.port}", test_rules) as url:
            ingest_one()
            wait_until(lambda: len(receiver.received()) == 1, 30, "first webhook not delivered")

            def scraped_and_evaluated() -> bool:
                try:
                    query = httpx.get(
                        f"{url}/api/v1/query",
                        params={"query": "callvault_webhook_events_pending"},
                        timeout=2,
                    ).json()
                except (httpx.HTTPError, ValueError):
                    return False
                results = query.get("data", {}).get("result", [])
                return bool(results) and results[0]["value"][1] == "0"

            wait_until(scraped_and_evaluated, 60, "Prometheus never scraped callvault")
            time.sleep(4)  # longer than threshold + for: with nothing waiting it stays quiet
            assert "CallvaultBacklogOld" not in alerts(url)

            receiver.stop()
            ingest_one()  # its webhook now meets a closed port and waits for a retry
            wait_until(
                lambda: alerts(url).get("CallvaultBacklogOld") == "firing",
                60,
                f"CallvaultBacklogOld did not fire: {alerts(url)}\n{processes.logs()}",
            )
            assert "CallvaultNotReady" not in alerts(url)
        serve.terminate()


def exported_names(metrics_text: str) -> set[str]:
    """Every series name /metrics can show: the families it declares, with their suffixes."""
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "counter":
                names.update({f"{name}_total", f"{name}_created"})
            if kind == "histogram":
                names.update(f"{name}_{s}" for s in ("bucket", "count", "sum", "created"))
    return names


def test_dashboard_and_rules_name_only_exported_metrics(tmp_path: Path) -> None:
    env = clean_environment(CALLVAULT_DATA_DIR=str(tmp_path / "data"))
    with Processes(tmp_path / "logs") as processes:
        serve = processes.api("serve", env).start().wait_ready()
        scraped = httpx.get(f"{serve.url}/metrics", timeout=10)
        serve.terminate()
    assert scraped.status_code == 200
    exported = exported_names(scraped.text)
    assert "callvault_data_dir_free_bytes" in exported and "callvault_ready" in exported

    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(expressions) >= 8
    for wanted in ("throughput", "backlog age", "failures by reason", "webhook latency"):
        assert any(wanted in p["title"].lower() for p in dashboard["panels"]), wanted
    rules = yaml.safe_load(RULES.read_text())
    expressions += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    named = {name for expr in expressions for name in METRIC.findall(expr)}
    assert named, "no callvault metric named at all"
    assert named <= exported, f"not exported by /metrics: {sorted(named - exported)}"
    # every dashboard query reads at least one of callvault's own metrics
    assert all(METRIC.search(e) for e in expressions if "up{" not in e)
