"""Seeing every tick of a running service: a recorder wrapped around the scheduler's publish callback.

The service keeps only histograms (publish lateness in coarse buckets), which cannot give a p99 of
a few milliseconds; the scheduler's ``publish`` attribute sees each :class:`TickReport` with its
exact lateness and the exit reached per camera, so the benchmark wraps it and keeps the raw values.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TickRecorder"]


@dataclass
class TickRecorder:
    """Replaces ``scheduler.publish`` with itself; records while ``recording`` is set, always forwards."""

    scheduler: Any
    recording: bool = False
    lateness_ms: list[float] = field(default_factory=list)
    # The part of the lateness before the tick's work began: the scheduler thread waking up (timer,
    # GIL, CPU); lateness - wake is the tick's own work (snapshots, messages, the hand-off).
    wake_ms: list[float] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)  # one per camera per tick; 0 = nothing classified yet
    deepest: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)  # (camera, frame) -> exit, MFLOPs
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._forward = self.scheduler.publish
        self.scheduler.publish = self

    def __call__(self, report: Any) -> None:
        # Lateness is taken after the messages were handed to the event loop (what the floor is
        # about), so building the messages counts; the bookkeeping below does not.
        self._forward(report)
        if self.recording:
            lateness_ms = (time.monotonic() - report.scheduled_at) * 1000
            with self._lock:
                self.lateness_ms.append(lateness_ms)
                self.wake_ms.append((report.started_at - report.scheduled_at) * 1000)
                self.ticks.append(report.tick)
                for camera_id, entry in report.entries.items():
                    self.exits.append(entry.result.exit if entry else 0)
                    if entry is not None:
                        self.deepest[(camera_id, entry.frame_seq)] = (entry.result.exit, entry.result.mflops)

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        with self._lock:
            self.recording = False

    def detach(self) -> None:
        self.scheduler.publish = self._forward
