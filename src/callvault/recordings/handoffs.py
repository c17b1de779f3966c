"""The jobs recordings hand to the in-process worker in memory (runtime.Inbox), each typed by
what it carries: ingest and the pipeline hand them over, the entry point's job table
(callvault/jobs.py) says which runner takes them."""

from __future__ import annotations

from dataclasses import dataclass

from callvault.accounts.models import Account
from callvault.applications.models import Application
from callvault.recordings.models import Recording
from callvault.runtime import JobKey
from callvault.webhooks.repository import DeliveryContext


@dataclass(frozen=True)
class NewRecording:
    """What the in-process worker gets for a recording ingest handed over: the row as
    committed, with the application and account ingest read (no re-read)."""

    recording: Recording
    application: Application
    account: Account


# a recording committed `received` and leased to the worker: its upload
RECORDING_JOB: JobKey[NewRecording] = JobKey("recording")
# a webhook event made with a recording's state change: its delivery round from memory
EVENT_JOB: JobKey[DeliveryContext] = JobKey("event")
