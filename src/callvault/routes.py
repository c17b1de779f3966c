"""Every router the app serves, in one list (the tenancy test walks the result)."""

from __future__ import annotations

from fastapi import FastAPI

from callvault.health import router as health_router


def include_routers(app: FastAPI) -> None:
    app.include_router(health_router)
