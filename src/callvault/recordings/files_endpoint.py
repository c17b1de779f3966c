"""Downloads from the local default store through self-signed links.

`GET /v2/recording_files/{key}?expires=…&signature=…`: the signature is the authorization (no
API key: the link is handed to whoever should fetch the file, as a presigned S3 URL would be).
A tampered, expired or incomplete link answers 403 without saying which; an S3 default store
hands out its own presigned URLs and this route answers 404 there.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from callvault import errors
from callvault.auth import get_runtime
from callvault.errors import ApiError, error_responses, not_found
from callvault.runtime import Runtime
from callvault.storage.layout import content_type_for
from callvault.storage.local import LocalStore
from callvault.storage.signed_links import verify_link

router = APIRouter(tags=["recordings"])


def forbidden() -> ApiError:
    return errors.forbidden("The download link is invalid or has expired.")


def media_type_for(key: str) -> str:
    extension = key.rsplit(".", 1)[-1] if "." in key.rsplit("/", 1)[-1] else ""
    try:
        return content_type_for(extension)
    except ValueError:
        return "application/octet-stream"


@router.head("/v2/recording_files/{key:path}", include_in_schema=False)
@router.get(
    "/v2/recording_files/{key:path}",
    operation_id="download_recording_file",
    summary="Download a recording through a signed link (from download_urls)",
    response_class=FileResponse,
    responses={
        200: {"content": {"audio/wav": {}, "audio/mpeg": {}}, "description": "The audio."},
        **error_responses(403, 404),
    },
)
async def download_recording_file(
    key: str,
    expires: str | None = None,
    signature: str | None = None,
    runtime: Runtime = Depends(get_runtime),
) -> FileResponse:
    store = runtime.default_store
    if not isinstance(store, LocalStore):
        raise not_found()
    try:
        expires_at = int(expires or "")
    except ValueError:
        raise forbidden() from None
    if not signature or not verify_link(
        runtime.settings.link_secret, key, expires_at, signature, time.time()
    ):
        raise forbidden()
    try:
        path = store.path_for(key)  # refuses "..", absolute and other unsafe keys
    except ValueError:
        raise forbidden() from None
    if not path.resolve().is_relative_to(store.root) or not path.is_file():
        raise not_found()
    return FileResponse(path, media_type=media_type_for(key))
