"""Test-only infrastructure for tests/test_reliability.py: real sockets, real servers, bounded waits.

The reliability tests need what TestClient cannot give: a real uvicorn server (so websocket flow control
and TCP buffers are real), a camera source that can die and come back (a local MJPEG-over-HTTP server
that OpenCV's FFmpeg backend reads), websocket clients that misbehave at the socket level (never read,
vanish without a close frame), and a way to see whether the server's event loop was blocked. Every wait
here has a timeout so a regression fails a test instead of hanging CI.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import itertools
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import cv2
import numpy as np

from service.config import Settings, load_settings

__all__ = [
    "TICK_HZ",
    "WS_PATH",
    "LoopLagProbe",
    "MjpegServer",
    "UvicornThread",
    "WsRecorder",
    "abort_socket",
    "call_with_timeout",
    "metric_value",
    "random_jpeg",
    "raw_websocket",
    "reliability_settings",
    "served_metric",
    "small_write_buffer_ws_protocol",
    "sockets_closed",
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


# --- a camera that can die: MJPEG over HTTP ------------------------------------------------------


class MjpegServer:
    """``multipart/x-mixed-replace`` JPEG frames on ``http://127.0.0.1:PORT/stream.mjpg`` (what IP cameras serve).

    ``stop()`` closes the listening socket *and* every open stream, the way a camera that loses power
    does; ``start()`` binds the same port again, so a reader configured with the URL can come back.
    """

    def __init__(self, fps: float = 20.0, size: tuple[int, int] = (160, 120)) -> None:
        self.fps = fps
        self.port = 0
        self._frames = [self._frame(i, size) for i in range(20)]
        self._stopping = threading.Event()  # set by stop(): every open stream ends
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.connections = 0
        self._frozen_below = 0  # streams numbered below this hang: connected, silent (see freeze_open_streams)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    @staticmethod
    def _frame(i: int, size: tuple[int, int]) -> bytes:
        w, h = size
        image = np.full((h, w, 3), (40 * i) % 256, np.uint8)
        cv2.putText(image, str(i), (10, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        return cv2.imencode(".jpg", image)[1].tobytes()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                owner.connections += 1
                number = owner.connections
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                i = 0
                with contextlib.suppress(OSError):  # the reader went away
                    while not owner._stopping.is_set():
                        if number < owner._frozen_below:
                            owner._stopping.wait()  # hung: the socket stays open, nothing more is sent
                            break
                        jpeg = owner._frames[i % len(owner._frames)]
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                        self.wfile.write(head + jpeg + b"\r\n")
                        self.wfile.flush()
                        i += 1
                        owner._stopping.wait(1.0 / owner.fps)
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> MjpegServer:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def freeze_open_streams(self) -> None:
        """Every stream open now stops sending but stays connected (a camera whose network path died
        silently, no FIN, no RST); new connections are served normally."""
        self._frozen_below = self.connections + 1

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


# --- misbehaving websocket clients at the socket level ---------------------------------------------


def raw_websocket(port: int, path: str, *, rcvbuf: int | None = None, timeout: float = 10.0) -> socket.socket:
    """Open a websocket by hand and return the bare socket, so the test decides exactly what it reads.

    A library client reads in the background; this one reads only the handshake. ``rcvbuf`` shrinks
    the kernel receive buffer (set before connect, so the TCP window is small from the start).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:  # byte by byte: leave every frame after the handshake unread
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"server closed the connection during the handshake: {head!r}")
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"websocket handshake refused: {head.splitlines()[0]!r}")
    return sock


def abort_socket(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0): a client killed or unplugged mid-stream, no close frame."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def sockets_closed(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    """Close every socket on the way out, whatever happened (a stalled socket left open blocks shutdown)."""
    try:
        yield socks
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                abort_socket(sock)


class WsRecorder:
    """Reads one websocket in a background thread, keeping every message with its arrival time.

    The test's main thread stays free to poll HTTP endpoints while messages keep being read promptly
    (so the server never sees this client as slow). The client queue is unbounded for the same reason.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ws: Any = None
        self._stack = contextlib.ExitStack()
        self._thread = threading.Thread(target=self._run, name="ws-recorder", daemon=True)

    def _run(self) -> None:
        assert self._ws is not None
        while not self._stop.is_set():
            try:
                text = self._ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            except BaseException as exc:  # closed by the server, or by __exit__
                if not self._stop.is_set():
                    self.error = exc
                return
            self.messages.append((time.monotonic(), json.loads(text)))

    def __enter__(self) -> WsRecorder:
        from websockets.sync.client import connect

        self._ws = self._stack.enter_context(connect(self.url, open_timeout=10, max_queue=None, close_timeout=2))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._stack.close()

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Messages that arrived in [start, end] (monotonic seconds)."""
        return [m for t, m in list(self.messages) if start <= t <= end]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """The first message (already received or still to come) that satisfies ``predicate``."""

        def found() -> dict[str, Any] | None:
            if self.error is not None:
                raise AssertionError(f"websocket {self.url} failed: {self.error!r}")
            return next((m for _, m in list(self.messages) if predicate(m)), None)

        return wait_until(found, timeout, what=what)
