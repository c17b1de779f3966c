"""Every router the app serves, in one list (the tenancy test walks the result)."""

from __future__ import annotations

from fastapi import FastAPI

from callvault.accounts.endpoints import router as accounts_router
from callvault.applications.endpoints import router as applications_router
from callvault.console.api_docs import router as api_docs_router
from callvault.console.endpoints import router as console_router
from callvault.credentials.endpoints import router as credentials_router
from callvault.encryption_keys.endpoints import router as encryption_keys_router
from callvault.handoff.endpoints import router as rtpengine_router
from callvault.health import router as health_router
from callvault.operations.endpoints import router as operations_router
from callvault.operations.metrics_route import router as metrics_router
from callvault.recordings.endpoints import ingest_router as recordings_ingest_router
from callvault.recordings.endpoints import router as recordings_router
from callvault.recordings.files_endpoint import router as recording_files_router
from callvault.recordings.redelivery_endpoint import router as redelivery_router
from callvault.webhooks.endpoints import router as webhook_deliveries_router


def include_routers(app: FastAPI) -> None:
    app.include_router(health_router)
    app.include_router(accounts_router)
    app.include_router(applications_router)
    app.include_router(credentials_router)
    app.include_router(encryption_keys_router)
    app.include_router(operations_router)
    app.include_router(webhook_deliveries_router)
    app.include_router(recordings_ingest_router)
    app.include_router(rtpengine_router)
    app.include_router(recordings_router)
    app.include_router(recording_files_router)
    app.include_router(redelivery_router)
    app.include_router(metrics_router)
    app.include_router(console_router)
    app.include_router(api_docs_router)
