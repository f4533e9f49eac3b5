"""``POST /classify``: one image, answered by its deadline with the deepest exit reached."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep, require_token
from service.images import ImageRejected, check_image, decode_checked
from service.messages import ClassifyResponse, ErrorResponse
from service.runtime import Overloaded

__all__ = ["read_capped", "router"]

router = APIRouter(tags=["classify"], dependencies=[Depends(require_token)])

# Decoding costs by pixels, not bytes (a 40 KB PNG can hold 40 M pixels): images up to this many
# pixels decode inline in well under a millisecond; bigger ones go to a worker thread so the event
# loop (and every websocket it serves) never stalls.
_INLINE_DECODE_PIXELS = 512 * 512

_ERRORS = {
    400: {"model": ErrorResponse, "description": "undecodable image, or more pixels than the cap"},
    401: {"model": ErrorResponse, "description": "missing or wrong access token"},
    413: {"model": ErrorResponse, "description": "body larger than the upload cap"},
    415: {"model": ErrorResponse, "description": "not a JPEG, PNG or WebP image"},
    503: {"model": ErrorResponse, "description": "beyond capacity; retry after Retry-After seconds"},
}


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


async def _image_bytes(request: Request, cap: int) -> tuple[bytes, str | None]:
    body = await read_capped(request, cap)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return body, content_type or None

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ImageRejected(400, "multipart body has no 'file' field with an image")
    # Browsers and curl label a part by its file name's extension and fall back to
    # application/octet-stream; the bytes themselves then decide (check_image sniffs them).
    part_type = (upload.content_type or "").split(";")[0].strip().lower()
    return await upload.read(), None if part_type == "application/octet-stream" else upload.content_type


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=_ERRORS,
    summary="Classify an image within a deadline",
    openapi_extra={
        "requestBody": {
            "content": {
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/webp": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
            },
            "required": True,
        }
    },
)
async def classify(
    request: Request,
    runtime: RuntimeDep,
    deadline_ms: Annotated[
        float, Query(ge=1, le=10000, allow_inf_nan=False, description="answer within this many milliseconds")
    ] = 50,
    exit: Annotated[int | None, Query(ge=1, description="force this exit instead of the deepest in time")] = None,
) -> JSONResponse:
    received_at = runtime.clock()
    status = 200
    try:
        classifier = runtime.classifier
        if classifier is not None and exit is not None and exit > classifier.exits_total:
            raise HTTPException(422, f"exit must be between 1 and {classifier.exits_total}")
        settings = runtime.settings
        data, media_type = await _image_bytes(request, settings.max_upload_bytes)
        actual_type, width, height = check_image(data, media_type, settings.max_image_pixels)
        if width * height > _INLINE_DECODE_PIXELS:
            image = await asyncio.to_thread(decode_checked, data, actual_type)
        else:
            image = decode_checked(data, actual_type)
        answer = await runtime.classify(image, deadline_ms, received_at, forced_exit=exit)
    except ImageRejected as exc:
        status = exc.status
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)
    except Overloaded as exc:
        status = 503
        return JSONResponse(
            {"detail": f"over capacity: {exc}"},
            status_code=503,
            headers={"Retry-After": str(max(1, int(exc.retry_after_s)))},
        )
    except HTTPException as exc:
        status = exc.status_code
        raise
    finally:
        if runtime.metrics is not None:
            runtime.metrics.classify_requests.inc(code=str(status))
    if runtime.metrics is not None:
        runtime.metrics.classify_latency.observe(answer.elapsed_ms)
        runtime.metrics.classify_exit.observe(answer.exit)
    return JSONResponse(answer.model_dump())
