"""The jobs recordings hand to the in-process worker in memory (runtime.Inbox), each typed by
what it carries: ingest and the pipeline hand them over, the entry point's job table
(callvault/jobs.py) says which runner takes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from callvault.runtime import JobKey

if TYPE_CHECKING:
    from callvault.recordings.ingest import NewRecording
    from callvault.webhooks.repository import DeliveryContext

# a recording committed `received` and leased to the worker: its upload
RECORDING_JOB: JobKey[NewRecording] = JobKey("recording")
# a webhook event made with a recording's state change: its delivery round from memory
EVENT_JOB: JobKey[DeliveryContext] = JobKey("event")
