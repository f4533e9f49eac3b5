"""``POST /classify/batch``: budgeted batch classification over HTTP, as ``anytime batch`` does for a folder.

Several images in one multipart body and an average compute budget per image; the fitted thresholds
that fit the budget decide, exit by exit, which images are confident enough to leave, and only the rest
go deeper (real early exit in the service's engine, below camera ticks and /classify in priority).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from model.batch import BudgetTooSmallError
from service.api.deps import RuntimeDep, require_token
from service.api.uploads import is_multipart, overloaded_response, parse_form, part_type, read_capped
from service.images import ImageRejected, check_image, decode_checked
from service.messages import BatchClassifyResponse, ErrorResponse
from service.runtime import Overloaded

__all__ = ["router"]

router = APIRouter(tags=["classify"], dependencies=[Depends(require_token)])

_ERRORS = {
    400: {"model": ErrorResponse, "description": "no 'file' parts, or one of them undecodable or over the pixel cap"},
    401: {"model": ErrorResponse, "description": "missing or wrong access token"},
    413: {"model": ErrorResponse, "description": "body over the upload cap, or more files than max_batch_images"},
    415: {"model": ErrorResponse, "description": "a file that is not a JPEG, PNG or WebP image"},
    422: {"model": ErrorResponse, "description": "bad parameters, or a budget below exit 1's cost"},
    503: {"model": ErrorResponse, "description": "too many batch images waiting; retry after Retry-After seconds"},
}


async def _decoded_files(request: Request, runtime: RuntimeDep) -> list[tuple[str | None, np.ndarray]]:
    """Every ``file`` part, checked and decoded (off the event loop), in upload order."""
    settings = runtime.settings
    body = await read_capped(request, settings.max_upload_bytes)
    if not is_multipart(request):
        raise ImageRejected(415, "send the images as multipart/form-data, one 'file' part each")
    limit = settings.max_batch_images
    form = await parse_form(request, body, max_files=limit)
    uploads = [part for part in form.getlist("file") if not isinstance(part, str)]
    if not uploads:
        raise ImageRejected(400, "multipart body has no 'file' parts with images")
    if len(uploads) > limit:
        raise ImageRejected(413, f"more than {limit} files in one batch (max_batch_images)")  # (non-file parts aside)
    out = []
    for index, upload in enumerate(uploads):
        data = await upload.read()
        try:
            actual_type, _, _ = check_image(data, part_type(upload), settings.max_image_pixels)
            image = await asyncio.to_thread(decode_checked, data, actual_type)
        except ImageRejected as exc:
            raise ImageRejected(exc.status, f"file {index} ({upload.filename}): {exc.detail}") from exc
        out.append((upload.filename, image))
    return out


@router.post(
    "/classify/batch",
    response_model=BatchClassifyResponse,
    responses=_ERRORS,
    summary="Classify a batch of images under an average compute budget (budgeted batch classification)",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    }
                }
            },
            "required": True,
        }
    },
)
async def classify_batch(
    request: Request,
    runtime: RuntimeDep,
    budget_mflops: Annotated[
        float, Query(gt=0, allow_inf_nan=False, description="average multiply-adds per image, millions")
    ],
    deadline_ms: Annotated[
        float, Query(ge=1, le=60000, allow_inf_nan=False, description="answer within this many milliseconds")
    ] = 10000,
) -> JSONResponse:
    received_at = runtime.clock()
    status = 500  # until an answer or a refusal says otherwise
    try:
        files = await _decoded_files(request, runtime)
        answer = await runtime.classify_batch(files, budget_mflops, deadline_ms, received_at)
        status = 200
    except ImageRejected as exc:
        status = exc.status
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)
    except BudgetTooSmallError as exc:
        status = 422
        return JSONResponse({"detail": str(exc)}, status_code=422)
    except Overloaded as exc:
        status = 503
        return overloaded_response(exc)
    finally:
        if runtime.metrics is not None:
            runtime.metrics.batch_requests.inc(code=str(status))
    if runtime.metrics is not None:
        for image in answer.images:
            runtime.metrics.batch_exit.observe(image.exit)
    return JSONResponse(answer.model_dump())
