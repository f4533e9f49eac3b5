"""Frozen data that flows between the camera threads, the scheduler and the engine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["CameraState", "CameraStatus", "Frame"]


class CameraState(StrEnum):
    CONNECTING = "connecting"  # opening the source (first time or after a failure)
    LIVE = "live"  # frames are arriving
    DOWN = "down"  # the source failed; waiting out the backoff before reconnecting
    STOPPED = "stopped"  # the service is shutting down, or a non-looping file ended


@dataclass(frozen=True)
class Frame:
    """One decoded camera frame (BGR, HxWx3 uint8) with its capture times."""

    camera_id: str
    seq: int  # 1, 2, 3, ... per camera, counting every decoded frame
    image: np.ndarray
    captured_at: float  # wall clock (time.time()), for clients
    captured_mono: float  # monotonic clock, for latency arithmetic


@dataclass(frozen=True)
class CameraStatus:
    """A snapshot of one camera reader's health, for /cameras, /metrics and the websocket."""

    camera_id: str
    source: str  # credentials redacted
    state: CameraState
    fps: float  # decoded frames per second over the last few seconds
    frames: int  # decoded frames since start
    dropped_frames: int  # frames overwritten in the mailbox before anyone took them
    reconnects: int
    last_error: str | None
    last_frame_at: float | None  # wall clock
    # When last_error happened (wall clock). The error is kept after recovery, for the record; an error
    # older than last_frame_at is history, not the present.
    last_error_at: float | None = None
