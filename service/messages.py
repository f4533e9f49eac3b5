"""Wire messages: every JSON body the service sends, as pydantic models in one module.

The client keeps its own copy of these shapes (it never imports the service); a contract test
keeps the two in agreement.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatchClassifyResponse",
    "BatchImageResult",
    "CameraInfo",
    "CameraPrediction",
    "ClassifyResponse",
    "ErrorResponse",
    "TopClass",
]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopClass(_Message):
    class_index: int
    label: str
    confidence: float = Field(ge=0, le=1)


class CameraPrediction(_Message):
    """One message per tick on ``WS /ws/cameras/{camera_id}``.

    ``exit`` is the deepest exit reached on frame ``frame_seq`` by the tick; 0 (with null label)
    means no frame has been classified yet, e.g. while the camera is connecting.
    """

    type: Literal["prediction"] = "prediction"
    camera_id: str
    tick: int = Field(description="tick number since the service started")
    frame_seq: int | None = Field(description="sequence number of the classified frame")
    captured_at: float | None = Field(description="capture time of that frame, unix seconds")
    published_at: float = Field(description="when this message was published, unix seconds")
    exit: int = Field(ge=0, description="deepest exit reached on that frame (0: none yet)")
    exits_total: int
    label: str | None
    class_index: int | None
    confidence: float | None
    top5: list[TopClass]
    mflops: float = Field(description="cumulative multiply-adds spent to reach that exit, millions")
    compute_ms: float = Field(description="model time spent on that frame so far")
    camera_state: Literal["connecting", "live", "down", "stopped"]


class ClassifyResponse(_Message):
    """The answer of ``POST /classify``: the deepest exit reached by the deadline."""

    label: str
    class_index: int
    confidence: float
    top5: list[TopClass]
    exit: int
    exits_total: int
    mflops: float
    elapsed_ms: float = Field(description="from receipt of the request to the answer, decoding included")
    deadline_ms: float
    deadline_met: bool


class BatchImageResult(_Message):
    """One image of ``POST /classify/batch``, in upload order."""

    index: int = Field(description="position among the uploaded files, from 0")
    filename: str | None
    label: str
    class_index: int
    confidence: float
    exit: int = Field(description="the exit it left at: confident enough, the last exit, or the deadline's")
    mflops: float = Field(description="cumulative multiply-adds spent on it, millions")


class BatchClassifyResponse(_Message):
    """The answer of ``POST /classify/batch``: budgeted batch classification with real early exit."""

    images: list[BatchImageResult]
    exits_total: int
    budget_mflops: float = Field(description="the requested average cost per image")
    avg_mflops: float = Field(description="the average cost per image actually spent")
    p: float | None = Field(description="the fitted threshold set used (null: every image leaves at exit 1)")
    cut_by_deadline: int = Field(description="images answered at the deadline before their thresholds said so")
    elapsed_ms: float = Field(description="from receipt of the request to the answer, decoding included")
    deadline_ms: float


class CameraInfo(_Message):
    """One entry of ``GET /cameras``."""

    id: str
    source: str
    state: Literal["connecting", "live", "down", "stopped"]
    fps: float
    frames: int
    dropped_frames: int
    reconnects: int
    last_error: str | None = Field(description="the latest failure; kept after recovery, for the record")
    last_frame_at: float | None = Field(description="when the latest frame was decoded, unix seconds")
    last_error_at: float | None = Field(None, description="when last_error happened, unix seconds")


class ErrorResponse(_Message):
    detail: str
