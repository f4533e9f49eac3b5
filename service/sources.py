"""Where frames come from: a synthetic test pattern or anything OpenCV can open, behind one protocol.

Sources are used by exactly one reader thread each (see ``service.cameras``) and know nothing about
threads, reconnects or dropping; they open, hand out decoded BGR frames at the source's own pace, and
close. Every failure surfaces as :class:`SourceError` with a message fit for ``/cameras``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from service.config import URL_SCHEMES, CameraConfig
from service.redact import redact_url

__all__ = ["FrameSource", "OpenCVSource", "SourceError", "SyntheticSource", "make_source"]

DEFAULT_FPS = 25.0  # synthetic pattern, and video files whose container does not say
NETWORK_TIMEOUT_S = 10.0  # FFmpeg open/read timeout, so a dead stream fails instead of hanging the reader
_SYNTHETIC = re.compile(r"synthetic(?::(\d+)x(\d+))?")


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message is safe to show (credentials redacted)."""


@runtime_checkable
class FrameSource(Protocol):
    """A stream of BGR ``uint8`` frames of shape ``(height, width, 3)``."""

    native_fps: float | None  # the source's own frame rate, when it reports one

    def open(self) -> None:
        """Connect / open the file; raise :class:`SourceError` if that is impossible."""

    def read(self) -> np.ndarray | None:
        """Block until the next frame; ``None`` means a non-looping file ended. Raises SourceError."""

    def close(self) -> None:
        """Release the device / connection; safe to call twice or after a failed open."""

    # Optional: ``skip() -> bool`` moves past the next frame without converting it to BGR (False: a
    # non-looping file ended). A camera with an fps cap skips the frames it would not publish anyway.


class _Pacer:
    """Holds reads to a fixed rate so a file or pattern behaves like a camera instead of a firehose.

    When the caller falls behind by more than a frame, the schedule restarts from now rather than
    bursting to catch up; a real camera does not replay the frames you missed either.
    """

    def __init__(self, fps: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.period = 1.0 / fps
        self._clock = clock
        self._sleep = sleep
        self._due: float | None = None

    def wait(self) -> None:
        now = self._clock()
        if self._due is None or now - self._due > self.period:
            self._due = now
        elif self._due > now:
            self._sleep(self._due - now)
        self._due += self.period

    def reset(self) -> None:
        self._due = None


class SyntheticSource:
    """A moving test pattern, like GStreamer's videotestsrc: colour bars, a bouncing box, a frame counter.

    The bars are drawn once; each frame only copies them and draws the moving parts, so the pattern
    costs far less than decoding video.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = DEFAULT_FPS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(f"synthetic source needs a positive size and fps, got {width}x{height} at {fps} fps")
        self.width, self.height = width, height
        self.native_fps: float | None = fps
        self._pacer = _Pacer(fps, clock, sleep)
        self._background = _colour_bars(width, height)
        self._count = 0
        self._open = False

    def open(self) -> None:
        self._open = True
        self._pacer.reset()

    def read(self) -> np.ndarray:
        if not self._open:
            raise SourceError("synthetic source is not open")
        self._pacer.wait()
        self._count += 1
        frame = self._background.copy()
        box = max(8, self.height // 6)
        span = max(1, self.width - box)
        x = abs((self._count * 4) % (2 * span) - span)  # bounces between both edges
        y = self.height // 2 - box // 2
        cv2.rectangle(frame, (x, y), (x + box, y + box), (255, 255, 255), thickness=-1)
        cv2.rectangle(frame, (x + box // 4, y + box // 4), (x + 3 * box // 4, y + 3 * box // 4), (0, 0, 0), -1)
        scale = max(0.4, self.height / 480)
        text = f"#{self._count}"
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        # Top right: the overlay puts the camera name top left and the label along the bottom.
        cv2.putText(frame, text, (self.width - tw - 8, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2)
        return frame

    def close(self) -> None:
        self._open = False


def _colour_bars(width: int, height: int) -> np.ndarray:
    """SMPTE-like bars on the top two thirds, a grey ramp below (BGR)."""
    bars = [(192, 192, 192), (0, 192, 192), (192, 192, 0), (0, 192, 0), (192, 0, 192), (0, 0, 192), (192, 0, 0)]
    image = np.empty((height, width, 3), np.uint8)
    split = height * 2 // 3
    edges = np.linspace(0, width, len(bars) + 1).astype(int)
    for colour, left, right in zip(bars, edges[:-1], edges[1:]):
        image[:split, left:right] = colour
    image[split:] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    return image


class OpenCVSource:
    """A USB/V4L2 device index (``"0"``), a video file, or an RTSP/HTTP(S) stream via ``cv2.VideoCapture``.

    Files are paced to their own frame rate so they play in real time, and loop when asked; devices and
    streams are paced by the camera itself and keep a one-frame buffer so latency cannot build up.
    """

    def __init__(
        self,
        source: str,
        loop: bool = True,
        *,
        timeout_s: float = NETWORK_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source = source
        self.loop = loop
        self.native_fps: float | None = None
        self._timeout_ms = int(timeout_s * 1000)
        self._clock, self._sleep = clock, sleep
        self._is_device = source.isdigit()
        self._is_url = "://" in source and source.split("://", 1)[0].lower() in URL_SCHEMES
        self._is_file = not (self._is_device or self._is_url)
        self._cap: cv2.VideoCapture | None = None
        self._pacer: _Pacer | None = None

    def __repr__(self) -> str:
        return f"OpenCVSource({redact_url(self.source)!r}, loop={self.loop})"

    def _describe(self) -> str:
        if self._is_device:
            return f"camera device {self.source}"
        return f"stream {redact_url(self.source)}" if self._is_url else f"video file {self.source}"

    def open(self) -> None:
        self.close()
        if self._is_file and not Path(self.source).is_file():
            raise SourceError(f"video file not found: {self.source}")
        try:
            if self._is_device:
                cap = cv2.VideoCapture(int(self.source), cv2.CAP_ANY)
            elif self._is_url:
                params = [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    self._timeout_ms,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    self._timeout_ms,
                ]
                cap = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
            else:
                cap = cv2.VideoCapture(self.source)
        except cv2.error as exc:
            raise SourceError(f"cannot open {self._describe()}: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            hint = "not a video OpenCV can decode" if self._is_file else "unreachable, busy or not a video source"
            raise SourceError(f"cannot open {self._describe()} ({hint})")
        if not self._is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ignored by backends without a buffer; harmless there
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = float(fps) if 0 < fps < 1000 else None
        if self._is_file:
            self._pacer = _Pacer(self.native_fps or DEFAULT_FPS, self._clock, self._sleep)
        self._cap = cap

    def read(self) -> np.ndarray | None:
        ok, frame = self._next(convert=True)
        if not ok:
            return None
        if frame is None:
            raise SourceError(f"no frame from {self._describe()} (disconnected or end of stream)")
        return _as_bgr(frame)

    def skip(self) -> bool:
        """Past the next frame without its colour conversion (``grab`` without ``retrieve``): about a
        quarter of a frame's cost at 640x360 and more at higher resolutions. False: a non-looping file ended."""
        ok, _ = self._next(convert=False)
        return ok

    def _next(self, convert: bool) -> tuple[bool, np.ndarray | None]:
        """Paced, looping access to the next frame, converted to an image or only grabbed;
        ``(False, None)`` when a non-looping file ended."""
        if self._cap is None:
            raise SourceError(f"{self._describe()} is not open")
        if self._pacer is not None:
            self._pacer.wait()
        ok, frame = self._once(convert)
        if not ok and self._is_file:
            if not self.loop:
                return False, None
            ok, frame = self._rewind(convert)
        if not ok:
            raise SourceError(f"no frame from {self._describe()} (disconnected or end of stream)")
        return True, frame

    def _once(self, convert: bool) -> tuple[bool, np.ndarray | None]:
        assert self._cap is not None
        try:
            return self._cap.read() if convert else (bool(self._cap.grab()), None)
        except cv2.error as exc:
            raise SourceError(f"decoding failed on {self._describe()}: {exc}") from exc

    def _rewind(self, convert: bool) -> tuple[bool, np.ndarray | None]:
        """Back to frame 0 of a looping file; reopen when the container cannot seek."""
        assert self._cap is not None
        if self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            ok, frame = self._once(convert)
            if ok:
                return ok, frame
        self.open()
        ok, frame = self._once(convert)
        if not ok:
            raise SourceError(f"{self._describe()} has no frames")
        return ok, frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._pacer is not None:
            self._pacer.reset()


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    """Some devices deliver grey or BGRA; everything downstream expects 3-channel BGR uint8."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def make_source(config: CameraConfig) -> FrameSource:
    """The source for a camera entry: ``synthetic[:WxH]`` or anything :class:`OpenCVSource` opens."""
    match = _SYNTHETIC.fullmatch(config.source)
    if match:
        width = int(match.group(1)) if match.group(1) else config.width
        height = int(match.group(2)) if match.group(2) else config.height
        return SyntheticSource(width, height, fps=config.fps or DEFAULT_FPS)
    return OpenCVSource(config.source, loop=config.loop)
