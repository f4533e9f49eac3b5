"""``WS /ws/cameras/{camera_id}``: one CameraPrediction JSON message per tick.

Each connection gets its own latest-wins mailbox and sender task (see publisher.py), and a
receive loop that notices when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from service.api.deps import websocket_token_ok

__all__ = ["CLOSE_TRY_AGAIN_LATER", "CLOSE_UNAUTHORIZED", "CLOSE_UNKNOWN_CAMERA", "router"]

router = APIRouter(tags=["stream"])

CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN_CAMERA = 4404
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455: the server is over capacity


@router.websocket("/ws/cameras/{camera_id}")
async def camera_predictions(websocket: WebSocket, camera_id: str) -> None:
    runtime = websocket.app.state.runtime
    await websocket.accept()
    if not websocket_token_ok(websocket):
        await websocket.close(CLOSE_UNAUTHORIZED, "missing or wrong access token")
        return
    if camera_id not in runtime.cameras.ids:
        known = ", ".join(runtime.cameras.ids)
        await websocket.close(CLOSE_UNKNOWN_CAMERA, f"unknown camera {camera_id!r}; known: {known}"[:120])
        return
    # Each subscriber costs a task and a mailbox: cap them so a flood of connections cannot
    # starve the event loop that publishes every camera's ticks.
    cap = runtime.settings.max_subscribers
    if sum(runtime.publisher.subscriber_counts().values()) >= cap:
        await websocket.close(CLOSE_TRY_AGAIN_LATER, f"{cap} subscribers already connected; try again later")
        return
    sub = runtime.publisher.subscribe(camera_id, websocket.send_text)
    sender = asyncio.create_task(sub.run())
    receiver = asyncio.create_task(_drain(websocket))
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        runtime.publisher.unsubscribe(sub)
        for task in (sender, receiver):
            task.cancel()
        for task in (sender, receiver):
            with contextlib.suppress(BaseException):
                await task
        # A client that stopped reading never acknowledges a close: bound the wait, or the
        # handler (and its connection) would linger forever.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await websocket.close()


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until the client disconnects."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
