"""Websocket clients for the reliability tests: one that records everything, and bare sockets that misbehave.

A library client reads in the background and closes politely; the subscriber tests also need clients
that never read past the handshake and that vanish with a TCP reset, so those are written by hand here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .reliability_helpers import wait_until

__all__ = ["WsRecorder", "abort_socket", "raw_websocket", "sockets_closed"]


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
