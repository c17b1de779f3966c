"""Downloads from the local default store through self-signed links.

`GET /v2/recording_files/{key}?expires=…&signature=…`: the signature is the authorization (no
API key: the link is handed to whoever should fetch the file, as a presigned S3 URL would be).
A tampered, expired or incomplete link answers 403 without saying which; an S3 default store
hands out its own presigned URLs and this route answers 404 there.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from callvault import errors
from callvault.auth import get_runtime
from callvault.errors import ApiError, error_responses, not_found
from callvault.runtime import Runtime
from callvault.storage.layout import content_type_for
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
    try:
        # None: the store is remote and hands out its own links; ValueError: "..", absolute
        # and other unsafe keys
        path = runtime.default_store.local_path(key)
    except ValueError:
        raise forbidden() from None
    if path is None:
        raise not_found()
    try:
        expires_at = int(expires or "")
    except ValueError:
        raise forbidden() from None
    if not signature or not verify_link(
        runtime.settings.link_secret, key, expires_at, signature, time.time()
    ):
        raise forbidden()
    if not _inside_the_store(path, key) or not path.is_file():
        raise not_found()
    return FileResponse(path, media_type=media_type_for(key))


def _inside_the_store(path: Path, key: str) -> bool:
    """Whether the file is in the store's directory once symlinks are followed (`path` is
    that directory, resolved when the store opened, joined with the key's parts)."""
    root = path.parents[key.count("/")]
    return path.resolve().is_relative_to(root)
