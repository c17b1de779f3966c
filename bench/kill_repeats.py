"""Repeated webhook deliveries per worker kill (issue 24: the window between a receiver's 2xx
and its durable record).

    .venv/bin/python bench/kill_repeats.py [--recordings 150] [--workers 2] [--outage-secs 15]
                                           [--concurrency 8] [--json] [--src DIR]

A private PostgreSQL cluster (initdb + pg_ctl on a free port, `track_commit_timestamp = on`),
one `callvault serve --no-worker`, `--workers` `callvault worker`s, the default store and the
customer's bucket (s3-generic) on one SeaweedFS, a receiver that answers 200 and keeps every
request. K recordings are ingested at full throughput (concurrency C, each sent again until
taken). Once a fifth of them have a 2xx delivery the database is stopped (`pg_ctl stop -m
immediate`: clients see a crash) for `--outage-secs` and started again; once another tenth
have a 2xx after that and the first worker has logged a delivery of its own since the outage
(or 10 s later without one: `killed_delivering` false), it is killed with SIGKILL and
started again at once (kill and outage apart, so that each repeat can be put down to one of
them). When everything has converged:
- repeats: deliveries answered 2xx of an event already answered 2xx; each repeated event is
  put down to the kill or the outage by when its first 2xx came (within 5 s before the kill,
  or from 5 s before the stop to the start);
- second events: recordings with more than one `call.recording.saved` event id (must be 0);
- lost: accepted recordings not in the customer's bucket with the sha256 sent, or without a
  2xx delivery whose signature verifies (must be 0);
- 2xx -> durable record: the commit time of each 2xx attempt row
  (`pg_xact_commit_timestamp(xmin)`) minus its `finished_at`; the records the outage held
  back (answered before the start, committed after it) apart, and the records answered in
  the AFTER_OUTAGE_SECS after the start also on their own (the catch-up burst, where the kill
  falls);
- answered before the kill: 2xx deliveries the receiver answered in the KILL_EXPOSURE_SECS
  before the kill (how many rounds a kill could find between their 2xx and their record).
`--src DIR` runs callvault from another tree's src/ (a before/after pair).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from tests.faults.cluster import (
    CallvaultProcess,
    Processes,
    Sent,
    clean_environment,
    ingest_paced,
    list_bucket,
    query,
    read_object,
    run_cli,
    verify_signature,
)
from tests.faults.wavs import noise_wav
from tests.receiver import Delivery, WebhookReceiver
from tests.servers import PrivatePostgres, SeaweedFS
from tests.worker.flow import create_application, ingest_metadata, s3_generic, set_credentials

STAGING_BUCKET = "kill-staging"
CUSTOMER_BUCKET = "kill-customer"
CONVERGE_WITHIN = 240.0
# how long the kill waits for the worker to deliver after the outage before it kills anyway
KILL_WAIT_SECS = 10.0
# the catch-up burst after the database returns, whose record window is reported apart
AFTER_OUTAGE_SECS = 2.0
# how far before the kill a 2xx counts as exposed to it
KILL_EXPOSURE_SECS = 0.1


@dataclass
class Chaos:
    """When the kill and the outage happened (time.monotonic()), and what was delivered then."""

    kill_at: float = 0.0
    delivered_at_kill: int = 0
    outage_from: float = 0.0
    outage_to: float = 0.0
    outage_from_wall: float = 0.0
    outage_to_wall: float = 0.0
    delivered_at_outage: int = 0
    killed_delivering: bool = False
    restarts: list[str] = field(default_factory=list)


def private_postgres() -> PrivatePostgres:
    postgres = PrivatePostgres().init()
    with (postgres.data / "postgresql.conf").open("a") as conf:
        conf.write("track_commit_timestamp = on\n")
    return postgres.start()


def environment(postgres: PrivatePostgres, seaweed: SeaweedFS, src: Path | None) -> dict[str, str]:
    extra = {"PYTHONPATH": str(src.resolve())} if src is not None else {}
    return clean_environment(
        CALLVAULT_DATABASE_URL=postgres.url(),
        CALLVAULT_DEFAULT_STORE=(
            f"s3://{STAGING_BUCKET}?region={seaweed.region}&endpoint={seaweed.endpoint}"
        ),
        AWS_ACCESS_KEY_ID=seaweed.access_key,
        AWS_SECRET_ACCESS_KEY=seaweed.secret_key,
        CALLVAULT_ENCRYPTION_KEYS=base64.b64encode(secrets.token_bytes(32)).decode(),
        CALLVAULT_INGEST_TOKEN="ingest-" + secrets.token_urlsafe(16),
        CALLVAULT_WEBHOOK_SCHEDULE=",".join(["1", "2"] + ["3"] * 12),
        CALLVAULT_WORKER_LEASE_SECS="6",
        CALLVAULT_UPLOAD_BACKOFF_CAP_SECS="2",
        **extra,
    )


async def set_up_account(
    api: CallvaultProcess, account: dict[str, Any], receiver: WebhookReceiver, seaweed: SeaweedFS
) -> str:
    """An application that sends webhooks to the receiver and stores in the customer's bucket."""
    headers = {"Authorization": f"Bearer {account['api_key']}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as client:
        connection_id = await create_application(client, account["api_key"], receiver.url())
        configuration = s3_generic(seaweed, CUSTOMER_BUCKET)
        await set_credentials(
            client, account["api_key"], connection_id, "s3-generic", configuration
        )
    return connection_id


async def wait_delivered(receiver: WebhookReceiver, count: int) -> int:
    while (seen := len(receiver.deliveries)) < count:  # noqa: ASYNC110 (polling a list)
        await asyncio.sleep(0.005)
    return seen


async def stop_database(
    postgres: PrivatePostgres, receiver: WebhookReceiver, at: int, secs: float, chaos: Chaos
) -> None:
    """Stop the database (clients see a crash) once `at` deliveries have arrived; start it
    again `secs` later."""
    chaos.delivered_at_outage = await wait_delivered(receiver, at)
    await asyncio.to_thread(postgres.stop, "immediate")
    chaos.outage_from, chaos.outage_from_wall = time.monotonic(), time.time()
    await asyncio.sleep(secs)
    await asyncio.to_thread(postgres.start)
    chaos.outage_to, chaos.outage_to_wall = time.monotonic(), time.time()


def logged_at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


async def kill_once(
    worker: CallvaultProcess, receiver: WebhookReceiver, more: int, total: int, chaos: Chaos
) -> None:
    """Once the database is back, `more` deliveries have arrived since (fewer if that would
    pass `total`: every recording may have been delivered during the outage, its record
    still to be written) and the worker has logged a delivery of its own since (it is
    delivering, not only uploading), SIGKILL it and start it again at once."""
    while not chaos.outage_to:  # noqa: ASYNC110 (waiting for the outage task)
        await asyncio.sleep(0.05)
    await wait_delivered(receiver, min(total, len(receiver.deliveries) + more))
    give_up_at = time.monotonic() + KILL_WAIT_SECS
    while not chaos.killed_delivering and time.monotonic() < give_up_at:
        # without a delivery of its own in time, the other worker took all the work
        chaos.killed_delivering = any(
            e.get("event") == "webhook delivered" and logged_at(e) > chaos.outage_to_wall
            for e in worker.current.events()
        )
        await asyncio.sleep(0.005)
    chaos.delivered_at_kill = len(receiver.deliveries)
    worker.kill()
    chaos.kill_at = time.monotonic()
    worker.start()


async def converge(database_url: str, processes: Processes, count: int, chaos: Chaos) -> float:
    """Wait until every recording is stored, staged copies gone, every event delivered;
    a worker that exited (it may start while the database is away) is started again."""
    started = time.monotonic()
    while True:
        for process in processes.all:
            if not process.running:
                chaos.restarts.append(process.current.label)
                process.start()
        [row] = await query(
            database_url,
            """select
                 count(*) filter (where status = 'stored' and backend = 's3-generic') as stored,
                 count(*) filter (where default_store_key is not null) as staged,
                 (select count(*) from webhook_events where status <> 'delivered') as open,
                 (select count(*) from webhook_events) as events
               from recordings""",
        )
        if row["stored"] == count and not row["staged"] and not row["open"] and row["events"]:
            return time.monotonic() - started
        if time.monotonic() - started > CONVERGE_WITHIN:
            raise AssertionError(f"not converged: {dict(row)}\n{processes.logs()}")
        await asyncio.sleep(0.5)


def complete_2xx(deliveries: list[Delivery], public_key: str) -> tuple[list[Delivery], int]:
    """2xx deliveries whose whole body arrived and whose signature verifies; how many were cut
    (the sender was killed mid-request: the receiver records requests on arrival)."""
    kept, cut = [], 0
    for delivery in deliveries:
        if not 200 <= delivery.answered < 300:
            continue
        if len(delivery.body.encode()) < int(delivery.headers.get("content-length") or 0):
            cut += 1
            continue
        verify_signature(delivery, public_key)
        kept.append(delivery)
    return kept, cut


def repeats(delivered: list[Delivery], chaos: Chaos) -> dict[str, Any]:
    """Repeated deliveries, and where each repeated event's first 2xx fell."""
    first: dict[str, float] = {}
    times: Counter[str] = Counter()
    for delivery in delivered:
        first.setdefault(delivery.event_id, delivery.received_at)
        times[delivery.event_id] += 1
    repeated = {event: n for event, n in times.items() if n > 1}
    placed = []
    for event in repeated:
        at = first[event]
        if chaos.outage_from - 5 <= at <= chaos.outage_to:
            placed.append(f"outage {at - chaos.outage_from:+.2f}s")
        elif chaos.kill_at - 5 <= at <= chaos.kill_at:
            placed.append(f"kill {at - chaos.kill_at:+.2f}s")
        else:
            placed.append(f"other, {at - chaos.kill_at:+.2f}s from the kill")
    exposed = [
        d for d in delivered if chaos.kill_at - KILL_EXPOSURE_SECS <= d.received_at <= chaos.kill_at
    ]
    return {
        "answered_before_kill": len(exposed),
        "repeats_kill": sum(1 for p in placed if p.startswith("kill")),
        "repeats_outage": sum(1 for p in placed if p.startswith("outage")),
        "repeated_deliveries": sum(n - 1 for n in repeated.values()),
        "repeated_events": len(repeated),
        "first_2xx_of_repeated": sorted(placed),
        "events_delivered": len(times),
    }


def percentiles(secs: list[float]) -> dict[str, float]:
    secs = sorted(secs)
    if not secs:
        return {}
    return {
        "n": len(secs),
        "p50_ms": round(1000 * statistics.median(secs), 1),
        "p99_ms": round(1000 * secs[int(0.99 * (len(secs) - 1))], 1),
        "max_ms": round(1000 * secs[-1], 1),
    }


# the record windows reported, each by its percentiles
WINDOWS = (
    "outside_outage",
    "after_outage",
    "held_by_outage",
    "receiver_outside_outage",
    "receiver_after_outage",
)


async def record_windows(
    database_url: str, chaos: Chaos, delivered: list[Delivery]
) -> dict[str, Any]:
    """Seconds from each 2xx attempt's end to the commit of its record: records that the
    outage held back (answered before the start, committed after it) apart, and those
    answered in the catch-up burst after it. `receiver_*`: the same from the receiver's side
    (from the request's arrival there), which also counts the worker's wait to read the
    answer: a kill finds a round unrecorded for that long."""
    rows = await query(
        database_url,
        """select event_id, attempt, url,
                  extract(epoch from finished_at at time zone 'UTC') as answered,
                  extract(epoch from pg_xact_commit_timestamp(xmin)) as committed
           from webhook_attempts where status_code between 200 and 299""",
    )
    # the request whose record this is: the last of its event, round and URL (a round the
    # kill cut short was sent again under the same number)
    arrived = {
        (d.event_id, d.json()["meta"]["attempt"], d.json()["meta"]["delivered_to"]): d.received_at
        for d in delivered
    }
    wall = time.time() - time.monotonic()
    windows: dict[str, list[float]] = {name: [] for name in WINDOWS}
    for row in rows:
        answered, committed = float(row["answered"]), float(row["committed"])
        at = arrived.get((row["event_id"], row["attempt"], row["url"]))
        if answered < chaos.outage_to_wall < committed:
            windows["held_by_outage"].append(committed - answered)
            continue
        spans = ["outside_outage"]
        if 0 <= answered - chaos.outage_to_wall <= AFTER_OUTAGE_SECS:
            spans.append("after_outage")
        for span in spans:
            windows[span].append(committed - answered)
            if at is not None:
                windows[f"receiver_{span}"].append(committed - (at + wall))
    return {name: percentiles(secs) for name, secs in windows.items()}


async def losses(
    seaweed: SeaweedFS, sent: list[Sent], delivered: list[Delivery], database_url: str
) -> dict[str, Any]:
    by_leg = {s.metadata["call_leg_id"]: s for s in sent}
    intact = set()
    for key in await list_bucket(seaweed, CUSTOMER_BUCKET):
        leg = key.rsplit("/", 1)[1].rsplit("-", 1)[0]
        data = await read_object(seaweed, CUSTOMER_BUCKET, key)
        if (
            leg in by_leg
            and hashlib.sha256(data).digest() == hashlib.sha256(by_leg[leg].audio).digest()
        ):
            intact.add(by_leg[leg].recording_id)
    events_by_recording: dict[str, set[str]] = {}
    for delivery in delivered:
        if delivery.event_type == "call.recording.saved":
            events_by_recording.setdefault(delivery.payload["recording_id"], set()).add(
                delivery.event_id
            )
    second_in_db = await query(
        database_url,
        """select recording_id from webhook_events where event_type = 'call.recording.saved'
           group by recording_id having count(*) > 1""",
    )
    ids = {s.recording_id for s in sent}
    return {
        "lost": len(ids - (intact & set(events_by_recording))),
        "second_events": sum(1 for events in events_by_recording.values() if len(events) > 1),
        "second_events_in_db": len(second_in_db),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="callvault-kill-"))
    postgres = private_postgres()
    seaweed = SeaweedFS(tmp / "s3").start()
    receiver = WebhookReceiver().start()
    receiver._server.handle_error = lambda *_: None  # type: ignore[method-assign]
    try:
        seaweed.create_bucket(STAGING_BUCKET)
        seaweed.create_bucket(CUSTOMER_BUCKET)
        with Processes(tmp / "logs") as processes:
            return await measure(args, tmp, postgres, seaweed, receiver, processes)
    finally:
        receiver.stop()
        seaweed.stop()
        postgres.destroy()
        if args.keep:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def start_callvault(
    env: dict[str, str], tmp: Path, processes: Processes, worker_count: int
) -> tuple[dict[str, Any], CallvaultProcess, list[CallvaultProcess]]:
    """The database migrated, an account, `serve --no-worker` and the workers, ready."""
    cli_env = {**env, "CALLVAULT_DATA_DIR": str(tmp / "data-cli")}
    run_cli(cli_env, "migrate")
    account = json.loads(run_cli(cli_env, "accounts", "create", "kill-repeats", "--json"))
    api = processes.api("api", {**env, "CALLVAULT_DATA_DIR": str(tmp / "data-api")}, "--no-worker")
    workers = [
        processes.worker(f"worker-{n}", {**env, "CALLVAULT_DATA_DIR": str(tmp / f"data-w{n}")})
        for n in range(worker_count)
    ]
    for process in processes.all:
        process.start()
    for process in processes.all:
        await asyncio.to_thread(process.wait_ready)
    return account, api, workers


async def measure(
    args: argparse.Namespace,
    tmp: Path,
    postgres: PrivatePostgres,
    seaweed: SeaweedFS,
    receiver: WebhookReceiver,
    processes: Processes,
) -> dict[str, Any]:
    env = environment(postgres, seaweed, args.src)
    account, api, workers = await start_callvault(env, tmp, processes, args.workers)
    connection_id = await set_up_account(api, account, receiver, seaweed)
    sent = [
        Sent(ingest_metadata(connection_id), noise_wav(1.0 + i % 3)) for i in range(args.recordings)
    ]
    chaos = Chaos()
    started = time.monotonic()
    await asyncio.gather(
        ingest_paced(
            api.url, env["CALLVAULT_INGEST_TOKEN"], sent, every=0.0, concurrency=args.concurrency
        ),
        stop_database(postgres, receiver, args.recordings // 5, args.outage_secs, chaos),
        kill_once(workers[0], receiver, args.recordings // 10, args.recordings, chaos),
    )
    converged = await converge(postgres.url(), processes, args.recordings, chaos)
    total = time.monotonic() - started
    for process in processes.all:
        await asyncio.to_thread(process.terminate)
    delivered, cut = complete_2xx(receiver.received(), account["webhook_public_key"])
    windows = await record_windows(postgres.url(), chaos, delivered)
    return {
        "src": str(args.src or "src"),
        "recordings": args.recordings,
        "workers": args.workers,
        **repeats(delivered, chaos),
        **await losses(seaweed, sent, delivered, postgres.url()),
        "cut_requests": cut,
        "delivered_at_kill": chaos.delivered_at_kill,
        "killed_delivering": chaos.killed_delivering,
        "delivered_at_outage": chaos.delivered_at_outage,
        "outage_end_to_kill_secs": round(chaos.kill_at - chaos.outage_to, 2),
        "restarted_after_exit": chaos.restarts,
        "ingest_tries": sum(s.tries for s in sent),
        "converged_after_ingest_secs": round(converged, 1),
        "total_secs": round(total, 1),
        "record_window": windows,
        "load_average": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--outage-secs", type=float, default=15.0)
    parser.add_argument("--src", type=Path, help="run callvault from this src/ dir")
    parser.add_argument("--keep", action="store_true", help="keep the logs (temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=None if args.json else 2))
    return 1 if result["lost"] or result["second_events"] or result["second_events_in_db"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
