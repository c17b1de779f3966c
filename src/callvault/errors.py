"""Errors in the Telnyx format: `{"errors": [{"code", "title", "detail", "source", "meta"}]}`.

Services raise `ApiError`; the app turns it, FastAPI's validation errors and anything unexpected
into this body, so no client ever sees a stack trace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from callvault.db import database_unavailable

log = structlog.get_logger("callvault.errors")


class Code:
    """Every error code callvault answers, in one place (listed in docs/api.md).

    Telnyx's own code wherever Telnyx has one for the case (developers.telnyx.com, "API error
    codes"), never a Telnyx code for another meaning; callvault's own cases use six-digit codes
    from 190001 up, outside Telnyx's ranges.
    """

    # Telnyx's codes, with Telnyx's meaning
    NOT_FOUND = "10005"  # Resource not found
    UNEXPECTED = "10007"  # Unexpected error
    REQUEST_TIMEOUT = "10008"  # Request timeout
    AUTHENTICATION_FAILED = "10009"  # Authentication failed
    AUTHORIZATION_FAILED = "10010"  # Authorization failed
    DUPLICATE_RESOURCE = "10012"  # Duplicate resource
    UNSUPPORTED_MEDIA_TYPE = "10014"  # Unsupported Media Type
    BAD_REQUEST = "10015"  # Bad Request (not well-formed, or a value that is not valid)
    # callvault's own
    CONFLICT = "190001"  # the resource's state does not allow this (e.g. retry a delivered event)
    PAYLOAD_TOO_LARGE = "190002"  # the body (or the recording) is larger than the limit
    SERVICE_UNAVAILABLE = "190003"  # a store or the database is unavailable: try again
    METHOD_NOT_ALLOWED = "190004"  # the path exists, the method does not
    UNKNOWN_PARAMETER = "190005"  # a query parameter the operation does not know
    INSUFFICIENT_STORAGE = "190006"  # the disk or the default store is full: try again later
    UPSTREAM_FAILED = "190007"  # a customer's store did not answer a read the console asked for
    # the platform's own setup is wrong (the default store's bucket is missing or refuses
    # callvault's credentials): the operator must fix it, retrying does not help
    MISCONFIGURED = "190008"


@dataclass
class ErrorItem:
    code: str
    title: str
    detail: str | None = None
    pointer: str | None = None
    parameter: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "title": self.title}
        if self.detail is not None:
            body["detail"] = self.detail
        source = {k: v for k, v in (("pointer", self.pointer), ("parameter", self.parameter)) if v}
        if source:
            body["source"] = source
        if self.meta:
            body["meta"] = self.meta
        return body


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        items: Sequence[ErrorItem],
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(items[0].detail or items[0].title)
        self.status = status
        self.items = list(items)
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.items, self.headers)


def error_response(
    status: int, items: Sequence[ErrorItem], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 409:
        # the official SDKs retry 409 (a lock timeout at Telnyx) unless told not to; ours are
        # state conflicts that a retry cannot fix
        headers["x-should-retry"] = "false"
    return JSONResponse(
        {"errors": [item.as_json() for item in items]}, status_code=status, headers=headers
    )


def unauthorized(detail: str = "Unauthorized") -> ApiError:
    return ApiError(
        401,
        [
            ErrorItem(
                Code.AUTHENTICATION_FAILED,
                "Authentication failed",
                detail,
                meta={"url": "https://developers.telnyx.com/docs/overview/errors/10009"},
            )
        ],
    )


def not_found(pointer: str | None = None, parameter: str | None = None) -> ApiError:
    return ApiError(
        404,
        [
            ErrorItem(
                Code.NOT_FOUND,
                "Resource not found",
                "The requested resource or URL could not be found.",
                pointer=pointer,
                parameter=parameter,
            )
        ],
    )


def invalid(detail: str, pointer: str | None = None, parameter: str | None = None) -> ApiError:
    return ApiError(
        422,
        [
            ErrorItem(
                Code.BAD_REQUEST, "Invalid value", detail, pointer=pointer, parameter=parameter
            )
        ],
    )


def bad_request(detail: str, parameter: str | None = None) -> ApiError:
    return ApiError(400, [ErrorItem(Code.BAD_REQUEST, "Bad request", detail, parameter=parameter)])


def unknown_parameter(name: str) -> ApiError:
    return ApiError(
        400,
        [
            ErrorItem(
                Code.UNKNOWN_PARAMETER,
                "Unknown parameter",
                "This operation does not know this query parameter.",
                parameter=name,
            )
        ],
    )


def request_timeout(detail: str) -> ApiError:
    return ApiError(408, [ErrorItem(Code.REQUEST_TIMEOUT, "Request timeout", detail)])


def too_large(detail: str) -> ApiError:
    return ApiError(413, [ErrorItem(Code.PAYLOAD_TOO_LARGE, "Payload too large", detail)])


def conflict(detail: str, pointer: str | None = None) -> ApiError:
    return ApiError(409, [ErrorItem(Code.CONFLICT, "Conflict", detail, pointer=pointer)])


def duplicate(detail: str, pointer: str | None = None) -> ApiError:
    return ApiError(
        409, [ErrorItem(Code.DUPLICATE_RESOURCE, "Duplicate resource", detail, pointer=pointer)]
    )


def unsupported_media(detail: str) -> ApiError:
    return ApiError(415, [ErrorItem(Code.UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type", detail)])


def forbidden(detail: str) -> ApiError:
    return ApiError(403, [ErrorItem(Code.AUTHORIZATION_FAILED, "Authorization failed", detail)])


# how long a client should wait before trying again: the database is away / storage is full
DATABASE_RETRY_AFTER_SECS = 5
STORAGE_FULL_RETRY_AFTER_SECS = 30


def unavailable(detail: str, retry_after: int = DATABASE_RETRY_AFTER_SECS) -> ApiError:
    """503 + Retry-After: a dependency (the database, a store, STS) is away for now."""
    return ApiError(
        503,
        [ErrorItem(Code.SERVICE_UNAVAILABLE, "Service unavailable", detail)],
        headers={"Retry-After": str(retry_after)},
    )


def database_unavailable_error() -> ApiError:
    return unavailable("The database is not available right now; try again shortly.")


def misconfigured(detail: str) -> ApiError:
    """500 without Retry-After: a configuration error of the platform, not a passing outage."""
    return ApiError(500, [ErrorItem(Code.MISCONFIGURED, "Server misconfigured", detail)])


def insufficient_storage(detail: str) -> ApiError:
    """507: the disk or the store is full; the request can succeed once space returns."""
    return ApiError(
        507,
        [ErrorItem(Code.INSUFFICIENT_STORAGE, "Insufficient storage", detail)],
        headers={"Retry-After": str(STORAGE_FULL_RETRY_AFTER_SECS)},
    )


def pointer_for(loc: Sequence[str | int]) -> tuple[str | None, str | None]:
    """Map a Pydantic error location to a JSON pointer (body) or a parameter name (query/path)."""
    if not loc:
        return None, None
    where, rest = loc[0], [str(part) for part in loc[1:]]
    if where == "body":
        # drop discriminator tags Pydantic inserts for tagged unions (e.g. "s3", "function-after")
        return "/" + "/".join(rest), None
    return None, ".".join(rest) or None


def _validation_items(exc: RequestValidationError) -> list[ErrorItem]:
    items = []
    for error in exc.errors():
        loc = [part for part in error.get("loc", ()) if not _is_union_tag(part)]
        if error.get("type") == "json_invalid":
            raise bad_request("The body is not valid JSON.")
        pointer, parameter = pointer_for(loc)
        message = error_message(error)
        items.append(ErrorItem(Code.BAD_REQUEST, "Invalid value", message, pointer, parameter))
    return items or [ErrorItem(Code.BAD_REQUEST, "Invalid value", "The request is not valid.")]


def error_message(error: Mapping[str, Any]) -> str:
    """One Pydantic error in words: a pattern mismatch says which characters are allowed
    ("should match pattern '^[!-.0-\\[\\]-~]{1,128}$'" helps no one)."""
    message = str(error.get("msg", "Invalid value")).removeprefix("Value error, ")
    if error.get("type") == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        return pattern_in_words(pattern) or message
    return message


_SIMPLE_PATTERN = re.compile(r"\^\[(?P<chars>.+)\](?P<count>\{\d+(?:,\d+)?\}|\+)\$")
_VISIBLE = [chr(code) for code in range(0x21, 0x7F)]
_GROUPS = (  # in this order: hexadecimal only when not all letters are allowed
    ("letters", set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")),
    ("capital letters", set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")),
    ("small letters", set("abcdefghijklmnopqrstuvwxyz")),
    ("hexadecimal digits", set("0123456789abcdefABCDEF")),
    ("digits", set("0123456789")),
)


def pattern_in_words(pattern: str) -> str | None:
    """'^[A-Za-z0-9._-]{1,40}$' -> "must be 1 to 40 characters: letters, digits, '.', '_' or
    '-'" (pure). None for a pattern that is not one character class with a length."""
    match = _SIMPLE_PATTERN.fullmatch(pattern)
    if match is None:
        return None
    try:
        allowed = {c for c in [*_VISIBLE, " "] if re.fullmatch(f"[{match['chars']}]", c)}
    except re.error:
        return None
    count = match["count"]
    if count == "+":
        length = "at least 1 character"
    else:
        low, _, high = count.strip("{}").partition(",")
        length = f"{low} to {high} characters" if high else f"exactly {low} characters"
    missing = [c for c in _VISIBLE if c not in allowed]
    if " " not in allowed and len(missing) <= 4:
        kinds = "printable ASCII characters except space"
        if missing:
            kinds += ", " + _listed(missing, "and")
        return f"must be {length}: {kinds}"
    words, rest = [], set(allowed)
    for name, group in _GROUPS:
        if group <= rest:
            words.append(name)
            rest -= group
    words += sorted(rest)
    return f"must be {length}: {_listed(words, 'or')}"


def _listed(items: Sequence[str], last: str) -> str:
    items = [item if len(item) > 1 else f"'{item}'" for item in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _is_union_tag(part: Any) -> bool:
    # Pydantic puts the matched union member's tag into the location; it is not a field
    return isinstance(part, str) and (part.startswith("function-") or part in UNION_TAGS)


UNION_TAGS: set[str] = set()


async def _handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _handle_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    try:
        return error_response(422, _validation_items(exc))
    except ApiError as api_error:
        return api_error.response()


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {
        404: (Code.NOT_FOUND, "Resource not found"),
        405: (Code.METHOD_NOT_ALLOWED, "Method not allowed"),
    }
    code, title = titles.get(exc.status_code, (str(exc.status_code), "Error"))
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404:
        detail = "The requested resource or URL could not be found."
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110 wants every method of the resource in Allow; Starlette names only those of
        # the first route that matched the path (FastAPI has one route per method)
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(exc.status_code, [ErrorItem(code, title, detail)], headers)


def _allowed_methods(request: Request) -> list[str]:
    # the OpenAPI document lists every operation by path template: public and cached
    wanted = request.url.path.rstrip("/").split("/")
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        parts = template.rstrip("/").split("/")
        if len(parts) == len(wanted) and all(
            part == given or (part.startswith("{") and part.endswith("}") and given)
            for part, given in zip(parts, wanted, strict=True)
        ):
            methods |= {method.upper() for method in operations if method != "parameters"}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    if database_unavailable(exc):
        # not a bug: the database is away (down, restarting, unreachable); clients retry
        log.warning("database unavailable", path=request.url.path, error_type=type(exc).__name__)
        return database_unavailable_error().response()
    # one line, the traceback in its `exception` field (logs.py)
    log.error("unhandled error", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
    return error_response(
        500, [ErrorItem(Code.UNEXPECTED, "Unexpected error", "An unexpected error occurred.")]
    )


class DatabaseOutageAnswer:
    """A pure ASGI middleware (the outermost) that answers an unavailable database with the
    503 and logs one warning line. The handler for `Exception` alone is not enough: Starlette's
    ServerErrorMiddleware answers with it and then re-raises, so the server logged a whole
    traceback ("Exception in ASGI application") for every 503 of an outage."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started or not database_unavailable(exc):
                raise  # a bug (500 and its traceback), or an answer already under way
            log.warning("database unavailable", path=scope["path"], error_type=type(exc).__name__)
            await database_unavailable_error().response()(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _handle_api_error)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(Exception, _handle_unexpected)


# ---- the error body as a model, for the OpenAPI description of every operation's errors


class ErrorSourceModel(BaseModel):
    pointer: str | None = Field(
        default=None, description="JSON pointer (RFC 6901) to the offending body field."
    )
    parameter: str | None = Field(
        default=None, description="The query or path parameter that caused the error."
    )


class ErrorModel(BaseModel):
    code: str = Field(description="Error code (a numeric string), e.g. 10005.")
    title: str
    detail: str | None = None
    source: ErrorSourceModel | None = None
    meta: dict[str, Any] | None = None


class ErrorsBody(BaseModel):
    errors: list[ErrorModel]


ERROR_DESCRIPTIONS = {
    400: "Bad request (code 10015: the body is not valid JSON; code 190005: an unknown query "
    "parameter, named in `source.parameter`).",
    401: "Authentication failed (code 10009): the API key is missing or not valid.",
    404: "Resource not found (code 10005); also for another account's resources.",
    408: "Request timeout (code 10008): the body arrived too slowly.",
    409: "Conflict with the resource's current state (code 10012 or 190001).",
    413: "The request is too large (code 190002).",
    422: "Invalid value (code 10015); `source.pointer` names the offending field.",
    500: "Server misconfigured (code 190008: e.g. the default store's bucket is missing; "
    "the operator must fix it, `GET /ready` names the check) or an unexpected error (10007).",
    503: "Service unavailable (code 190003): try again after `Retry-After` seconds.",
    507: "Insufficient storage (code 190006): the disk or the store is full.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all with the Telnyx error body."""
    return {
        status: {"model": ErrorsBody, "description": ERROR_DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }
