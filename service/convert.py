"""Internal frozen dataclasses -> wire messages (service/messages.py)."""

from __future__ import annotations

from service.classifier import ExitResult
from service.messages import BatchClassifyResponse, BatchImageResult, CameraPrediction, ClassifyResponse, TopClass
from service.scheduler import TickReport

__all__ = ["batch_response", "classify_response", "tick_messages"]


def _top5(result: ExitResult) -> list[TopClass]:
    return [TopClass(class_index=t.class_index, label=t.label, confidence=t.confidence) for t in result.top5]


def tick_messages(report: TickReport, exits_total: int) -> dict[str, str]:
    """One JSON text per camera for this tick, ready to hand to the publisher."""
    out = {}
    for camera_id, status in report.statuses.items():
        entry = report.entries.get(camera_id)
        result = entry.result if entry else None
        message = CameraPrediction(
            camera_id=camera_id,
            tick=report.tick,
            frame_seq=entry.frame_seq if entry else None,
            captured_at=entry.captured_at if entry else None,
            published_at=report.published_at,
            exit=result.exit if result else 0,
            exits_total=exits_total,
            label=result.label if result else None,
            class_index=result.class_index if result else None,
            confidence=result.confidence if result else None,
            top5=_top5(result) if result else [],
            mflops=result.mflops if result else 0.0,
            compute_ms=round(entry.compute_ms, 3) if entry else 0.0,
            camera_state=status.state.value,
        )
        out[camera_id] = message.model_dump_json()
    return out


def classify_response(result: ExitResult, elapsed_ms: float, deadline_ms: float) -> ClassifyResponse:
    return ClassifyResponse(
        label=result.label,
        class_index=result.class_index,
        confidence=result.confidence,
        top5=_top5(result),
        exit=result.exit,
        exits_total=result.exits_total,
        mflops=result.mflops,
        elapsed_ms=round(elapsed_ms, 3),
        deadline_ms=deadline_ms,
        deadline_met=elapsed_ms <= deadline_ms,
    )


def batch_response(
    answers: list[tuple[str | None, ExitResult, bool]],
    *,
    budget_mflops: float,
    p: float | None,
    elapsed_ms: float,
    deadline_ms: float,
) -> BatchClassifyResponse:
    """(file name, result, cut by the deadline) per image, in upload order -> the wire answer."""
    images = [
        BatchImageResult(
            index=i,
            filename=name,
            label=result.label,
            class_index=result.class_index,
            confidence=result.confidence,
            exit=result.exit,
            mflops=result.mflops,
        )
        for i, (name, result, _) in enumerate(answers)
    ]
    return BatchClassifyResponse(
        images=images,
        exits_total=answers[0][1].exits_total,
        budget_mflops=budget_mflops,
        avg_mflops=round(sum(r.mflops for _, r, _ in answers) / len(answers), 4),
        p=p,
        cut_by_deadline=sum(1 for _, _, cut in answers if cut),
        elapsed_ms=round(elapsed_ms, 3),
        deadline_ms=deadline_ms,
    )
