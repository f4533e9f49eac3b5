"""One reader thread per camera: decode every frame, keep only the newest, reconnect forever.

Decoding continuously and dropping at the decoded-frame level keeps latency at one frame however slow
the consumer is; a one-slot mailbox per camera makes the drop explicit and countable. Each reader owns
its failures (capped exponential backoff, stall detection) so one dead camera never affects another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

from service.config import CameraConfig
from service.frames import CameraState, CameraStatus, Frame
from service.redact import redact_url
from service.sources import FrameSource, SourceError, make_source

__all__ = ["CameraManager", "CameraReader", "LatestFrameMailbox", "backoff_delay"]

logger = logging.getLogger(__name__)

SourceFactory = Callable[[CameraConfig], FrameSource]
_FPS_SAMPLES = 512  # frame times kept for the fps estimate; plenty for the window at any sane rate


def backoff_delay(failures: int, minimum: float = 1.0, maximum: float = 30.0) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure: minimum, 2x, 4x, ... capped at maximum."""
    if failures < 1:
        return 0.0
    return min(maximum, minimum * 2.0 ** min(failures - 1, 64))


class LatestFrameMailbox:
    """A one-slot, latest-wins handoff between a camera thread and its consumers.

    A lock rather than a queue: a queue would keep old frames around, and every one of them is
    latency. ``take`` is for the scheduler (each frame at most once); ``peek`` is for viewers
    (the video stream) that must not steal frames from the scheduler.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._taken = True
        self._dropped = 0

    def put(self, frame: Frame) -> None:
        with self._lock:
            if not self._taken:
                self._dropped += 1
            self._frame, self._taken = frame, False

    def take(self) -> Frame | None:
        """The newest frame if nobody has taken it yet, else None."""
        with self._lock:
            if self._taken:
                return None
            self._taken = True
            return self._frame

    def peek(self) -> Frame | None:
        """The newest frame, taken or not, without consuming it."""
        with self._lock:
            return self._frame

    @property
    def dropped(self) -> int:
        """Frames overwritten before anyone took them."""
        with self._lock:
            return self._dropped


class CameraReader:
    """Reads one camera in a daemon thread: CONNECTING -> LIVE -> (DOWN -> CONNECTING)* -> STOPPED.

    Any failure (open error, read error, no frame for ``stall_timeout`` seconds) closes the source and
    retries after :func:`backoff_delay`, forever; the backoff restarts at ``backoff_min`` once frames
    have flowed again. Only a non-looping file that ends, or :meth:`stop`, ends the thread.
    """

    def __init__(
        self,
        config: CameraConfig,
        source_factory: SourceFactory = make_source,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        backoff_min: float = 1.0,
        backoff_max: float = 30.0,
        stall_timeout: float = 10.0,
        fps_window: float = 3.0,
    ) -> None:
        if not 0 < backoff_min <= backoff_max:
            raise ValueError(f"need 0 < backoff_min <= backoff_max, got {backoff_min}, {backoff_max}")
        self.config = config
        self.mailbox = LatestFrameMailbox()
        self._factory = source_factory
        self._clock, self._wall_clock = clock, wall_clock
        self._backoff = (backoff_min, backoff_max)
        self._stall_timeout = stall_timeout
        self._stall_limit = stall_timeout  # for the source being read: see _stall_limit_for
        self._fps_window = fps_window
        self._stop = threading.Event()  # also what every backoff wait waits on, so stop() cuts it short
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the fields below, written by the thread, read by status()
        self._state = CameraState.STOPPED
        self._frames = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_frame_at: float | None = None
        self._last_frame_mono: float | None = None
        self._recent: deque[float] = deque(maxlen=_FPS_SAMPLES)
        self._flowed = False  # frames arrived since the last (re)connect: resets the backoff

    @property
    def camera_id(self) -> str:
        return self.config.id

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"camera {self.camera_id} was already started")
        self._set_state(CameraState.CONNECTING)
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera_id}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to end; it does at its next frame or at once if it is waiting out a backoff."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; False if it is still alive (stuck in a blocking read) after ``timeout``."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("camera %s: reader did not stop within %.1f s", self.camera_id, timeout or 0.0)
            return False
        return True

    def stop(self, timeout: float = 2.0) -> bool:
        self.request_stop()
        return self.join(timeout)

    def status(self) -> CameraStatus:
        now = self._clock()
        with self._lock:
            state, error, error_at, last = self._state, self._last_error, self._last_error_at, self._last_frame_mono
            recent = list(self._recent)
            frames, reconnects, last_at = self._frames, self._reconnects, self._last_frame_at
        if state is CameraState.LIVE and last is not None and now - last > self._stall_limit:
            # The thread is blocked inside read(); say so now rather than when the read returns.
            state, error = CameraState.DOWN, f"no frame for {now - last:.0f} s"
            error_at = last_at + self._stall_limit if last_at is not None else None
        return CameraStatus(
            camera_id=self.camera_id,
            source=redact_url(self.config.source),
            state=state,
            fps=_rate(recent, now, self._fps_window),
            frames=frames,
            dropped_frames=self.mailbox.dropped,
            reconnects=reconnects,
            last_error=error,
            last_frame_at=last_at,
            last_error_at=error_at,
        )

    # --- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                self._flowed = False
                try:
                    ended = self._session()
                except Exception as exc:
                    error = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
                else:
                    if ended:
                        logger.info("camera %s: end of file", self.camera_id)
                    return
                if self._stop.is_set():
                    return
                failures = 1 if self._flowed else failures + 1
                delay = backoff_delay(failures, *self._backoff)
                with self._lock:
                    self._state, self._last_error = CameraState.DOWN, error
                    self._last_error_at = self._wall_clock()
                logger.warning("camera %s down: %s (retrying in %.1f s)", self.camera_id, error, delay)
                if self._stop.wait(delay):
                    return
                with self._lock:
                    self._state = CameraState.CONNECTING
                    self._reconnects += 1
        except Exception as exc:  # a bug here must still leave a visible, stopped camera
            logger.exception("camera %s: reader crashed", self.camera_id)
            with self._lock:
                self._last_error = f"reader crashed: {type(exc).__name__}: {exc}"
                self._last_error_at = self._wall_clock()
        finally:
            self._set_state(CameraState.STOPPED)

    def _session(self) -> bool:
        """Open a fresh source and pump it: True at end of file, False when stopped; raises on failure."""
        source = self._factory(self.config)
        try:
            source.open()
            return self._pump(source)
        finally:
            try:
                source.close()
            except Exception:
                logger.exception("camera %s: closing the source failed", self.camera_id)

    def _stall_limit_for(self, source: FrameSource) -> float:
        """A source is not stalled for waiting three of its own frame periods: a synthetic camera capped
        at 0.05 fps (or a time-lapse stream) would otherwise flap live/down forever. Judged by the rate
        the source reports, not the fps cap, which only thins what a live camera sends."""
        native = getattr(source, "native_fps", None)
        return max(self._stall_timeout, 3.0 / native) if native else self._stall_timeout

    def _pump(self, source: FrameSource) -> bool:
        self._stall_limit = self._stall_limit_for(source)
        period = 1.0 / self.config.fps if self.config.fps else 0.0
        skip = getattr(source, "skip", None) if period else None
        next_publish = 0.0
        last = self._clock()
        while not self._stop.is_set():
            # A frame the fps cap would drop anyway is only decoded, not colour-converted.
            if skip is not None and self._unwanted(source, last, next_publish, period):
                image, ended = None, not skip()
            else:
                image = source.read()
                ended = image is None
            now = self._clock()
            if ended:
                return True
            if now - last > self._stall_limit:
                raise SourceError(f"no frame for {now - last:.1f} s")
            last = now
            if image is None:  # skipped: counted as decoded, never published
                self._record_frame(now)
                continue
            _check_image(image)
            seq = self._record_frame(now)
            if period:
                # Decode every frame (a live source must be drained) but publish at most `fps` of them;
                # 10 % slack absorbs arrival jitter, and a late publish keeps the schedule's phase.
                if now + 0.1 * period < next_publish:
                    continue
                next_publish = next_publish + period if now - next_publish < period else now + period
            image.flags.writeable = False  # shared by the scheduler and the video stream: draw on a copy
            self.mailbox.put(Frame(self.camera_id, seq, image, captured_at=self._wall_clock(), captured_mono=now))
        return False

    @staticmethod
    def _unwanted(source: FrameSource, last: float, next_publish: float, period: float) -> bool:
        """Will the next frame arrive too early to publish? Only answerable when the source knows its
        own frame rate; without it every frame is read in full."""
        native = getattr(source, "native_fps", None)
        return bool(native) and last + 1.0 / native + 0.1 * period < next_publish

    def _record_frame(self, now: float) -> int:
        with self._lock:
            self._frames += 1
            self._last_frame_mono, self._last_frame_at = now, self._wall_clock()
            self._recent.append(now)
            became_live = self._state is not CameraState.LIVE
            self._state = CameraState.LIVE
            seq = self._frames
        if became_live:
            logger.info("camera %s live (%s)", self.camera_id, redact_url(self.config.source))
        self._flowed = True
        return seq

    def _set_state(self, state: CameraState) -> None:
        with self._lock:
            self._state = state


def _check_image(image: object) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        shape = getattr(image, "shape", None)
        raise SourceError(f"source returned {type(image).__name__} {shape}, expected an HxWx3 uint8 image")


def _rate(times: list[float], now: float, window: float) -> float:
    """Frames per second over the frames of the last ``window`` seconds.

    The span is floored at half a second: right after a (re)connect a source often delivers a few
    buffered frames in a burst, and dividing by their millisecond spread reports thousands of fps.
    """
    recent = [t for t in times if now - t <= window]
    if len(recent) < 2:
        return 0.0
    return (len(recent) - 1) / max(recent[-1] - recent[0], 0.5)


class CameraManager:
    """All the cameras of the service, started and stopped together."""

    def __init__(
        self,
        configs: Iterable[CameraConfig],
        source_factory: SourceFactory = make_source,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff_min: float = 1.0,
        backoff_max: float = 30.0,
        stall_timeout: float = 10.0,
    ) -> None:
        self._readers: dict[str, CameraReader] = {}
        for config in configs:
            if config.id in self._readers:
                raise ValueError(f"duplicate camera id {config.id!r}")
            self._readers[config.id] = CameraReader(
                config,
                source_factory,
                clock=clock,
                backoff_min=backoff_min,
                backoff_max=backoff_max,
                stall_timeout=stall_timeout,
            )

    @property
    def ids(self) -> list[str]:
        return list(self._readers)

    def get(self, camera_id: str) -> CameraReader:
        try:
            return self._readers[camera_id]
        except KeyError:
            raise KeyError(f"unknown camera {camera_id!r}") from None

    def start_all(self) -> None:
        for reader in self._readers.values():
            reader.start()

    def stop_all(self, timeout: float = 2.0) -> bool:
        """Signal every reader first, then join them against one shared deadline; True if all ended."""
        for reader in self._readers.values():
            reader.request_stop()
        deadline = time.monotonic() + timeout
        stopped = [reader.join(max(0.0, deadline - time.monotonic())) for reader in self._readers.values()]
        return all(stopped)

    def statuses(self) -> list[CameraStatus]:
        return [reader.status() for reader in self._readers.values()]

    def take_newest(self) -> dict[str, Frame]:
        """Every camera's newest frame that has not been taken yet."""
        frames = {camera_id: reader.mailbox.take() for camera_id, reader in self._readers.items()}
        return {camera_id: frame for camera_id, frame in frames.items() if frame is not None}

    def peek(self, camera_id: str) -> Frame | None:
        return self.get(camera_id).mailbox.peek()
