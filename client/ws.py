"""Live camera predictions over ``WS /ws/cameras/{camera_id}``, as an (async) iterator that survives drops.

A dashboard should not die because the service restarted: on a dropped connection the iterator waits
``min(min_backoff * 2**n, max_backoff)`` (n counts failures since the last message) and reconnects,
and the consumer just sees the next message. Close codes that retrying cannot fix end the iteration
with an exception instead: 4404 -> ``CameraNotFound``, 4401 -> ``Unauthorized``.

Breaking out of the loop closes the socket: at once for the sync iterator (the generator is dropped),
and through asyncio's async-generator finalizer for the async one; ``with``/``async with`` closes it
deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import connect as connect_sync

from client.errors import AnytimeError, CameraNotFound, ConnectionLost, Unauthorized
from client.http import DEFAULT_URL
from client.messages import CameraPrediction

__all__ = ["Subscription", "SyncSubscription", "camera_url", "subscribe", "subscribe_sync"]

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
_RETRYABLE = (ConnectionClosed, InvalidHandshake, OSError, TimeoutError)


def camera_url(base_url: str, camera_id: str, token: str | None = None) -> str:
    """``http(s)://host[/prefix]`` -> ``ws(s)://host[/prefix]/ws/cameras/ID[?token=...]``.

    (For a browser, which cannot set headers on a websocket; this client sends the token as a header.)"""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = f"{parts.path.rstrip('/')}/ws/cameras/{quote(camera_id, safe='')}"
    return urlunsplit((scheme, parts.netloc, path, urlencode({"token": token}) if token else "", ""))


@dataclass
class _Policy:
    """What to do after a failure: which errors are final, how long to wait, when to give up."""

    camera_id: str
    reconnect: bool
    min_backoff: float
    max_backoff: float
    max_retries: int | None
    connections: int = 0  # successful handshakes so far; > 1 means the iterator has reconnected
    failures: int = 0  # failures since the last message

    def parse(self, raw: str | bytes) -> CameraPrediction | None:
        """A prediction, or None for a message type this client does not know (newer server)."""
        try:
            data = json.loads(raw)
            if isinstance(data, dict) and data.get("type", "prediction") != "prediction":
                return None
            message = CameraPrediction.model_validate(data)
        except (ValueError, ValidationError) as exc:
            raise AnytimeError(f"unexpected message on camera {self.camera_id!r}: {exc}") from exc
        self.failures = 0
        return message

    def after_failure(self, exc: Exception) -> float:
        """Raise if ``exc`` is final (or retries are spent); else the seconds to wait before reconnecting."""
        if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
            if exc.rcvd.code == CLOSE_NOT_FOUND:
                raise CameraNotFound(self.camera_id, exc.rcvd.reason) from None
            if exc.rcvd.code == CLOSE_UNAUTHORIZED:
                raise Unauthorized(401, exc.rcvd.reason or "bad or missing token") from None
        if isinstance(exc, InvalidStatus):  # refused before the handshake completed
            status = exc.response.status_code
            if status in (401, 403):
                raise Unauthorized(status, "websocket handshake refused") from None
            if status == 404:
                raise CameraNotFound(self.camera_id, "no such endpoint") from None
        self.failures += 1
        if not self.reconnect or (self.max_retries is not None and self.failures > self.max_retries):
            raise ConnectionLost(f"camera {self.camera_id!r}: {_describe(exc)}") from exc
        delay: float = min(self.min_backoff * 2.0 ** (self.failures - 1), self.max_backoff)
        log.warning("camera %r: %s; reconnecting in %.1f s", self.camera_id, _describe(exc), delay)
        return delay


def _describe(exc: Exception) -> str:
    if isinstance(exc, ConnectionClosed):
        return f"connection closed ({exc})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _auth_headers(token: str | None) -> dict[str, str]:
    """The token goes in the handshake's header, not the URL: servers and proxies log URLs."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class _Link:
    """What ``close()`` from another thread or task needs to end an iteration blocked in ``recv()``:
    a flag the loop checks instead of reconnecting, and the socket to close under it."""

    closing: bool = False
    socket: Any = None
    wake: threading.Event = field(default_factory=threading.Event)  # cuts a reconnect backoff short

    def close(self) -> None:
        self.closing = True
        self.wake.set()


async def _backoff(delay: float, link: _Link) -> None:
    """Sleep ``delay`` seconds, or until ``link`` is closed (checked every 0.1 s)."""
    end = time.monotonic() + delay
    while not link.closing and (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.1))


async def _stream(
    url: str, policy: _Policy, open_timeout: float, headers: dict[str, str], link: _Link
) -> AsyncGenerator[CameraPrediction, None]:
    while not link.closing:
        try:
            async with connect(url, open_timeout=open_timeout, additional_headers=headers) as ws:
                link.socket = ws
                if link.closing:  # closed while connecting: aclose() found no socket to close
                    return
                policy.connections += 1
                while True:
                    message = policy.parse(await ws.recv())
                    if message is not None:
                        yield message
        except InvalidURI as exc:
            raise AnytimeError(f"not a websocket URL: {url} ({exc})") from exc
        except _RETRYABLE as exc:
            if link.closing:
                return
            delay = policy.after_failure(exc)
        finally:
            link.socket = None
        await _backoff(delay, link)


def _stream_sync(
    url: str, policy: _Policy, open_timeout: float, headers: dict[str, str], link: _Link
) -> Generator[CameraPrediction, None, None]:
    while not link.closing:
        try:
            with connect_sync(url, open_timeout=open_timeout, additional_headers=headers) as ws:
                link.socket = ws  # (set before close() reads it, or checked below after it set the flag)
                if link.closing:  # closed while connecting: close() found no socket to close
                    return
                policy.connections += 1
                while True:
                    message = policy.parse(ws.recv())
                    if message is not None:
                        yield message
        except InvalidURI as exc:
            raise AnytimeError(f"not a websocket URL: {url} ({exc})") from exc
        except _RETRYABLE as exc:
            if link.closing:
                return
            delay = policy.after_failure(exc)
        finally:
            link.socket = None
        link.wake.wait(delay)


class Subscription:
    """``async for`` over a camera's predictions; ``async with`` (or ``aclose()``) closes the socket.

    ``aclose()`` may come from another task while one is waiting for the next message: that
    iteration then ends (``StopAsyncIteration``) instead of reconnecting."""

    def __init__(self, url: str, policy: _Policy, open_timeout: float, token: str | None = None) -> None:
        self.url = url
        self._policy = policy
        self._link = _Link()
        self._gen = _stream(url, policy, open_timeout, _auth_headers(token), self._link)

    @property
    def connections(self) -> int:
        """Successful connections so far (1 + reconnects)."""
        return self._policy.connections

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> CameraPrediction:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        self._link.close()
        socket = self._link.socket
        if socket is not None:
            await socket.close()  # wakes a recv() in another task with ConnectionClosed
        with contextlib.suppress(RuntimeError):  # "already running": the other task's iteration ends by itself
            await self._gen.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SyncSubscription:
    """``for`` over a camera's predictions (blocking); ``with`` (or ``close()``) closes the socket.

    ``close()`` may come from another thread while one is blocked waiting for the next message: that
    iteration then ends (``StopIteration``) instead of reconnecting."""

    def __init__(self, url: str, policy: _Policy, open_timeout: float, token: str | None = None) -> None:
        self.url = url
        self._policy = policy
        self._link = _Link()
        self._gen = _stream_sync(url, policy, open_timeout, _auth_headers(token), self._link)

    @property
    def connections(self) -> int:
        return self._policy.connections

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> CameraPrediction:
        return next(self._gen)

    def close(self) -> None:
        self._link.close()
        socket = self._link.socket
        if socket is not None:
            socket.close()  # thread-safe in websockets' sync client; wakes a blocked recv()
        with contextlib.suppress(ValueError):  # "already executing": the other thread's iteration ends by itself
            self._gen.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _policy(
    camera_id: str, reconnect: bool, min_backoff: float, max_backoff: float, max_retries: int | None
) -> _Policy:
    if min_backoff <= 0 or max_backoff < min_backoff:
        raise ValueError("need 0 < min_backoff <= max_backoff")
    return _Policy(camera_id, reconnect, min_backoff, max_backoff, max_retries)


def subscribe(
    camera_id: str,
    base_url: str = DEFAULT_URL,
    token: str | None = None,
    reconnect: bool = True,
    max_backoff: float = 30.0,
    *,
    min_backoff: float = 0.5,
    max_retries: int | None = None,
    open_timeout: float = 10.0,
) -> Subscription:
    """Async iterator of ``CameraPrediction``; ``max_retries`` bounds consecutive failures (None: forever)."""
    policy = _policy(camera_id, reconnect, min_backoff, max_backoff, max_retries)
    return Subscription(camera_url(base_url, camera_id), policy, open_timeout, token)


def subscribe_sync(
    camera_id: str,
    base_url: str = DEFAULT_URL,
    token: str | None = None,
    reconnect: bool = True,
    max_backoff: float = 30.0,
    *,
    min_backoff: float = 0.5,
    max_retries: int | None = None,
    open_timeout: float = 10.0,
) -> SyncSubscription:
    """Blocking twin of ``subscribe``, for scripts and the ``anytime watch`` command."""
    policy = _policy(camera_id, reconnect, min_backoff, max_backoff, max_retries)
    return SyncSubscription(camera_url(base_url, camera_id), policy, open_timeout, token)
