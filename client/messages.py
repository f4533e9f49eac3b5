"""The service's wire messages, as the client sees them.

A copy, not an import: the client must install and run without the service (or torch). The copy
ignores fields it does not know, so a newer server that adds fields does not break an older client;
``tests/test_client_contract.py`` fails when the two copies drift apart in any other way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatchClassifyResponse",
    "BatchImageResult",
    "CameraInfo",
    "CameraPrediction",
    "CameraState",
    "ClassifyResponse",
    "TopClass",
]

CameraState = Literal["connecting", "live", "down", "stopped"]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TopClass(_Message):
    class_index: int
    label: str
    confidence: float = Field(ge=0, le=1)


class CameraPrediction(_Message):
    """One tick of ``WS /ws/cameras/{camera_id}``; ``exit == 0`` (label None) means nothing classified yet."""

    type: Literal["prediction"] = "prediction"
    camera_id: str
    tick: int
    frame_seq: int | None
    captured_at: float | None
    published_at: float
    exit: int = Field(ge=0)
    exits_total: int
    label: str | None
    class_index: int | None
    confidence: float | None
    top5: list[TopClass]
    mflops: float
    compute_ms: float
    camera_state: CameraState


class ClassifyResponse(_Message):
    """The answer of ``POST /classify``: the deepest exit the service reached by the deadline."""

    label: str
    class_index: int
    confidence: float
    top5: list[TopClass]
    exit: int
    exits_total: int
    mflops: float
    elapsed_ms: float
    deadline_ms: float
    deadline_met: bool


class BatchImageResult(_Message):
    """One image of a budgeted batch, in upload order."""

    index: int
    filename: str | None
    label: str
    class_index: int
    confidence: float
    exit: int
    mflops: float


class BatchClassifyResponse(_Message):
    """The answer of ``POST /classify/batch``: each image left at its own exit; ``avg_mflops`` is what it cost."""

    images: list[BatchImageResult]
    exits_total: int
    budget_mflops: float
    avg_mflops: float
    p: float | None
    cut_by_deadline: int
    elapsed_ms: float
    deadline_ms: float


class CameraInfo(_Message):
    """One entry of ``GET /cameras``."""

    id: str
    source: str
    state: CameraState
    fps: float
    frames: int
    dropped_frames: int
    reconnects: int
    last_error: str | None
    last_frame_at: float | None
    last_error_at: float | None = None  # absent from servers older than the field
