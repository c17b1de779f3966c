"""Schemathesis against callvault's own /v2/openapi.json: every operation, authenticated, valid
and invalid input (its positive and negative modes), on a real server over HTTP.

Checks: no 5xx, every status code is documented for its operation, every body matches the
documented schema and content type. Path parameters are drawn half from the generator and half
from real resources of the caller (seeded below), so the handlers behind the 404s run too.
Bounded and reproducible: at most MAX_EXAMPLES cases per operation, derandomized. The number of
requests sent is printed in the terminal summary (tests/security/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from callvault.accounts.service import NewAccount
from callvault.config import Settings
from callvault.db import transaction
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.webhooks.models import EventStatus, WebhookEvent
from tests.conftest import LiveServer, auth, free_port
from tests.security.conftest import FUZZ_STATS
from tests.security.flows import create_application, ingest

MAX_EXAMPLES = 50
INGEST_PATH = "/internal/v1/recordings"


@dataclass
class Seeded:
    account: NewAccount
    ingest_token: str
    # operation path template -> path parameter sets of real resources of `account`
    params: dict[str, list[dict[str, str]]] = field(default_factory=dict)


@pytest.fixture
async def seeded(api: httpx.AsyncClient, runtime: Runtime, account: NewAccount) -> Seeded:
    """Real resources of the fuzzing account: applications, credentials, recordings, a failed
    webhook event. Credentials point at a closed local port, so validate fails fast."""
    apps = [await create_application(api, account) for _ in range(4)]
    for app_id in apps[:2]:
        response = await api.post(
            f"/v2/custom_storage_credentials/{app_id}",
            json={
                "backend": "s3-generic",
                "configuration": {
                    "bucket": "fuzz-bucket",
                    "region": "us-east-1",
                    "endpoint": f"http://127.0.0.1:{free_port()}",
                    "aws_access_key_id": "AKIAFUZZ",
                    "aws_secret_access_key": "fuzz-secret-" + uuid.uuid4().hex,
                },
            },
            headers=auth(account),
        )
        assert response.status_code == 200, response.text
    recordings = [await ingest(api, runtime, apps[0]) for _ in range(4)]
    event_id = str(uuid.uuid4())
    async with transaction(runtime.sessions) as session:
        session.add(
            WebhookEvent(
                id=event_id,
                account_id=account.account_id,
                application_id=apps[0],
                event_type="call.recording.saved",
                api_version="2",
                payload={},
                status=EventStatus.FAILED,
                attempts=9,
                next_attempt_at=None,
            )
        )
    async with runtime.sessions() as session:
        keys = [(await session.get(Recording, r)).default_store_key for r in recordings]  # type: ignore[union-attr]
    by_recording = [{"recording_id": r} for r in recordings]
    by_connection = [{"connection_id": a} for a in apps]
    return Seeded(
        account,
        runtime.settings.ingest_token,
        {
            "/v2/call_control_applications/{id}": [{"id": a} for a in apps],
            "/v2/custom_storage_credentials/{connection_id}": by_connection,
            "/v2/custom_storage_credentials/{connection_id}/actions/validate": by_connection,
            "/v2/recordings/{recording_id}": by_recording,
            "/v2/recordings/{recording_id}/actions/redeliver": by_recording,
            "/v2/webhook_deliveries/{event_id}/actions/retry": [{"event_id": event_id}],
            "/v2/recording_files/{key}": [{"key": k} for k in keys if k],
        },
    )


@pytest.fixture
def fuzz_server(settings: Settings) -> Iterator[LiveServer]:
    # no worker: it would send webhooks to whatever URLs the generator invents
    server = LiveServer(settings, run_worker=False).start()
    yield server
    server.stop()


def run_operation(operation: Any, mode: GenerationMode, seeded: Seeded) -> None:
    """MAX_EXAMPLES generated cases of one operation in one mode, each sent and checked."""
    token = seeded.ingest_token if operation.path == INGEST_PATH else seeded.account.api_key
    real = seeded.params.get(operation.path, [])

    @given(case=operation.as_strategy(mode, hooks=operation.schema.hooks))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report what was found
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=20)
        FUZZ_STATS["requests"] += 1
        FUZZ_STATS[f"status {response.status_code}"] += 1
        if case.path_parameters and case.path_parameters in real:
            FUZZ_STATS["real ids"] += 1
        case.validate_response(response, checks=CHECKS)

    run()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}".strip()


def test_every_operation_holds_its_contract(fuzz_server: LiveServer, seeded: Seeded) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/v2/openapi.json")
    schema.config.update(base_url=fuzz_server.url)

    @schema.hook
    def before_generate_path_parameters(context: Any, strategy: Any) -> Any:
        # half generated values, half ids of the caller's real resources
        real = seeded.params.get(context.operation.path)
        return st.one_of(strategy, st.sampled_from(real)) if real else strategy

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                run_operation(operation, mode, seeded)
            except Unsatisfiable:
                # nothing to negate (an operation without parameters or body)
                assert mode is GenerationMode.NEGATIVE, operation.label
            # every operation runs; all findings are reported (FailureGroup is a BaseException)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {describe(exc)}")
    assert not failures, "\n\n".join(failures)
