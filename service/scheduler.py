"""The tick clock: publish the deepest exit reached so far, then move the model to new frames.

At tick k (at ``start + k * period`` on the monotonic clock, so ticks never drift) the scheduler
reads the result board, publishes one message per camera, and only then submits the cameras'
newest frames to the engine as one batch with the next tick as its deadline (which supersedes
the previous tick's job). It never waits for the model. Time comes from an injected clock and
sleep function so tests can drive it tick by tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.classifier import ExitResult
from service.engine import Engine, Job, JobKind, Outcome
from service.frames import CameraStatus, Frame

__all__ = ["BoardEntry", "ResultBoard", "TickReport", "TickScheduler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoardEntry:
    """The deepest exit reached so far on one camera's most recent classified frame."""

    frame_seq: int
    captured_at: float
    result: ExitResult
    compute_ms: float


class ResultBoard:
    """Latest result per camera, written by the engine thread, read at each tick."""

    def __init__(self) -> None:
        self._entries: dict[str, BoardEntry] = {}
        self._lock = threading.Lock()

    def update(self, camera_id: str, entry: BoardEntry) -> None:
        with self._lock:
            current = self._entries.get(camera_id)
            # A newer frame's first exit replaces an older frame's deeper one: fresh beats deep.
            if current is None or entry.frame_seq >= current.frame_seq:
                self._entries[camera_id] = entry

    def get(self, camera_id: str) -> BoardEntry | None:
        with self._lock:
            return self._entries.get(camera_id)

    def snapshot(self) -> dict[str, BoardEntry]:
        with self._lock:
            return dict(self._entries)


@dataclass(frozen=True)
class TickReport:
    """What the scheduler did at one tick: handed to the publisher and to metrics."""

    tick: int
    scheduled_at: float  # monotonic
    started_at: float  # monotonic: when the tick's work began (after the scheduler thread woke up)
    published_at_mono: float
    published_at: float  # wall clock
    entries: dict[str, BoardEntry | None]
    statuses: dict[str, CameraStatus]

    @property
    def lateness_s(self) -> float:
        return self.published_at_mono - self.scheduled_at


class TickScheduler:
    def __init__(
        self,
        engine: Engine,
        board: ResultBoard,
        take_frames: Callable[[], dict[str, Frame]],
        statuses: Callable[[], list[CameraStatus]],
        publish: Callable[[TickReport], None],
        period: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        margin: float = 0.002,
        on_missed: Callable[[int], None] | None = None,
        on_job_done: Callable[[Job, Outcome], None] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if period <= 0:
            raise ValueError("tick period must be positive")
        self.engine, self.board = engine, board
        self.take_frames, self.statuses, self.publish = take_frames, statuses, publish
        self.period, self.clock, self.wall_clock, self.margin = period, clock, wall_clock, margin
        self.on_missed = on_missed
        self.on_job_done = on_job_done
        self._sleep = sleep or self._precise_sleep
        self.start_time: float | None = None
        self.last_tick_at: float | None = None  # monotonic start of the latest tick
        self.tick_count = 0
        self.missed_ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- pure tick logic (tests call this directly) ------------------------------------------

    def tick(self, k: int, scheduled_at: float) -> TickReport:
        started_at = self.last_tick_at = self.clock()
        statuses = {s.camera_id: s for s in self.statuses()}
        entries = self.board.snapshot()
        report = TickReport(
            tick=k,
            scheduled_at=scheduled_at,
            started_at=started_at,
            published_at_mono=self.clock(),
            published_at=self.wall_clock(),
            entries={cid: entries.get(cid) for cid in statuses},
            statuses=statuses,
        )
        self.publish(report)
        self.tick_count += 1
        frames = self.take_frames()
        if frames:
            self._submit(frames, deadline=scheduled_at + self.period - self.margin)
        return report

    def _submit(self, frames: dict[str, Frame], deadline: float) -> None:
        # Until exit 1 lands on the new frames, the board keeps the previous frames' results:
        # a slightly stale label beats no label.
        ordered = list(frames.values())

        def on_exit(job: Job, results: list[ExitResult]) -> None:
            ms = job.compute_s * 1000
            for frame, result in zip(ordered, results):
                self.board.update(frame.camera_id, BoardEntry(frame.seq, frame.captured_at, result, ms))

        def on_done(job: Job, outcome: Outcome) -> None:
            if self.on_job_done is not None:
                self.on_job_done(job, outcome)

        self.engine.submit(
            Job(
                kind=JobKind.TICK,
                images=[f.image for f in ordered],
                deadline=deadline,
                on_exit=on_exit,
                on_done=on_done,
                context=ordered,
                min_exits=1,  # every tick gets at least a fresh exit 1, even under /classify load
            )
        )

    # --- the thread --------------------------------------------------------------------------

    def run(self) -> None:
        """Tick until stopped. A tick that comes too late to be useful is counted and skipped."""
        self.start_time = self.clock()
        k = 0
        while not self._stop.is_set():
            k += 1
            due = self.start_time + k * self.period
            now = self.clock()
            if now > due + self.period / 2:
                # Woke up so late that this tick's slot is mostly gone: count it, catch up.
                skipped = int((now - due) // self.period) + 1
                self.missed_ticks += skipped
                if self.on_missed is not None:
                    self.on_missed(skipped)
                k += skipped - 1
                continue
            self._sleep_until(due)
            if self._stop.is_set():
                break
            try:
                self.tick(k, due)
            except Exception:
                log.exception("tick %d failed", k)

    def _sleep_until(self, due: float) -> None:
        while not self._stop.is_set():
            remaining = due - self.clock()
            if remaining <= 0:
                return
            self._sleep(remaining)

    def _precise_sleep(self, remaining: float) -> None:
        # Sleep most of the way on the stop event, then yield in a tight loop for the last
        # stretch: a timed wait can overshoot by a scheduler quantum, and low publish lateness
        # is what the service promises.
        if remaining > 0.002:
            self._stop.wait(remaining - 0.0015)
        else:
            time.sleep(0)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="anytime-ticks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
