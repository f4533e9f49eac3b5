"""``POST /classify``: one image, answered by its deadline with the deepest exit reached."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep, require_token
from service.api.uploads import is_multipart, overloaded_response, parse_form, part_type, read_capped
from service.images import ImageRejected, check_image, decode_checked
from service.messages import ClassifyResponse, ErrorResponse
from service.runtime import Overloaded

__all__ = ["router"]

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


async def _image_bytes(request: Request, cap: int) -> tuple[bytes, str | None]:
    body = await read_capped(request, cap)
    if not is_multipart(request):
        return body, request.headers.get("content-type") or None
    upload = (await parse_form(request, body, max_files=1, too_many_status=400)).get("file")
    if upload is None or isinstance(upload, str):
        raise ImageRejected(400, "multipart body has no 'file' field with an image")
    return await upload.read(), part_type(upload)


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
        return overloaded_response(exc)
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
