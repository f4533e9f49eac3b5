"""Test-only infrastructure for the tests/test_reliability_*.py files: real servers, bounded waits.

The reliability tests need what TestClient cannot give: a real uvicorn server (so websocket flow control
and TCP buffers are real) and a way to see whether the server's event loop was blocked. Every wait here
has a timeout so a regression fails a test instead of hanging CI. The camera that can die is in
tests/mjpeg_server.py, the misbehaving websocket clients in tests/ws_clients.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import cv2
import numpy as np

from service.config import Settings, load_settings

__all__ = [
    "TICK_HZ",
    "WS_PATH",
    "LoopLagProbe",
    "UvicornThread",
    "call_with_timeout",
    "metric_value",
    "random_jpeg",
    "reliability_settings",
    "served_metric",
    "small_write_buffer_ws_protocol",
    "tick_gaps",
    "wait_until",
]

T = TypeVar("T")

TICK_HZ = 10.0  # the reliability tests' tick rate
WS_PATH = "/ws/cameras/synthetic"


def reliability_settings(**overrides: Any) -> Settings:
    """The service's settings at the reliability tests' tick rate."""
    return load_settings(tick_hz=TICK_HZ, **overrides)


def random_jpeg(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    """A valid JPEG of noise: a real upload, but nothing any classifier has seen."""
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


# --- small utilities ---------------------------------------------------------------------------


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail (not hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def call_with_timeout(fn: Callable[[], T], timeout: float, what: str = "call") -> T:
    """Run a blocking call that has no timeout of its own (TestClient's websocket receive) with one.

    On timeout the worker thread is abandoned (it is a daemon-like pool thread); the test fails instead
    of hanging the whole suite.
    """
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise AssertionError(f"{what} did not return within {timeout:.1f} s") from None
    finally:
        pool.shutdown(wait=False)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """Sum of the samples of ``name`` whose labels include ``labels`` in Prometheus text; None if absent."""
    total: float | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            total = (total or 0.0) + float(value)
    return total


def served_metric(http: Any, name: str) -> float:
    """A counter's value from a running server's ``/metrics`` (0 before its first sample)."""
    return metric_value(http.get("/metrics").text, name) or 0.0


def tick_gaps(ticks: list[int]) -> int:
    """How many tick numbers are missing between the first and the last of ``ticks`` (which must increase)."""
    assert ticks == sorted(set(ticks)), f"tick numbers not strictly increasing: {ticks}"
    return sum(b - a - 1 for a, b in itertools.pairwise(ticks))


# --- a real uvicorn server in a thread -----------------------------------------------------------


def small_write_buffer_ws_protocol() -> type[asyncio.Protocol]:
    """uvicorn's websocket protocol, with flow control from the first byte: pass it as ``UvicornThread(ws=...)``."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class _SmallWriteBuffer(WebSocketsSansIOProtocol):
        """uvicorn's websocket protocol with no user-space write buffer before flow control kicks in.

        uvicorn pauses a connection's sends once 64 KiB wait in asyncio's buffer; at ~600 bytes per
        tick message a client that stops reading takes ~10 s to reach that. With the high-water mark
        at 0 the same back-pressure (``send`` awaits until writable) starts as soon as the kernel
        buffers are full, within a second or two; nothing else changes.
        """

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            assert isinstance(transport, asyncio.WriteTransport)
            transport.set_write_buffer_limits(high=0)

    return _SmallWriteBuffer


class UvicornThread:
    """Serve an ASGI app with uvicorn on a free loopback port, in a background thread with its own loop.

    The listening socket is bound here (no port race) and, with ``sndbuf``, given a small send buffer
    that accepted connections inherit on Linux, so a client that stops reading fills the server's
    kernel buffer quickly. ``loop`` is the server's event loop, for probes (see :class:`LoopLagProbe`).
    """

    def __init__(
        self,
        app: Any,
        *,
        ws: type[asyncio.Protocol] | str = "auto",
        sndbuf: int | None = None,
        ws_ping_interval: float = 20.0,
        start_timeout: float = 30.0,
    ) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf is not None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws=ws,
            lifespan="on",
            timeout_graceful_shutdown=3,
            ws_ping_interval=ws_ping_interval,  # `anytime serve` uses 20 s
            ws_ping_timeout=ws_ping_interval,
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._start_timeout = start_timeout
        self._thread = threading.Thread(target=self._run, name="uvicorn-test-server", daemon=True)
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[self._sock])

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by __enter__/__exit__
            self._error = exc

    def __enter__(self) -> UvicornThread:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError(f"uvicorn did not start: {self._error!r}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        with contextlib.suppress(OSError):
            self._sock.close()
        if self._thread.is_alive() and exc[0] is None:  # never mask the exception that brought us here
            raise AssertionError("uvicorn (and the service's lifespan shutdown) did not stop within 15 s")


class LoopLagProbe:
    """Measures how long the server's event loop goes without running callbacks.

    A coroutine on the loop sleeps ``interval`` over and over; any oversleep is time the loop spent
    blocked (e.g. decoding an image inline). While the loop is blocked no websocket message is sent,
    and the publisher's latest-wins mailboxes turn every blocked tick into a lost message.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.005) -> None:
        self._loop = loop
        self._interval = interval
        self.max_lag = 0.0
        self._running = True
        self._future: concurrent.futures.Future[None] | None = None

    async def _probe(self) -> None:
        while self._running:
            before = time.perf_counter()
            await asyncio.sleep(self._interval)
            self.max_lag = max(self.max_lag, time.perf_counter() - before - self._interval)

    def __enter__(self) -> LoopLagProbe:
        self._future = asyncio.run_coroutine_threadsafe(self._probe(), self._loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        if self._future is not None:
            with contextlib.suppress(Exception):
                self._future.result(timeout=5)
