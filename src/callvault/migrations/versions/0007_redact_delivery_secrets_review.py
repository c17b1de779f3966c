"""redact the secrets of delivery records stored before: signatures, the receivers' cookies

Revision ID: 0007_review
Revises: 0006
Create Date: 2026-12-06 04:00:00.000000

Delivery records now keep `telnyx-signature-ed25519` as `[redacted]` and leave out the answer's
Set-Cookie, Authorization and similar headers (webhooks/recorded_headers.py). Rows recorded
before get the same treatment here. The rules are copied, not imported: a migration stays what
it was when it ran, whatever the module becomes.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007_review"
down_revision = "0006"
branch_labels = None
depends_on = None

REDACTED = "[redacted]"
REDACTED_REQUEST_HEADERS = {"telnyx-signature-ed25519"}
DROPPED_RESPONSE_HEADERS = {
    "set-cookie",
    "set-cookie2",
    "cookie",
    "authorization",
    "proxy-authorization",
    "proxy-authentication-info",
    "authentication-info",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
}
BATCH = 1000

attempts = sa.table(
    "webhook_attempts",
    sa.column("id", sa.Integer()),
    sa.column("request_headers", sa.JSON()),
    sa.column("response_headers", sa.JSON()),
)


def _pairs(value: Any) -> list[list[str]] | None:
    return value if isinstance(value, list) else None


def _request(headers: list[list[str]] | None) -> list[list[str]] | None:
    if headers is None:
        return None
    return [
        [name, REDACTED if str(name).lower() in REDACTED_REQUEST_HEADERS else value]
        for name, value in headers
    ]


def _response(headers: list[list[str]] | None) -> list[list[str]] | None:
    if headers is None:
        return None
    return [[n, v] for n, v in headers if str(n).lower() not in DROPPED_RESPONSE_HEADERS]


def upgrade() -> None:
    bind = op.get_bind()
    last = -1
    while True:
        rows = bind.execute(
            sa.select(attempts.c.id, attempts.c.request_headers, attempts.c.response_headers)
            .where(attempts.c.id > last)
            .order_by(attempts.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        for row_id, request_headers, response_headers in rows:
            before_request, before_response = _pairs(request_headers), _pairs(response_headers)
            after_request, after_response = _request(before_request), _response(before_response)
            if (after_request, after_response) != (before_request, before_response):
                bind.execute(
                    attempts.update()
                    .where(attempts.c.id == row_id)
                    .values(request_headers=after_request, response_headers=after_response)
                )
        last = rows[-1][0]


def downgrade() -> None:
    pass  # what was redacted is gone; the older code reads the redacted rows as they are
