"""``create_app(settings)``: the FastAPI application and its lifespan.

The lifespan starts the runtime (model, engine, cameras, ticks) off the event loop and stops it
in reverse order on shutdown. Nothing is read from the environment here: settings come in, so
tests build apps with whatever settings, classifier and camera sources they need.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service.api import batch, classify, ops, stream, ui, video
from service.classifier import AnytimeClassifier
from service.config import Settings
from service.runtime import Runtime

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def default_torch_threads() -> int:
    """One less than the usable cores, at most 4.

    The model thread must leave a core to the event loop, the decoders and the cameras: on the
    2-core development machine, two torch threads doubled /classify latency (OpenMP workers spin
    while the HTTP side waits for the GIL and a core; docs/benchmarks.md). Batch-1 convolutions
    this small gain little beyond four threads anyway.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores - 1))


def create_app(
    settings: Settings,
    classifier: AnytimeClassifier | None = None,
    source_factory: Callable[..., Any] | None = None,
) -> FastAPI:
    runtime = Runtime(settings, classifier=classifier, source_factory=source_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The tick thread must get the GIL promptly when it wakes; Python's default 5 ms
        # switch interval alone would eat the whole publish-lateness budget.
        sys.setswitchinterval(0.0005)
        import torch

        torch.set_num_threads(settings.torch_threads or default_torch_threads())
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(runtime.start, loop)
        log.info("anytime ready: %d camera(s), %.1f Hz", len(settings.cameras), settings.tick_hz)
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.stop)

    # With an access token, the interactive docs and the schema are off: they would be the only
    # endpoints besides /health (and the overlay page, which holds no data) answering without it.
    public_docs = settings.token is None
    app = FastAPI(
        title="anytime",
        summary="Anytime-prediction video classification with MSDNet",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
        openapi_url="/openapi.json" if public_docs else None,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.include_router(ops.public)
    app.include_router(ops.router)
    app.include_router(classify.router)
    app.include_router(batch.router)
    app.include_router(stream.router)
    app.include_router(video.router)
    app.include_router(ui.router)
    app.mount("/static", ui.static_files(), name="static")
    return app
