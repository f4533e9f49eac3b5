"""Operations: liveness, readiness, cameras, the model card and Prometheus metrics."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from service.api.deps import RuntimeDep, require_token
from service.messages import CameraInfo

__all__ = ["public", "router"]

public = APIRouter(tags=["operations"])
router = APIRouter(tags=["operations"], dependencies=[Depends(require_token)])


def _unhealthy(problems: list[str]) -> JSONResponse:
    return JSONResponse({"status": "unhealthy", "problems": problems}, status_code=503)


@public.get("/health", summary="Liveness: the process answers and its engine and tick threads are alive")
def health(runtime: RuntimeDep) -> Response:
    problems = runtime.problems()
    return _unhealthy(problems) if problems else JSONResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: 503 until the model is loaded and cameras are started, and when unhealthy")
def ready(runtime: RuntimeDep) -> Response:
    if not runtime.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    problems = runtime.problems()
    return _unhealthy(problems) if problems else JSONResponse({"status": "ready"})


@router.get("/cameras", response_model=list[CameraInfo], summary="State, fps and dropped frames of every camera")
def cameras(runtime: RuntimeDep) -> list[CameraInfo]:
    out = []
    for s in runtime.cameras.statuses():
        data = asdict(s)
        out.append(CameraInfo(id=data.pop("camera_id"), **{**data, "state": s.state.value, "fps": round(s.fps, 2)}))
    return out


@router.get("/model", summary="The model card: preset, classes, preprocessing, per-exit cost and accuracy")
def model_card(runtime: RuntimeDep) -> Response:
    if runtime.classifier is None:
        return JSONResponse({"detail": "model not loaded yet"}, status_code=503)
    return JSONResponse(runtime.classifier.card.model_dump())


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(runtime: RuntimeDep) -> PlainTextResponse:
    text = runtime.metrics.render() if runtime.metrics else ""
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
