"""Query parameters of the /v2 API: nothing silently ignored, values checked the same way.

One mechanism for every operation: `reject_unknown_query` (installed once, for the whole app)
compares the request's query parameters with the ones the matched route declares — its own
`Query(alias=...)` parameters and those of its dependencies, read from FastAPI's dependant tree —
and answers 400 (`source.parameter` naming the first unknown one) for anything else. A misspelled
filter therefore never returns unfiltered results (and never feeds a bulk delete).

`IsoDateTime` is the one parser of ISO 8601 filter values (`filter[created_at][gte]`, ...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from callvault.errors import ERROR_DESCRIPTIONS, bad_request, unknown_parameter
from callvault.moments import as_utc

STRICT_PREFIX = "/v2/"
_CACHE_ATTRIBUTE = "_callvault_query_names"


def declared_query_names(dependant: Dependant) -> frozenset[str]:
    """Every query parameter name (alias) a route reads, its dependencies' included."""
    names: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        names.update(field.alias for field in current.query_params)
        stack.extend(current.dependencies)
    return frozenset(names)


def known_query_names(route: Any) -> frozenset[str] | None:
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return None
    # kept on the route itself (routes are not hashable; an id() could be reused by another)
    known: frozenset[str] | None = getattr(route, _CACHE_ATTRIBUTE, None)
    if known is None:
        known = declared_query_names(dependant)
        setattr(route, _CACHE_ATTRIBUTE, known)
    return known


async def reject_unknown_query(request: Request) -> None:
    """400 for a query parameter the matched /v2 operation does not declare, or one given
    twice."""
    if not request.url.path.startswith(STRICT_PREFIX):
        return
    known = known_query_names(request.scope.get("route"))
    if known is None:
        return
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in known:
            raise unknown_parameter(name)
        if name in seen:  # every parameter takes one value: which one would win is a guess
            raise bad_request("This query parameter is given more than once.", parameter=name)
        seen.add(name)


def document_unknown_parameters(app: FastAPI) -> None:
    """Every /v2 operation may answer 400 for an unknown parameter: say so in the OpenAPI."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        cached = app.openapi_schema is not None
        document = generate()  # FastAPI caches it in app.openapi_schema: changed once
        if not cached:
            for path, operations in document.get("paths", {}).items():
                if not path.startswith(STRICT_PREFIX):
                    continue
                for operation in operations.values():
                    operation.setdefault("responses", {}).setdefault("400", _UNKNOWN_PARAMETER)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


_UNKNOWN_PARAMETER = {
    "description": ERROR_DESCRIPTIONS[400],
    # ErrorsBody is in the components: every operation documents its errors with it
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorsBody"}}},
}


def parse_iso_datetime(value: Any) -> Any:
    """An ISO 8601 date-time (or date) as an aware datetime in UTC; a zone-less one is UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PydanticCustomError(
                "iso8601", "must be an ISO 8601 date-time such as 2019-03-29T11:10:00Z"
            ) from None
    else:
        raise PydanticCustomError("iso8601", "must be an ISO 8601 date-time")
    return as_utc(parsed)


IsoDateTime = Annotated[
    datetime,
    BeforeValidator(parse_iso_datetime),
    WithJsonSchema({"type": "string", "format": "date-time", "example": "2019-03-29T11:10:00Z"}),
]
