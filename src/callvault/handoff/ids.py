"""The call ids of a handed-off recording, derived from the call itself. Pure.

Ingest names a recording by (connection_id, call_leg_id, recording_started_at). The hand-off
derives the leg id from the SIP Call-ID and the start from the first RTP packet, so a second
pass over the same call (a hand-off killed after ingest answered but before it removed the
spool files, or run twice) is the same recording and ingest stores nothing twice:

- call_session_id = uuid5(NAMESPACE, "session:" + key)
- call_leg_id     = uuid5(NAMESPACE, "leg:" + key)
- call_control_id = uuid5(NAMESPACE, "control:" + key)

where `key` is the SIP Call-ID (`sip_call_id` in the metadata), else rtpengine's call id (the
spool file's name), else the watched file's name.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

NAMESPACE = uuid.UUID("5c1e0b5e-7a7e-4d1a-9c55-63616c6c7661")  # fixed forever: ids depend on it


@dataclass(frozen=True)
class CallIds:
    call_session_id: str
    call_leg_id: str
    call_control_id: str


def call_ids(key: str) -> CallIds:
    return CallIds(
        call_session_id=str(uuid.uuid5(NAMESPACE, "session:" + key)),
        call_leg_id=str(uuid.uuid5(NAMESPACE, "leg:" + key)),
        call_control_id=str(uuid.uuid5(NAMESPACE, "control:" + key)),
    )
