"""Everything the running service owns, started and stopped in order.

Model -> engine (warmed up) -> cameras -> tick scheduler; stopped in reverse. The HTTP layer
talks to this object only, so tests can build one with an injected classifier and camera source
factory and exercise it without a network.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from model.batch import choose_thresholds
from service.cameras import CameraManager
from service.classifier import AnytimeClassifier, ExitResult
from service.config import Settings
from service.convert import batch_response, classify_response, tick_messages
from service.engine import Engine, Job, JobKind, Outcome
from service.latency import RecentSeconds
from service.messages import BatchClassifyResponse, ClassifyResponse
from service.publisher import Publisher
from service.scheduler import ResultBoard, TickReport, TickScheduler
from service.telemetry import ServiceMetrics

__all__ = ["Overloaded", "Runtime"]

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """More /classify work is queued than the engine can answer in time."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


def _completion() -> tuple[asyncio.Future[tuple[Job, Outcome]], Callable[[Job, Outcome], None]]:
    """A future on the running event loop and the engine-thread callback that resolves it (once)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[Job, Outcome]] = loop.create_future()

    def resolve(job: Job, outcome: Outcome) -> None:
        if not done.done():
            done.set_result((job, outcome))

    def on_done(job: Job, outcome: Outcome) -> None:
        loop.call_soon_threadsafe(resolve, job, outcome)

    return done, on_done


_frozen_by = 0  # runtimes started and not stopped: the heap stays frozen while any of them runs
_freeze_lock = threading.Lock()


def _freeze_heap() -> None:
    """Collect, then move every object alive into the collector's permanent generation.

    What start-up built (torch, the model, FastAPI: some 200,000 objects) lives as long as the process,
    yet a full collection walks it all, about 100 ms on the development machine with the GIL held and
    every thread stalled; frozen, a full collection takes 0.01 ms. Called before the service's threads
    start, so the collection's own pause delays nothing."""
    global _frozen_by
    with _freeze_lock:
        gc.collect()
        gc.freeze()
        _frozen_by += 1


def _thaw_heap() -> None:
    """Undo :func:`_freeze_heap` once the last runtime has stopped (tests start many in one process)."""
    global _frozen_by
    with _freeze_lock:
        _frozen_by = max(0, _frozen_by - 1)
        if _frozen_by == 0:
            gc.unfreeze()


class Runtime:
    # Time kept back from a /classify deadline for the answer's trip from the engine thread to the
    # request's coroutine (a wake-up of the event loop, which needs the GIL and a core that the
    # engine, the decoders and the cameras also want): the 99th percentile of the trips measured on
    # recent answers, within these bounds. A fixed 2 ms was short by up to 5 ms under 8 concurrent
    # requests on 2 cores (docs/benchmarks.md, "Where late /classify answers lose their time").
    MIN_RESPONSE_MARGIN_S = 0.002
    MAX_RESPONSE_MARGIN_S = 0.020
    # Below this many trips in the last minute there is no tail to speak of (the 99th percentile of a
    # few is their maximum, and one slow trip would hold the margin up for a minute): the floor applies.
    MIN_RECENT_HANDOFFS = 100
    # Never more than this share of the deadline, so the engine's deadline never falls before receipt;
    # half, so that a 20 ms deadline can still keep back the 6 to 8 ms trips measured under load.
    MAX_MARGIN_SHARE = 0.5
    # A block takes milliseconds and ticks come every 100 ms: seconds of either silence is a fault.
    ENGINE_STALL_S = 10.0
    TICK_STALL_S = 5.0

    def __init__(
        self,
        settings: Settings,
        classifier: AnytimeClassifier | None = None,
        source_factory: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.clock = clock
        kwargs = {"source_factory": source_factory} if source_factory is not None else {}
        self.cameras = CameraManager(settings.cameras, **kwargs)
        self.publisher = Publisher(on_drop=self._count_drop)
        self.board = ResultBoard()
        self.engine: Engine | None = None
        self.scheduler: TickScheduler | None = None
        self.metrics: ServiceMetrics | None = None
        self.ready = False
        self._handoffs = RecentSeconds(window=256, quantile=0.99, horizon_s=60.0, clock=clock)
        self._froze_heap = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Blocking start-up (model load, warm-up); call it off the event loop."""
        if self.classifier is None:
            self.classifier = AnytimeClassifier.load(self.settings.weights, self.settings.device)
        exits_total = self.classifier.exits_total
        self.metrics = metrics = ServiceMetrics(exits_total, self.cameras.statuses, self.publisher.subscriber_counts)
        self.publisher.attach(loop)
        self.engine = Engine(self.classifier, clock=self.clock)
        # Camera ticks run at the number of cameras; /classify requests batch up to 16.
        self.engine.warm_up(sorted({1, 2, 4, 8, 16, len(self.settings.cameras)}))
        _freeze_heap()
        self._froze_heap = True
        self.engine.start()
        self.cameras.start_all()
        self.scheduler = TickScheduler(
            self.engine,
            self.board,
            take_frames=self.cameras.take_newest,
            statuses=self.cameras.statuses,
            publish=self._publish,
            period=1.0 / self.settings.tick_hz,
            clock=self.clock,
            on_missed=lambda n: metrics.missed_ticks.inc(n),
            on_job_done=lambda job, outcome: metrics.tick_jobs.inc(outcome=outcome.value),
        )
        self.scheduler.start()
        self.ready = True

    def stop(self) -> None:
        """Stop every thread and release every camera (well within 5 s)."""
        self.ready = False
        if self._froze_heap:
            self._froze_heap = False
            _thaw_heap()
        if self.scheduler is not None:
            self.scheduler.stop(timeout=1.0)
        self.cameras.stop_all(timeout=2.0)
        if self.engine is not None:
            self.engine.stop(timeout=1.0)

    def problems(self) -> list[str]:
        """Why a started service cannot do its job (a dead or stuck thread): what /health and /ready
        report with a 503, so a container's health check flags it. Empty while starting or stopping."""
        if not self.ready:
            return []
        found, now = [], self.clock()
        engine, scheduler = self.engine, self.scheduler
        if engine is not None:
            busy_since = engine.step_started_at
            if not engine.running:
                found.append("the engine thread has stopped")
            elif busy_since is not None and now - busy_since > self.ENGINE_STALL_S:
                found.append(f"the engine has been on one block for {now - busy_since:.0f} s")
        if scheduler is not None:
            last = scheduler.last_tick_at
            quiet_limit = max(self.TICK_STALL_S, 10 * scheduler.period)
            if not scheduler.running:
                found.append("the tick thread has stopped")
            elif last is not None and now - last > quiet_limit:
                found.append(f"no tick for {now - last:.0f} s")
        return found

    # --- ticks -------------------------------------------------------------------------------

    def _count_drop(self, camera_id: str) -> None:
        if self.metrics is not None:
            self.metrics.ws_dropped.inc(camera=camera_id)

    def _publish(self, report: TickReport) -> None:
        assert self.classifier is not None and self.metrics is not None
        self.publisher.publish_threadsafe(tick_messages(report, self.classifier.exits_total))
        self.metrics.ticks.inc()
        self.metrics.publish_lateness.observe((self.clock() - report.scheduled_at) * 1000)
        for entry in report.entries.values():
            self.metrics.exit_depth.observe(entry.result.exit if entry else 0)

    # --- /classify ---------------------------------------------------------------------------

    async def classify(
        self, image: np.ndarray, deadline_ms: float, received_at: float, forced_exit: int | None = None
    ) -> ClassifyResponse:
        """Answer by the deadline with the deepest exit reached (at least exit 1)."""
        engine = self.engine
        if engine is None or not self.ready:
            raise Overloaded("the model is not loaded yet", retry_after_s=1.0)
        deadline = received_at + deadline_ms / 1000 - self.response_margin(deadline_ms)
        if engine.pending(JobKind.CLASSIFY) >= self.settings.max_pending_classify:
            raise Overloaded(f"{self.settings.max_pending_classify} requests are already waiting", 1.0)
        wait = engine.estimated_wait(deadline)
        if wait > deadline_ms / 1000:
            raise Overloaded(f"about {wait * 1000:.0f} ms of queued work is ahead of this request", math.ceil(wait))
        done, on_done = _completion()
        engine.submit(
            Job(
                kind=JobKind.CLASSIFY,
                images=[image],
                deadline=deadline,
                on_exit=lambda job, results: None,
                on_done=on_done,
                min_exits=forced_exit or 1,
                max_exits=forced_exit,
            )
        )
        job, outcome = await done
        answered_at = self.clock()
        if not job.latest:
            if outcome is Outcome.ERROR:
                raise RuntimeError("the model failed on this request; see the service log")
            raise Overloaded("the service is shutting down", retry_after_s=1.0)
        self._record_handoff(job, answered_at)
        elapsed_ms = (answered_at - received_at) * 1000
        return classify_response(job.latest[0], elapsed_ms, deadline_ms)

    def response_margin(self, deadline_ms: float) -> float:
        """Seconds kept back from a /classify deadline of ``deadline_ms`` for the answer's hand-off (see
        MIN_RESPONSE_MARGIN_S and the bounds after it)."""
        enough = self._handoffs.recent() >= self.MIN_RECENT_HANDOFFS
        return self._bounded_margin((self._handoffs.estimate() or 0.0) if enough else 0.0, deadline_ms)

    def _bounded_margin(self, measured_s: float, deadline_ms: float) -> float:
        """``measured_s`` within [MIN_RESPONSE_MARGIN_S, MAX_RESPONSE_MARGIN_S], and at most
        MAX_MARGIN_SHARE of the deadline."""
        margin = min(self.MAX_RESPONSE_MARGIN_S, max(self.MIN_RESPONSE_MARGIN_S, measured_s))
        return min(margin, self.MAX_MARGIN_SHARE * deadline_ms / 1000)

    def _record_handoff(self, job: Job, answered_at: float) -> None:
        if job.finished_at is None:
            return
        handoff = max(0.0, answered_at - job.finished_at)
        self._handoffs.add(handoff)
        if self.metrics is not None:
            self.metrics.classify_handoff.observe(handoff * 1000)

    async def classify_batch(
        self,
        images: list[tuple[str | None, np.ndarray]],
        budget_mflops: float,
        deadline_ms: float,
        received_at: float,
    ) -> BatchClassifyResponse:
        """Budgeted batch classification with real early exit: every image leaves at the first exit whose
        confidence passes the fitted threshold set that fits ``budget_mflops`` (raises
        ``model.batch.BudgetTooSmallError`` below exit 1's cost). The images are computed together, as
        the engine's least urgent work: camera ticks and /classify requests go first, even for exit 1
        (guaranteeing the batch its exit 1 cost the cameras two exits of depth under batch load)."""
        engine, classifier = self.engine, self.classifier
        if engine is None or classifier is None or not self.ready:
            raise Overloaded("the model is not loaded yet", retry_after_s=1.0)
        chosen = choose_thresholds(classifier.card, budget_mflops)
        limits = list(chosen.thresholds) if chosen else [-1.0] * (classifier.exits_total - 1)
        waiting = engine.pending(JobKind.BATCH)
        if waiting + len(images) > self.settings.max_batch_images:
            raise Overloaded(f"{waiting} batch images are already waiting", retry_after_s=5.0)
        # The measured margin is the trip of one answer to one request; a batch keeps the floor back.
        deadline = received_at + deadline_ms / 1000 - self._bounded_margin(0.0, deadline_ms)

        def confident(result: ExitResult) -> bool:
            return result.exit < len(limits) + 1 and result.confidence >= limits[result.exit - 1]

        futures: list[asyncio.Future[tuple[Job, Outcome]]] = []
        for _, image in images:
            done, on_done = _completion()
            futures.append(done)
            engine.submit(
                Job(
                    kind=JobKind.BATCH,
                    images=[image],
                    deadline=deadline,
                    on_exit=lambda job, results: None,
                    on_done=on_done,
                    min_exits=0,  # nothing guaranteed: every block yields to ticks and requests
                    stop_when=confident,
                )
            )
        finished = await asyncio.gather(*futures)
        unanswered = [outcome for job, outcome in finished if not job.latest]
        if Outcome.ERROR in unanswered:
            raise RuntimeError("the model failed on this batch; see the service log")
        if Outcome.STOPPED in unanswered:
            raise Overloaded("the service is shutting down", retry_after_s=1.0)
        if unanswered:  # the batch only gets the time that cameras and /classify leave
            raise Overloaded(
                f"{len(unanswered)} of {len(images)} images reached no exit by the {deadline_ms:g} ms deadline",
                retry_after_s=max(1.0, deadline_ms / 1000),
            )
        elapsed_ms = (self.clock() - received_at) * 1000
        return batch_response(
            [(name, job.latest[0], outcome is Outcome.DEADLINE) for (name, _), (job, outcome) in zip(images, finished)],
            budget_mflops=budget_mflops,
            p=chosen.p if chosen else None,
            elapsed_ms=elapsed_ms,
            deadline_ms=deadline_ms,
        )
