"""What the upload endpoints (/classify, /classify/batch) share: a capped body, its multipart form,
each part's declared type, and the 503 answer to an overloaded engine."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.images import ImageRejected
from service.runtime import Overloaded

__all__ = ["is_multipart", "overloaded_response", "parse_form", "part_type", "read_capped"]


async def read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ImageRejected(413, f"body of {int(declared)} bytes is over the {cap}-byte cap")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ImageRejected(413, f"body is over the {cap}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def parse_form(request: Request, body: bytes, max_files: int, too_many_status: int = 413) -> FormData:
    """The multipart form of a body already read (and capped) by :func:`read_capped`.

    Starlette refuses a malformed body, or more than ``max_files`` files, with its own HTTPException
    (always 400), which would bypass the endpoints' error handling and metrics: it comes out as an
    :class:`ImageRejected` instead, with ``too_many_status`` for too many files."""

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=max_files, max_fields=max_files + 7)
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            raise ImageRejected(too_many_status, f"more than {max_files} files in one request") from exc
        raise ImageRejected(400, f"malformed multipart body: {detail}") from exc


def part_type(upload: UploadFile) -> str | None:
    """The media type a part declares, or None to let the bytes decide.

    Browsers and curl label a part by its file name's extension and fall back to
    application/octet-stream; check_image then sniffs the bytes themselves."""
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    return None if declared == "application/octet-stream" else upload.content_type


def overloaded_response(exc: Overloaded) -> JSONResponse:
    return JSONResponse(
        {"detail": f"over capacity: {exc}"},
        status_code=503,
        headers={"Retry-After": str(max(1, int(exc.retry_after_s)))},
    )
