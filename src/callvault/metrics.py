"""Prometheus metric objects: what the pipeline counts, and the gauges /metrics sets at scrape
time. Counters are per process (scrape every process).

Plumbing: the objects only. The `/metrics` route, and the backlog gauges it reads from the
database, are operations/metrics_route.py (they know the domains' tables; this module knows
none).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDINGS_INGESTED = Counter(
    "callvault_recordings_ingested_total", "Recordings accepted by ingest (new, not repeats)"
)
RECORDING_BYTES_INGESTED = Counter(
    "callvault_recording_bytes_ingested_total", "Audio bytes accepted by ingest"
)
UPLOADS = Counter(
    "callvault_uploads_total",
    "Uploads to custom storage by backend and outcome",
    ["backend", "outcome"],  # outcome: ok | transient | permanent
)
UPLOAD_SECONDS = Histogram(
    "callvault_upload_duration_seconds",
    "Time to put and verify one recording in custom storage",
    ["backend"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
WEBHOOK_ATTEMPTS = Counter(
    "callvault_webhook_attempts_total",
    "Webhook delivery attempts by outcome",
    ["outcome"],  # delivered | retry | failed
)
WEBHOOK_SECONDS = Histogram(
    "callvault_webhook_latency_seconds",
    "Time from sending a webhook to its receiver's answer",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
GROUP_COMMITS = Counter(
    "callvault_group_commits_total",
    "Write transactions committed by the group commit (one fsync each)",
)
GROUP_COMMIT_UNITS = Counter(
    "callvault_group_commit_units_total",
    "Writes those transactions carried (divided by the commits: the average batch)",
)
JOB_CRASHES = Counter(
    "callvault_job_crashes_total",
    "Jobs that failed in callvault's own code (counted as attempts, retried on schedule)",
    ["job"],  # upload | webhook
)
DELETED_DURING_UPLOAD = Counter(
    "callvault_deleted_during_upload_total",
    "Objects removed from a customer's bucket because their recording was deleted mid-upload",
)
WEBHOOK_EVENTS_PRUNED = Counter(
    "callvault_webhook_events_pruned_total",
    "Finished webhook events deleted by retention (CALLVAULT_WEBHOOK_RETENTION_DAYS)",
)
WEBHOOK_ATTEMPTS_PRUNED = Counter(
    "callvault_webhook_attempts_pruned_total",
    "Webhook attempts deleted by retention (CALLVAULT_WEBHOOK_RETENTION_DAYS)",
)
RECORDINGS_EXPIRED = Counter(
    "callvault_recordings_expired_total",
    "Default-store recordings deleted by retention (CALLVAULT_RECORDING_RETENTION_DAYS)",
)
# read at scrape time, for the alerts in deploy/prometheus/alerts.yml
READY = Gauge("callvault_ready", "1 when GET /ready answers 200 in this process, else 0")
READY_CHECK = Gauge("callvault_ready_check", "1 when this /ready check passes, else 0", ["check"])
DATA_DIR_FREE = Gauge(
    "callvault_data_dir_free_bytes", "Bytes free for callvault on the data dir's filesystem"
)
DATA_DIR_SIZE = Gauge("callvault_data_dir_size_bytes", "Size of the data dir's filesystem")
