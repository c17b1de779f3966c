"""The console's HTTP plumbing: templates, security headers, sign-in and CSRF checks.

Every console route uses `ConsoleRoute`, which turns the services' `ApiError`s into HTML pages
with the same status and message, sends visitors who are not signed in to the login page, and
puts the security headers on every answer (a strict Content-Security-Policy: nothing but this
origin's own files, no inline script).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from callvault.accounts.models import Account
from callvault.auth import runtime_of
from callvault.console import sessions
from callvault.errors import ApiError

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
# sent when the visitor talks https to us (is_https): browsers then refuse plain http to this
# host for a year; no includeSubDomains, the operator's other hosts are not ours to decide
HSTS = "max-age=31536000"
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=PackageLoader("callvault.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def _size(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def _duration(millis: int | None) -> str:
    if millis is None:
        return "—"
    seconds = millis / 1000
    return f"{int(seconds // 60)}:{seconds % 60:06.3f}"


templates.filters["when"] = _when
templates.filters["size"] = _size
templates.filters["duration"] = _duration


class NotSignedIn(Exception):
    """The visitor has no valid session: answered with a redirect to the login page."""


class CsrfRefused(Exception):
    """A state-changing form came without the session's CSRF token."""


@dataclass(frozen=True)
class Visitor:
    account: Account
    token: str
    key_id: str  # the API key this session signed in with

    @property
    def csrf_token(self) -> str:
        return sessions.csrf_token_for(self.token)


# what a page says after a form did its work; the redirect carries only the code, so a link
# cannot make the console say anything else
FLASHES = {
    "application-created": "Application created.",
    "application-saved": "Application saved.",
    "application-deleted": "Application deleted.",
    "storage-saved": "Storage saved.",
    "storage-deleted": "Storage settings deleted: new recordings stay in the default store.",
    "recording-deleted": "Recording deleted.",
    "redelivery-queued": "Queued for redelivery.",
    "delivery-queued": "Delivery queued again.",
    "api-key-revoked": "API key revoked.",
}


def render(
    request: Request,
    template: str,
    visitor: Visitor | None = None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    flash = context.pop("flash", None)
    html = templates.get_template(template).render(
        request_path=request.url.path,
        flash=FLASHES.get(flash) if isinstance(flash, str) else None,
        visitor=visitor,
        csrf_token=visitor.csrf_token if visitor else context.pop("csrf_token", ""),
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def redirect(path: str, *, flash: str | None = None) -> RedirectResponse:
    # a 303 after every POST: reloading the page never posts the form again
    if flash:
        separator = "&" if "?" in path else "?"
        path = f"{path}{separator}{urlencode({'flash': flash})}"
    return RedirectResponse(path, status_code=303)


def is_https(request: Request) -> bool:
    """Whether the visitor's browser talks https to us: the public URL says so (behind a proxy
    that ends TLS, the request itself arrives as http), or the request came over https (directly,
    or through a proxy trusted with --forwarded-allow-ips)."""
    public_url: str = runtime_of(request).settings.public_url
    return public_url.lower().startswith("https://") or request.url.scheme == "https"


@dataclass(frozen=True)
class CookiePolicy:
    secure: bool
    session_name: str
    session_path: str
    login_name: str
    login_path: str


SECURE_COOKIES = CookiePolicy(
    True, sessions.SECURE_COOKIE_NAME, "/", sessions.SECURE_LOGIN_CSRF_COOKIE, "/"
)
PLAIN_COOKIES = CookiePolicy(
    False, sessions.COOKIE_NAME, "/console", sessions.LOGIN_CSRF_COOKIE, "/console/login"
)


def cookie_policy(request: Request) -> CookiePolicy:
    return SECURE_COOKIES if is_https(request) else PLAIN_COOKIES


async def current_visitor(request: Request) -> Visitor:
    """The dependency of every signed-in page."""
    token = request.cookies.get(cookie_policy(request).session_name, "")
    found = await sessions.account_for(runtime_of(request), token)
    if found is None:
        raise NotSignedIn()
    return Visitor(account=found[0], token=token, key_id=found[1])


async def checked_visitor(request: Request) -> Visitor:
    """The dependency of every state-changing form: signed in and carrying the CSRF token."""
    visitor = await current_visitor(request)
    form = await request.form()
    submitted = form.get(sessions.CSRF_FIELD)
    if not isinstance(submitted, str) or not sessions.csrf_matches(visitor.token, submitted):
        raise CsrfRefused()
    return visitor


def error_page(
    request: Request, status_code: int, message: str, *, back: str = "/console"
) -> HTMLResponse:
    titles = {
        404: "Not found",
        403: "Refused",
        422: "Invalid value",
        409: "Conflict",
        429: "Too many tries",
    }
    return render(
        request,
        "error.html",
        status_code=status_code,
        title=titles.get(status_code, "Error"),
        message=message,
        back=back,
    )


def add_security_headers(request: Request, response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if is_https(request):
        response.headers.setdefault("Strict-Transport-Security", HSTS)


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            response: Response
            try:
                response = await original(request)
            except NotSignedIn:
                response = redirect("/console/login")
            except CsrfRefused:
                response = error_page(
                    request,
                    403,
                    "The form was refused: it did not carry a valid CSRF token. "
                    "Reload the page and try again.",
                )
            except ApiError as exc:
                message = " ".join(item.detail or item.title for item in exc.items)
                response = error_page(request, exc.status, message)
            except RequestValidationError:
                response = error_page(request, 422, "The request is not valid.")
            add_security_headers(request, response)
            return response

        return handler
