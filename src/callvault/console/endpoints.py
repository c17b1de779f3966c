"""The console's pages (thin: every rule lives in the services the /v2 API uses)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from callvault.accounts import repository as account_rows
from callvault.accounts.cache import REVOCATION_LAG_SECS
from callvault.accounts.service import KeyNameRefused, create_api_key, revoke_api_key
from callvault.applications import service as applications
from callvault.applications.schemas import (
    CreateCallControlApplicationRequest,
    UpdateCallControlApplicationRequest,
)
from callvault.auth import runtime_of
from callvault.console import deliveries, sessions
from callvault.console import recordings as console_recordings
from callvault.console.forms import (
    STORAGE_FORMS,
    Problem,
    application_body,
    problems_of,
    refused_values,
    storage_body,
    stored_values,
)
from callvault.console.overview import HEIGHT, WIDTH, overview
from callvault.console.throttle import LoginThrottle
from callvault.console.web import (
    ConsoleRoute,
    Visitor,
    checked_visitor,
    cookie_policy,
    current_visitor,
    error_page,
    redirect,
    render,
)
from callvault.credentials import service as credentials
from callvault.credentials.schemas import CredentialsRequest
from callvault.db import transaction
from callvault.errors import ApiError, not_found
from callvault.moments import as_utc
from callvault.recordings import repository as recording_rows
from callvault.recordings import service as recordings
from callvault.recordings.models import RecordingStatus
from callvault.recordings.redelivery import redeliver
from callvault.recordings.repository import RecordingFilter

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

Signed = Annotated[Visitor, Depends(current_visitor)]
Checked = Annotated[Visitor, Depends(checked_visitor)]
Flash = Annotated[str | None, Query(max_length=300)]

STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
RECORDINGS_PAGE_SIZE = 25
RECORDING_STATUSES = (RecordingStatus.RECEIVED, RecordingStatus.STORED, RecordingStatus.FAILED)


def _messages(exc: ApiError) -> list[Problem]:
    return [
        Problem(
            (item.pointer or item.parameter or "").rsplit("/", 1)[-1] or None,
            item.detail or item.title,
        )
        for item in exc.items
    ]


# ---- assets


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    if name not in STATIC_FILES:
        raise not_found()
    content = resources.files("callvault.console").joinpath("static", name).read_bytes()
    return Response(
        content,
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "public, max-age=3600"},
    )


# ---- sign-in


@router.get("/login")
async def login_page(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", csrf_token=token)
    _set_login_cookie(request, response, token)
    return response


def _set_login_cookie(request: Request, response: Response, token: str) -> None:
    policy = cookie_policy(request)
    response.set_cookie(
        policy.login_name,
        token,
        max_age=3600,
        path=policy.login_path,
        httponly=True,
        samesite="strict",
        secure=policy.secure,
    )


def _throttle(request: Request) -> LoginThrottle:
    """The app's login throttle (console/throttle.py), made on first use."""
    throttle: LoginThrottle | None = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = request.app.state.login_throttle = LoginThrottle()
    return throttle


@router.post("/login")
async def login(request: Request) -> Response:
    throttle = _throttle(request)
    address = request.client.host if request.client else ""
    wait = throttle.retry_after(address)
    if wait is not None:
        refused = error_page(
            request,
            429,
            f"Too many refused sign-ins from your address: try again in {wait} s.",
            back="/console/login",
        )
        refused.headers["Retry-After"] = str(wait)
        return refused
    form = await request.form()
    api_key = form.get("api_key")
    submitted = form.get(sessions.CSRF_FIELD)
    policy = cookie_policy(request)
    expected = request.cookies.get(policy.login_name, "")
    if not (
        isinstance(submitted, str)
        and expected
        and secrets.compare_digest(submitted.encode(), expected.encode())
    ):
        return error_page(
            request,
            403,
            "The form was refused: it did not carry a valid CSRF token. "
            "Reload the page and try again.",
        )
    token = await sessions.sign_in(runtime_of(request), api_key if isinstance(api_key, str) else "")
    if token is None:
        throttle.failed(address)
        fresh = secrets.token_urlsafe(24)
        refused = render(
            request,
            "login.html",
            status_code=401,
            csrf_token=fresh,
            error="That API key is not valid.",
        )
        _set_login_cookie(request, refused, fresh)
        return refused
    response = redirect("/console")
    response.set_cookie(
        policy.session_name,
        token,
        max_age=int(sessions.SESSION_LIFETIME.total_seconds()),
        path=policy.session_path,
        httponly=True,
        samesite="strict",
        secure=policy.secure,
    )
    response.delete_cookie(
        policy.login_name,
        path=policy.login_path,
        httponly=True,
        samesite="strict",
        secure=policy.secure,
    )
    return response


@router.post("/logout")
async def logout(request: Request, visitor: Checked) -> Response:
    await sessions.sign_out(runtime_of(request), visitor.token)
    response = redirect("/console/login")
    _forget_session_cookie(request, response)
    return response


def _forget_session_cookie(request: Request, response: Response) -> None:
    policy = cookie_policy(request)
    response.delete_cookie(
        policy.session_name,
        path=policy.session_path,
        httponly=True,
        samesite="strict",
        secure=policy.secure,
    )


# ---- API keys


async def _api_keys_page(
    request: Request,
    visitor: Visitor,
    *,
    created: Any = None,
    problems: list[Problem] | None = None,
    name: str = "",
    flash: str | None = None,
    status_code: int = 200,
) -> Response:
    async with runtime_of(request).sessions() as session:
        keys = await account_rows.keys_of(session, visitor.account.id)
    return render(
        request,
        "api_keys.html",
        visitor,
        status_code=status_code,
        keys=keys,
        created=created,
        problems=problems or [],
        name=name,
        flash=flash,
    )


@router.get("/api-keys")
async def api_keys_page(request: Request, visitor: Signed, flash: Flash = None) -> Response:
    return await _api_keys_page(request, visitor, flash=flash)


@router.post("/api-keys")
async def create_key(
    request: Request, visitor: Checked, name: Annotated[str, Form(max_length=1000)] = ""
) -> Response:
    try:
        async with transaction(runtime_of(request).sessions) as session:
            created = await create_api_key(session, visitor.account.id, name)
    except KeyNameRefused as exc:
        return await _api_keys_page(
            request, visitor, problems=[Problem("name", str(exc))], name=name, status_code=422
        )
    # the key is on this answer only (no redirect: it is not kept anywhere to show again);
    # the console's answers are Cache-Control: no-store
    return await _api_keys_page(request, visitor, created=created, status_code=201)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, visitor: Checked) -> Response:
    async with transaction(runtime_of(request).sessions) as session:
        revoked = await revoke_api_key(session, key_id, visitor.account.id)
    if not revoked:
        raise not_found()
    # "revoked" is said once no process takes the key from its cache any more
    await asyncio.sleep(REVOCATION_LAG_SECS)
    if key_id == visitor.key_id:  # this very session ended with its key
        response = redirect("/console/login")
        _forget_session_cookie(request, response)
        return response
    return redirect("/console/api-keys", flash="api-key-revoked")


# ---- overview


@router.get("")
async def overview_page(request: Request, visitor: Signed) -> Response:
    data = await overview(runtime_of(request), visitor.account.id)
    return render(
        request, "overview.html", visitor, data=data, chart_width=WIDTH, chart_height=HEIGHT
    )


# ---- applications and storage


@router.get("/applications")
async def applications_page(request: Request, visitor: Signed, flash: Flash = None) -> Response:
    return await _applications_page(request, visitor, flash=flash)


async def _applications_page(
    request: Request,
    visitor: Visitor,
    *,
    flash: str | None = None,
    problems: list[Problem] | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    page = await applications.list_page(
        runtime_of(request),
        visitor.account.id,
        page_number=1,
        page_size=250,
        sort="-created_at",
        name_contains=None,
    )
    return render(
        request,
        "applications.html",
        visitor,
        status_code=status_code,
        applications=page.items,
        total=page.total_results,
        flash=flash,
        problems=problems or [],
        values=values or {"webhook_api_version": "2", "active": True},
    )


@router.post("/applications")
async def create_application(request: Request, visitor: Checked) -> Response:
    body = application_body(await request.form())
    try:
        parsed = CreateCallControlApplicationRequest.model_validate(body)
        application = await applications.create(runtime_of(request), visitor.account.id, parsed)
    except ValidationError as exc:
        return await _applications_page(
            request, visitor, problems=problems_of(exc), values=body, status_code=422
        )
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _applications_page(
            request, visitor, problems=_messages(exc), values=body, status_code=exc.status
        )
    return redirect(f"/console/applications/{application.id}", flash="application-created")


async def _application_page(
    request: Request,
    visitor: Visitor,
    application_id: str,
    *,
    flash: str | None = None,
    problems: list[Problem] | None = None,
    values: dict[str, Any] | None = None,
    storage_problems: list[Problem] | None = None,
    storage_values: dict[str, str] | None = None,
    chosen_backend: str | None = None,
    validation: Any = None,
    status_code: int = 200,
) -> Response:
    runtime = runtime_of(request)
    application = await applications.retrieve(runtime, visitor.account.id, application_id)
    stored = None
    try:
        stored = await credentials.retrieve(runtime, visitor.account.id, application.id)
    except ApiError as exc:
        if exc.status != 404:
            raise
    masked = (
        stored_values(stored.data.backend, stored.data.configuration.model_dump())
        if stored is not None
        else None
    )
    if storage_values is None:
        storage_values = masked
    else:  # a refused save
        storage_values = refused_values(storage_values, masked)
    if chosen_backend is None:
        chosen_backend = stored.data.backend if stored is not None else "s3"
    return render(
        request,
        "application.html",
        visitor,
        status_code=status_code,
        application=application,
        values=values
        or {
            "application_name": application.application_name,
            "webhook_event_url": application.webhook_event_url,
            "webhook_event_failover_url": application.webhook_event_failover_url or "",
            "webhook_api_version": application.webhook_api_version,
            "webhook_timeout_secs": application.webhook_timeout_secs,
            "active": application.active,
        },
        problems=problems or [],
        flash=flash,
        storage=stored,
        storage_forms=STORAGE_FORMS,
        storage_values=storage_values or {},
        storage_problems=storage_problems or [],
        chosen_backend=chosen_backend,
        validation=validation,
    )


@router.get("/applications/{application_id}")
async def application_page(
    request: Request, application_id: str, visitor: Signed, flash: Flash = None
) -> Response:
    return await _application_page(request, visitor, application_id, flash=flash)


@router.post("/applications/{application_id}")
async def update_application(request: Request, application_id: str, visitor: Checked) -> Response:
    runtime = runtime_of(request)
    await applications.retrieve(runtime, visitor.account.id, application_id)  # 404 first
    body = application_body(await request.form())
    try:
        parsed = UpdateCallControlApplicationRequest.model_validate(body)
        await applications.update(runtime, visitor.account.id, application_id, parsed)
    except ValidationError as exc:
        return await _application_page(
            request,
            visitor,
            application_id,
            problems=problems_of(exc),
            values=body,
            status_code=422,
        )
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _application_page(
            request,
            visitor,
            application_id,
            problems=_messages(exc),
            values=body,
            status_code=exc.status,
        )
    return redirect(f"/console/applications/{application_id}", flash="application-saved")


@router.post("/applications/{application_id}/delete")
async def delete_application(request: Request, application_id: str, visitor: Checked) -> Response:
    await applications.delete(runtime_of(request), visitor.account.id, application_id)
    return redirect("/console/applications", flash="application-deleted")


@router.post("/applications/{application_id}/storage")
async def save_storage(request: Request, application_id: str, visitor: Checked) -> Response:
    runtime = runtime_of(request)
    account_id = visitor.account.id
    application = await applications.retrieve(runtime, account_id, application_id)
    form = await request.form()
    body = storage_body(form)
    submitted = {key: value for key, value in form.items() if isinstance(value, str) and "." in key}
    try:
        parsed = CredentialsRequest.model_validate(body)
        try:
            await credentials.retrieve(runtime, account_id, application.id)
            exists = True
        except ApiError as exc:
            if exc.status != 404:
                raise
            exists = False
        if exists:
            await credentials.replace(runtime, account_id, application.id, parsed)
        else:
            await credentials.create(runtime, account_id, application.id, parsed)
    except ValidationError as exc:
        problems = problems_of(exc)
    except ApiError as exc:
        if exc.status == 404:
            raise
        problems = _messages(exc)
    else:
        return redirect(f"/console/applications/{application.id}", flash="storage-saved")
    return await _application_page(
        request,
        visitor,
        application.id,
        storage_problems=problems,
        storage_values=submitted,
        chosen_backend=str(body["backend"]),
        status_code=422,
    )


@router.post("/applications/{application_id}/storage/validate")
async def validate_storage(request: Request, application_id: str, visitor: Checked) -> Response:
    runtime = runtime_of(request)
    result = await credentials.validate(runtime, visitor.account.id, application_id)
    return await _application_page(request, visitor, application_id, validation=result)


@router.post("/applications/{application_id}/storage/delete")
async def delete_storage(request: Request, application_id: str, visitor: Checked) -> Response:
    await credentials.delete(runtime_of(request), visitor.account.id, application_id)
    return redirect(
        f"/console/applications/{application_id}",
        flash="storage-deleted",
    )


# ---- recordings


def _as_filter(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def _recording_filter(filters: dict[str, str | None]) -> tuple[RecordingFilter, list[Problem]]:
    """The filter the recordings page's fields ask for, and the problems with them; a status
    that is not one clears `filters["status"]` so the page shows it unset."""
    problems: list[Problem] = []
    bounds: dict[str, datetime | None] = {}
    for name in ("created_from", "created_to"):
        text = filters[name]
        try:
            bounds[name] = datetime.fromisoformat(text) if text else None
        except ValueError:
            problems.append(Problem(name, f"{name}: not a date (YYYY-MM-DD or ISO 8601)"))
            bounds[name] = None
    if filters["status"] not in (None, *RECORDING_STATUSES):
        problems.append(Problem("status", "status: must be received, stored or failed"))
        filters["status"] = None
    if filters["created_to"] and len(filters["created_to"]) == 10 and bounds["created_to"]:
        # a date alone means up to the end of that day
        bounds["created_to"] += timedelta(days=1, microseconds=-1)
    where = RecordingFilter(
        connection_id=filters["connection_id"],
        call_leg_id=filters["call_leg_id"],
        call_control_id=filters["call_control_id"],
        call_session_id=filters["call_session_id"],
        created_at_gte=as_utc(bounds["created_from"]),
        created_at_lte=as_utc(bounds["created_to"]),
        status=filters["status"],
    )
    return where, problems


@router.get("/recordings")
async def recordings_page(
    request: Request,
    visitor: Signed,
    connection_id: str | None = None,
    call_control_id: str | None = None,
    call_leg_id: str | None = None,
    call_session_id: str | None = None,
    created_from: str | None = None,
    created_to: str | None = None,
    status: str | None = None,
    page: Annotated[int, Query(ge=1, le=10**6)] = 1,
    flash: Flash = None,
) -> Response:
    filters = {
        "connection_id": _as_filter(connection_id),
        "call_control_id": _as_filter(call_control_id),
        "call_leg_id": _as_filter(call_leg_id),
        "call_session_id": _as_filter(call_session_id),
        "created_from": _as_filter(created_from),
        "created_to": _as_filter(created_to),
        "status": _as_filter(status),
    }
    where, problems = _recording_filter(filters)
    result = await recordings.list_recordings(
        runtime_of(request), visitor.account.id, where, page, RECORDINGS_PAGE_SIZE
    )
    async with runtime_of(request).sessions() as session:
        rows = {
            item.id: await recording_rows.live_for_account(session, visitor.account.id, item.id)
            for item in result.data
        }
    query = {name: value for name, value in filters.items() if value}
    return render(
        request,
        "recordings.html",
        visitor,
        recordings=result.data,
        rows=rows,
        meta=result.meta,
        total_pages=max(1, result.meta.total_pages),
        filters=filters,
        query=query,
        statuses=RECORDING_STATUSES,
        problems=problems,
        flash=flash,
    )


@router.get("/recordings/{recording_id}")
async def recording_page(
    request: Request, recording_id: str, visitor: Signed, flash: Flash = None
) -> Response:
    runtime = runtime_of(request)
    detail = await console_recordings.recording_detail(runtime, visitor.account.id, recording_id)
    events = await deliveries.list_deliveries(
        runtime, visitor.account.id, status=None, contains=detail.row.id, page_number=1
    )
    return render(
        request,
        "recording.html",
        visitor,
        recording=detail.data,
        row=detail.row,
        deliveries=events.items,
        flash=flash,
        redeliverable=detail.row.status == RecordingStatus.FAILED
        or (
            detail.row.status == RecordingStatus.STORED
            and detail.data.storage.location == "default"
        ),
    )


@router.get("/recordings/{recording_id}/audio")
async def recording_audio(
    request: Request, recording_id: str, visitor: Signed, download: bool = False
) -> Response:
    audio = await console_recordings.audio(runtime_of(request), visitor.account.id, recording_id)
    headers = {"Cache-Control": "private, no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{recording_id}"'
    return StreamingResponse(audio.chunks, media_type=audio.content_type, headers=headers)


@router.post("/recordings/{recording_id}/redeliver")
async def redeliver_recording(request: Request, recording_id: str, visitor: Checked) -> Response:
    try:
        await redeliver(runtime_of(request), visitor.account.id, recording_id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        back = f"/console/recordings/{recording_id}"
        return error_page(request, exc.status, _messages(exc)[0].message, back=back)
    return redirect(f"/console/recordings/{recording_id}", flash="redelivery-queued")


@router.post("/recordings/{recording_id}/delete")
async def delete_recording(request: Request, recording_id: str, visitor: Checked) -> Response:
    await recordings.delete_recording(runtime_of(request), visitor.account.id, recording_id)
    return redirect("/console/recordings", flash="recording-deleted")


# ---- webhook deliveries


@router.get("/deliveries")
async def deliveries_page(
    request: Request,
    visitor: Signed,
    status: str | None = None,
    contains: str | None = None,
    page: Annotated[int, Query(ge=1, le=10**6)] = 1,
    flash: Flash = None,
) -> Response:
    chosen = status if status in deliveries.STATUSES else None
    text = _as_filter(contains)
    result = await deliveries.list_deliveries(
        runtime_of(request),
        visitor.account.id,
        status=chosen,
        contains=text,
        page_number=page,
    )
    query = {k: v for k, v in (("status", chosen), ("contains", text)) if v}
    return render(
        request,
        "deliveries.html",
        visitor,
        page=result,
        status=chosen,
        contains=text or "",
        statuses=deliveries.STATUSES,
        query=query,
        flash=flash,
    )


@router.get("/deliveries/{event_id}")
async def delivery_page(
    request: Request, event_id: str, visitor: Signed, flash: Flash = None
) -> Response:
    delivery = await deliveries.get_delivery(runtime_of(request), visitor.account.id, event_id)
    return render(request, "delivery.html", visitor, delivery=delivery, flash=flash)


@router.post("/deliveries/{event_id}/retry")
async def retry_delivery(
    request: Request, event_id: str, visitor: Checked, back: Annotated[str, Form()] = ""
) -> Response:
    target = "/console/deliveries" if back == "list" else f"/console/deliveries/{event_id}"
    try:
        await deliveries.retry(runtime_of(request), visitor.account.id, event_id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return error_page(request, exc.status, _messages(exc)[0].message, back=target)
    return redirect(target, flash="delivery-queued")
