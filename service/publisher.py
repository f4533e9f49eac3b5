"""Fan-out of tick messages to websocket subscribers without letting one slow client hurt others.

uvicorn applies write flow control, so awaiting each client's send in turn would let one stalled
client stall everyone. Instead every subscriber owns a one-slot, latest-wins mailbox and its own
sender task: a new message overwrites an unsent one (counted as dropped), so a slow client sees
fewer messages, never older ones, and memory stays bounded. All methods except
``publish_threadsafe`` run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Publisher", "Subscriber"]

log = logging.getLogger(__name__)
Send = Callable[[str], Awaitable[None]]


class Subscriber:
    def __init__(self, camera_id: str, send: Send, send_timeout: float) -> None:
        self.camera_id = camera_id
        self._send = send
        self._send_timeout = send_timeout
        self._slot: str | None = None
        self._ready = asyncio.Event()
        self.sent = 0
        self.dropped = 0

    def offer(self, text: str) -> bool:
        """Put a message in the mailbox; returns True when it overwrote an unsent one."""
        overwrote = self._slot is not None
        if overwrote:
            self.dropped += 1
        self._slot = text
        self._ready.set()
        return overwrote

    async def run(self) -> None:
        """Send until the client goes away or a send stalls past the timeout."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            text, self._slot = self._slot, None
            if text is None:
                continue
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
            # arrives as the send completes, leaving this task unkillable.
            async with asyncio.timeout(self._send_timeout):
                await self._send(text)
            self.sent += 1


class Publisher:
    def __init__(self, send_timeout: float = 10.0, on_drop: Callable[[str], None] | None = None) -> None:
        self.send_timeout = send_timeout
        self._on_drop = on_drop
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._last: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, camera_id: str, send: Send) -> Subscriber:
        sub = Subscriber(camera_id, send, self.send_timeout)
        self._subscribers.setdefault(camera_id, set()).add(sub)
        last = self._last.get(camera_id)
        if last is not None:  # a new client gets the current state at once, not after a tick
            sub.offer(last)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subscribers.get(sub.camera_id)
        if subs is not None:
            subs.discard(sub)

    def subscriber_counts(self) -> dict[str, int]:
        return {cid: len(subs) for cid, subs in self._subscribers.items()}

    def deliver(self, messages: dict[str, str]) -> None:
        """On the loop: offer each camera's message to all of its subscribers."""
        for camera_id, text in messages.items():
            self._last[camera_id] = text
            for sub in list(self._subscribers.get(camera_id, ())):
                if sub.offer(text) and self._on_drop is not None:
                    self._on_drop(camera_id)

    def publish_threadsafe(self, messages: dict[str, str]) -> None:
        """From any thread (the scheduler's): schedule delivery on the loop, never block."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop shutting down
            loop.call_soon_threadsafe(self.deliver, messages)
