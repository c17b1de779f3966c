"""`/v2/docs`: Swagger UI over `/v2/openapi.json`, served from this origin only.

FastAPI's own docs page loads Swagger UI from a CDN with no integrity check: whoever controls
that script runs it on the console's origin, next to its session. Here every asset comes from
this server — Swagger UI's files as the `fastapi-offline` package ships them, and a small
initializer of ours instead of an inline script — under the console's Content-Security-Policy
(no third-party source, no inline script). Off unless `CALLVAULT_API_DOCS` is true: a service
that does not need the page does not serve 1.5 MB of script. `/v2/openapi.json` is served
either way.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request, Response

from callvault.auth import runtime_of
from callvault.config import TRUE_WORDS
from callvault.console.web import add_security_headers, render
from callvault.errors import not_found

# a plain route class: under /v2, a refusal is the API's JSON error, not a console page
router = APIRouter(prefix="/v2/docs", include_in_schema=False)

# name -> (package, path inside it, media type)
ASSETS = {
    "swagger-ui.css": ("fastapi_offline", "static/swagger-ui.css", "text/css"),
    "swagger-ui-bundle.js": ("fastapi_offline", "static/swagger-ui-bundle.js", "text/javascript"),
    "api-docs.js": ("callvault.console", "static/api-docs.js", "text/javascript"),
}


def docs_enabled(request: Request) -> bool:
    value = runtime_of(request).settings.environ.get("CALLVAULT_API_DOCS", "")
    return value.strip().lower() in TRUE_WORDS


@router.get("")
async def docs_page(request: Request) -> Response:
    if not docs_enabled(request):
        raise not_found()
    response = render(request, "api_docs.html", openapi_url="/v2/openapi.json")
    add_security_headers(request, response)
    return response


@router.get("/static/{name}")
async def docs_asset(request: Request, name: str) -> Response:
    if not docs_enabled(request) or name not in ASSETS:
        raise not_found()
    package, path, media_type = ASSETS[name]
    content = resources.files(package).joinpath(path).read_bytes()
    response = Response(
        content, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"}
    )
    add_security_headers(request, response)
    return response
