"""Every line a `callvault serve` writes is one JSON object — its own, uvicorn's start and stop
lines, and an error with its traceback as a field — one line per error (issue 26)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from callvault.logs import json_formatter, logging_config
from tests.conftest import free_port
from tests.faults.cluster import clean_environment
from tests.worker.flow import wait_until


async def test_every_line_of_a_run_with_a_forced_error_is_json(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = clean_environment(CALLVAULT_DATA_DIR=str(data_dir), CALLVAULT_LOG_LEVEL="info")
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        serve = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "callvault", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def answers() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    assert serve.poll() is None, log_path.read_text()  # ended: say why
                    return False

            await wait_until(answers, within=30, what="callvault serve")
            # the forced error: a table gone under the running server (a bug's stand-in)
            with sqlite3.connect(data_dir / "callvault.db") as db:
                db.execute("DROP TABLE accounts")
            response = await client.get(
                "/v2/call_control_applications", headers={"Authorization": "Bearer KEY-x"}
            )
            assert response.status_code == 500
    finally:
        serve.send_signal(signal.SIGTERM)
        await asyncio.to_thread(serve.wait, 30)

    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    events = [record["event"] for record in records]
    assert any("Uvicorn running" in event for event in events), events  # uvicorn's, as JSON
    errors = [record for record in records if record["level"] == "error"]
    assert len(errors) == 1, errors  # one line per error, not uvicorn's copy as well
    assert errors[0]["event"] == "unhandled error"
    assert "Traceback" in errors[0]["exception"] and "accounts" in errors[0]["exception"]


def test_a_library_record_is_one_json_line_with_its_traceback_as_a_field() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    logger = logging.getLogger("some.library")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.error("it failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "it failed" and record["logger"] == "some.library"
    assert "ValueError: boom\nsecond line" in record["exception"]
    # CALLVAULT_LOG_LEVEL=debug opens the libraries' lines too; else warnings and worse only
    assert logging_config(logging.DEBUG)["root"]["level"] == "DEBUG"
    assert logging_config(logging.INFO)["root"]["level"] == "WARNING"
    assert logging_config(logging.INFO)["loggers"]["uvicorn.error"]["level"] == "INFO"
    # never opened, debug included: their request logs hold STS keys and SAS signatures
    for name in ("botocore", "azure", "urllib3"):
        assert logging_config(logging.DEBUG)["loggers"][name]["level"] == "WARNING"
