"""A network camera that can die and come back, for the camera reliability tests: MJPEG over HTTP.

OpenCV's FFmpeg backend reads it like an IP camera; the test stops it (every open stream ends, the
port closes), freezes it (connected but silent) and starts it again on the same port.
"""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

__all__ = ["MjpegServer"]


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
