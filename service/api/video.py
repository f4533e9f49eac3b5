"""The cameras' pictures: ``GET /cameras/{id}/stream.mjpg`` (MJPEG) and ``GET /cameras/{id}/snapshot.jpg``.

The video only peeks at each camera's newest frame, so watching never steals frames from the tick
scheduler. Each viewer encodes at most ``fps`` frames per second, and only frames it has not sent yet;
JPEG encoding runs in a worker thread because a 720p encode takes milliseconds the event loop (and with
it every websocket) cannot spare. Labels are not burnt into the picture: the overlay page draws them over
it, so the video stays cheap and the same stream serves any client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from service.api.deps import RuntimeDep, SettingsDep, require_token
from service.frames import Frame
from service.runtime import Runtime

__all__ = ["BOUNDARY", "MAX_WIDTH", "encode_jpeg", "mjpeg_parts", "router"]

router = APIRouter(tags=["video"], dependencies=[Depends(require_token)])

BOUNDARY = "frame"
MAX_WIDTH = 1280  # wider frames are downscaled: a browser tile never needs more, and encoding cost grows with area
POLL_S = 0.01  # how often a viewer that is ahead of its camera looks for the next frame
# With no new frame for this long (a camera that is down, a still source), the last picture is sent again:
# a silent response is what proxies close (nginx after 60 s) and what a browser's <img> never retries.
KEEPALIVE_S = 2.0
# Proxies and browsers must neither cache nor buffer a live picture.
_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}
_RETRY = {"Retry-After": "1"}

Fps = Annotated[float | None, Query(gt=0, le=30, description="frames per second cap (default: mjpeg_fps)")]
Quality = Annotated[int | None, Query(ge=1, le=100, description="JPEG quality (default: mjpeg_quality)")]


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """One BGR frame as JPEG bytes, downscaled to :data:`MAX_WIDTH` first if wider; never writes to ``image``."""
    height, width = image.shape[:2]
    if width > MAX_WIDTH:
        size = (MAX_WIDTH, max(1, round(height * MAX_WIDTH / width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for a {width}x{height} frame")
    return buffer.tobytes()


def _part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode("ascii")
    return head + jpeg + b"\r\n"


async def mjpeg_parts(
    peek: Callable[[], Frame | None],
    finished: Callable[[], Awaitable[bool]],
    fps: float,
    quality: int,
) -> AsyncIterator[bytes]:
    """Multipart parts of new frames, at most ``fps`` a second, until ``finished()`` says so.

    ``finished`` is awaited before every frame (client gone, service stopping). A frame already sent is
    never encoded again: a viewer faster than its camera just waits for the next one, and every
    :data:`KEEPALIVE_S` without one gets the last part again (not re-encoded).
    """
    loop = asyncio.get_running_loop()
    period = 1.0 / fps
    last_seq: int | None = None
    last_part: bytes | None = None
    last_sent = loop.time()
    while not await finished():
        frame = peek()
        if frame is None or frame.seq == last_seq:
            if last_part is not None and loop.time() - last_sent >= KEEPALIVE_S:
                last_sent = loop.time()
                yield last_part
                continue
            await asyncio.sleep(min(POLL_S, period))
            continue
        started = loop.time()
        last_seq = frame.seq
        last_part = _part(await asyncio.to_thread(encode_jpeg, frame.image, quality))
        last_sent = loop.time()
        yield last_part
        # Pace from the start of this frame, so the encode time counts towards the period.
        await asyncio.sleep(max(0.0, started + period - loop.time()))


def _known_camera(runtime: Runtime, camera_id: str) -> None:
    if camera_id not in runtime.cameras.ids:
        known = ", ".join(runtime.cameras.ids) or "none"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown camera {camera_id!r}; known cameras: {known}")


@router.get(
    "/cameras/{camera_id}/stream.mjpg",
    response_class=StreamingResponse,
    summary="Live MJPEG video of a camera (multipart/x-mixed-replace), for an <img> tag",
    responses={200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}}, 404: {}, 503: {}},
)
async def stream(
    camera_id: str,
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    fps: Fps = None,
    quality: Quality = None,
) -> Response:
    _known_camera(runtime, camera_id)
    if not runtime.ready:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the service is not ready", headers=_RETRY)

    async def finished() -> bool:
        # The client left, or the service is stopping. uvicorn waits for open responses *before* it runs
        # the lifespan shutdown, so an endless response must notice the stop by itself: it watches
        # runtime.ready, which a server can clear the moment it is asked to exit (a uvicorn.Server whose
        # handle_exit does so ends every stream within one frame). Failing that, uvicorn's graceful-shutdown
        # timeout cancels this generator, which holds nothing that needs cleaning up, but logs a traceback.
        return not runtime.ready or await request.is_disconnected()

    parts = mjpeg_parts(
        lambda: runtime.cameras.peek(camera_id),
        finished,
        fps or settings.mjpeg_fps,
        quality or settings.mjpeg_quality,
    )
    return StreamingResponse(
        parts,
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={**_NO_CACHE, "X-Accel-Buffering": "no"},  # nginx would otherwise buffer the stream
    )


@router.get(
    "/cameras/{camera_id}/snapshot.jpg",
    response_class=Response,
    summary="The camera's newest frame as one JPEG (503 until the first frame arrives)",
    responses={200: {"content": {"image/jpeg": {}}}, 404: {}, 503: {}},
)
async def snapshot(camera_id: str, runtime: RuntimeDep, settings: SettingsDep, quality: Quality = None) -> Response:
    _known_camera(runtime, camera_id)
    frame = runtime.cameras.peek(camera_id)
    if frame is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"camera {camera_id!r} has no frame yet", headers=_RETRY
        )
    jpeg = await asyncio.to_thread(encode_jpeg, frame.image, quality or settings.mjpeg_quality)
    return Response(jpeg, media_type="image/jpeg", headers={**_NO_CACHE, "X-Frame-Seq": str(frame.seq)})
