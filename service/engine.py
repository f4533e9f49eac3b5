"""The one thread that owns the model and runs jobs exit by exit, earliest deadline first.

A job is a batch of images with a deadline: the frames of one camera tick, one /classify request,
or one image of a /classify/batch request (which leaves at the first exit confident enough for its
budget). The engine advances the most urgent job by one block at a time. Before a block it asks
the latency model whether the block can finish by the job's deadline and, if not, closes the job
with the deepest exit it has. Between layers it stops a block when the deadline passes, when a
newer tick supersedes the job, or when a more urgent job is waiting; the interrupted block is
kept and resumes later, when a whole block's predicted time still fits before the deadline (the
cautious charge of _predict_next_block). A superseded tick that has started its
guaranteed exit 1 finishes it first: when exit 1 takes longer than a tick, throwing it away at
every tick would leave the cameras with no answer at all.

Order of work: first every job's guaranteed exits (a tick's or a request's exit 1), earliest
deadline first; then deeper exits for ticks and requests, earliest deadline first; budgeted batch
images last, whatever their deadlines.

/classify requests that wait at the same time are computed as one batch: on a CPU, exit 1 for
eight images costs about a third of eight single-image passes, which is what keeps answers on time
under concurrent load. Members of a batch leave it one by one (their rows are dropped) as each
reaches its own deadline or forced exit; the rest go on deeper.

The engine never awaits anything: results leave through the callbacks each job carries, which
must be quick and thread-safe (the result board, or ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch

from model.msdnet import AnytimeStepper
from service.classifier import AnytimeClassifier, ExitResult
from service.latency import LatencyModel

__all__ = ["Engine", "Job", "JobKind", "Outcome"]

log = logging.getLogger(__name__)
Clock = Callable[[], float]


class JobKind(StrEnum):
    TICK = "tick"
    CLASSIFY = "classify"
    BATCH = "batch"  # one image of a budgeted batch: leaves when confident enough, never urgent


class Outcome(StrEnum):
    COMPLETE = "complete"  # reached its last (or requested) exit
    DEADLINE = "deadline"  # the next block would not finish in time
    SUPERSEDED = "superseded"  # a newer tick replaced it
    STOPPED = "stopped"  # the engine is shutting down
    ERROR = "error"


@dataclass(eq=False)
class Job:
    """Engine-owned, mutable state of one unit of work. Callbacks run on the engine thread."""

    kind: JobKind
    images: list[np.ndarray]
    deadline: float  # monotonic seconds
    on_exit: Callable[[Job, list[ExitResult]], None]
    on_done: Callable[[Job, Outcome], None]
    min_exits: int = 0  # exits to reach whatever the deadline (1 for /classify)
    max_exits: int | None = None  # stop after this exit (a forced exit)
    # Stop after the exit whose result this accepts (budgeted batch: confident enough to leave early).
    stop_when: Callable[[ExitResult], bool] | None = None
    context: Any = None  # caller's bookkeeping, e.g. the cameras' frames
    seq: int = 0
    superseded: bool = False
    finished: bool = False  # on_done has run (or is running): it runs once, whoever finishes the job
    finished_at: float | None = None  # engine clock when it finished: the answer's hand-off starts here
    exits_done: int = 0
    compute_s: float = 0.0
    latest: list[ExitResult] = field(default_factory=list)
    batch: _Batch | None = None  # set when its computation starts

    @property
    def stepper(self) -> AnytimeStepper | None:
        return self.batch.stepper if self.batch is not None else None


@dataclass(eq=False)
class _Batch:
    """Jobs computed together through one stepper; each owns a contiguous run of its rows."""

    jobs: list[Job]
    stepper: AnytimeStepper
    block_interrupted: bool = False

    @property
    def size(self) -> int:
        return self.stepper.batch_size

    def rows(self) -> list[tuple[Job, range]]:
        """Each job with the batch rows it owns, in batch order."""
        spans, start = [], 0
        for job in self.jobs:
            spans.append((job, range(start, start + len(job.images))))
            start += len(job.images)
        return spans

    def split(self, results: list[ExitResult]) -> list[tuple[Job, list[ExitResult]]]:
        return [(job, results[span.start : span.stop]) for job, span in self.rows()]

    def drop(self, leaving: Job) -> None:
        """Stop computing ``leaving``'s rows; the other jobs carry on from where they are."""
        kept = [row for job, span in self.rows() if job is not leaving for row in span]
        self.jobs = [j for j in self.jobs if j is not leaving]
        if self.jobs:
            self.stepper.keep(torch.tensor(kept, dtype=torch.long))


def _owes(job: Job) -> bool:
    """Does the job still need exits it was promised whatever the deadline?"""
    return job.exits_done < job.min_exits


def _rank(job: Job) -> tuple[bool, bool, float]:
    """Smaller runs first: guaranteed exits, then ticks' and requests' depth, then batch images;
    earliest deadline first within each."""
    return (not _owes(job), job.kind is JobKind.BATCH, job.deadline)


def _keeps_going_when_superseded(job: Job) -> bool:
    """A superseded tick still finishes a guaranteed exit it has started: the work is half paid for,
    and a newer tick's job would start that exit from nothing."""
    return _owes(job) and job.batch is not None


def _batchable(a: Job, b: Job) -> bool:
    return (
        a.kind is b.kind
        and a.kind is not JobKind.TICK
        and a.batch is None
        and b.batch is None
        and a.max_exits == b.max_exits
        and a.min_exits == b.min_exits
    )


class Engine:
    def __init__(
        self,
        classifier: AnytimeClassifier,
        latency: LatencyModel | None = None,
        clock: Clock = time.monotonic,
        metrics: Any = None,
        max_classify_batch: int = 16,
    ) -> None:
        self.classifier = classifier
        self.max_classify_batch = max_classify_batch
        self.latency = latency or LatencyModel(clock=clock)
        self.clock = clock
        self.metrics = metrics
        self._jobs: list[Job] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current_tick: Job | None = None
        self._seq = itertools.count()
        # When the step in progress began (monotonic), None between steps: a step lasts milliseconds,
        # so one that has run for seconds means the model is stuck (see Runtime.problems).
        self.step_started_at: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def warm_up(self, batch_sizes: list[int], rounds: int = 5) -> None:
        """Run full passes so the latency model starts with real measurements.

        Block 0 is timed with preprocessing included, as the engine times it for real jobs.
        """
        size = self.classifier.card.input_size
        for bs in sorted({b for b in batch_sizes if b > 0}):  # 0 cameras: a /classify-only service
            images = [np.zeros((size * 4, size * 4, 3), np.uint8)] * bs
            for r in range(rounds + 1):
                t0 = time.perf_counter()
                stepper = self.classifier.model.stepper(self.classifier.preprocess(images))
                for block in range(self.classifier.exits_total):
                    stepper.advance()
                    if r:  # the first round pays one-off allocation costs
                        self.latency.record(block, bs, time.perf_counter() - t0)
                    t0 = time.perf_counter()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="anytime-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            leftover, self._jobs = self._jobs, []
        for job in leftover:  # (if the thread is still in a block, _finish's flag keeps on_done to one call)
            self._finish(job, Outcome.STOPPED)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- submitting --------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        job.seq = next(self._seq)
        with self._cond:
            if self._stop.is_set():
                raise RuntimeError("engine is stopped")
            if job.kind is JobKind.TICK:
                if self._current_tick is not None:
                    self._current_tick.superseded = True
                self._current_tick = job
            self._jobs.append(job)
            self._cond.notify()
        return job

    def pending(self, kind: JobKind | None = None) -> int:
        with self._cond:
            return sum(1 for j in self._jobs if kind is None or j.kind is kind)

    def estimated_wait(self, deadline: float) -> float:
        """Seconds of model time owed to queued jobs more urgent than ``deadline`` before they
        reach their guaranteed exits: what a new job with that deadline would wait for.

        Requests not started yet are counted as the batches they will be computed in."""
        with self._cond:
            owed = [j for j in self._jobs if j.deadline <= deadline and _owes(j)]
        # (first block, last block, batch size) of each batch that will run; a running batch is keyed
        # by its id, so it counts once however many jobs share it
        groups: dict[int, tuple[int, int, int]] = {}
        # (kind, min_exits, max_exits) -> images not started yet
        waiting: dict[tuple[JobKind, int, int | None], int] = {}
        for job in owed:
            if job.batch is not None:
                groups[id(job.batch)] = (job.exits_done, job.min_exits - 1, job.batch.size)
            elif job.kind is not JobKind.TICK:  # waiting requests batch together as _batchable allows
                key = (job.kind, job.min_exits, job.max_exits)
                waiting[key] = waiting.get(key, 0) + len(job.images)
            else:
                groups[id(job)] = (0, job.min_exits - 1, len(job.images))
        planned = list(groups.values())
        for (_, min_exits, _), images in waiting.items():
            # They will start as full batches of max_classify_batch and one smaller remainder.
            full, rest = divmod(images, self.max_classify_batch)
            planned += [(0, min_exits - 1, self.max_classify_batch)] * full
            if rest:
                planned.append((0, min_exits - 1, rest))
        return sum(self.latency.predict_total(*group) for group in planned)

    # --- the loop ----------------------------------------------------------------------------

    def _next_job(self) -> Job | None:
        with self._cond:
            while not self._jobs and not self._stop.is_set():
                self._cond.wait(0.5)
            if self._stop.is_set():
                return None
            # Guaranteed exits (a request's exit 1) before optional depth, each earliest deadline
            # first: one job's extra exits must never push another's first answer past its deadline.
            # Batch images come after every tick and request, whatever their deadlines.
            return min(self._jobs, key=lambda j: (*_rank(j), j.seq))

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._next_job()
            if job is None:
                break
            self.step_started_at = self.clock()
            try:
                self._step(job)
            except Exception:
                log.exception("engine job failed")
                self._finish(job, Outcome.ERROR)
            finally:
                self.step_started_at = None

    def _step(self, job: Job) -> None:
        if job.superseded and not _keeps_going_when_superseded(job):
            self._finish(job, Outcome.SUPERSEDED)
            return
        limit = self._limit(job)
        if job.exits_done >= limit:
            self._finish(job, Outcome.COMPLETE)
            return
        guaranteed = _owes(job)
        t0 = self.clock()
        if not guaranteed and t0 + self._predict_next_block(job) > job.deadline:
            self._finish(job, Outcome.DEADLINE)
            return
        batch = job.batch or self._start_batch(job)
        block = job.exits_done
        self._expire_waiting(batch, t0 + self._predict_next_block(job))
        out = batch.stepper.advance(lambda: self._should_yield(job, guaranteed))
        elapsed = self.clock() - t0
        for member in batch.jobs:
            member.compute_s += elapsed
        if out is None:
            batch.block_interrupted = True
            return
        if not batch.block_interrupted:
            self.latency.record(block, batch.size, elapsed)
        batch.block_interrupted = False
        results = self.classifier.results(out.exit, out.logits)
        for member, rows in batch.split(results):
            member.exits_done = out.exit
            member.latest = rows
            member.on_exit(member, rows)
        for member in list(batch.jobs):
            if member.batch is not batch:
                continue  # already finished: its batch failed under an earlier member (_release_batch)
            if member.superseded and not _owes(member):  # it has paid its guaranteed exit; a newer tick waits
                self._finish(member, Outcome.SUPERSEDED)
            elif member.exits_done >= self._limit(member) or (
                member.stop_when is not None and member.stop_when(member.latest[0])
            ):
                self._finish(member, Outcome.COMPLETE)

    def _expire_waiting(self, running: _Batch, block_ends: float) -> None:
        """Answer now every other job that has its guaranteed exits and whose deadline falls before
        the block about to run can end: it cannot go deeper in time, and waiting for the block would
        only make its answer late (under load, a request preempted by newcomers' exit 1)."""
        with self._cond:
            expired = [j for j in self._jobs if j.batch is not running and not _owes(j) and j.deadline < block_ends]
        for job in expired:
            self._finish(job, Outcome.DEADLINE)

    def _predict_next_block(self, job: Job) -> float:
        """Predicted seconds to the job's next exit: the whole block, even when it was interrupted
        part-way and some of its layers are already done. Charging only the part left would discard
        less work, but the latency model times whole blocks and any split of them is a guess (an exit
        head is a quarter to a half of a CIFAR block's multiply-adds); a guess that runs short answers
        after the deadline, and for this service a late answer costs more than a shallower one."""
        size = job.batch.size if job.batch is not None else len(job.images)
        return self.latency.predict(job.exits_done, size)

    def _limit(self, job: Job) -> int:
        return min(job.max_exits or self.classifier.exits_total, self.classifier.exits_total)

    def _start_batch(self, job: Job) -> _Batch:
        """Begin computing ``job``, together with every request waiting that can share its batch."""
        with self._cond:
            mates = [j for j in self._jobs if j is not job and _batchable(job, j) and not j.superseded]
        mates.sort(key=lambda j: (j.deadline, j.seq))
        jobs = [job, *mates[: self.max_classify_batch - 1]] if job.kind is not JobKind.TICK else [job]
        images = [image for member in jobs for image in member.images]
        batch = _Batch(jobs, self.classifier.model.stepper(self.classifier.preprocess(images)))
        for member in jobs:
            member.batch = batch
        return batch

    def _should_yield(self, job: Job, guaranteed: bool) -> bool:
        """Checked between layers: give up the model now? An interrupted block is kept and resumes
        when this job is picked again, if a whole block's predicted time still fits before its deadline
        (_predict_next_block); otherwise the job answers with the exit it has and the part is lost."""
        if self._stop.is_set() or (job.superseded and not guaranteed):
            return True
        with self._cond:
            others = [j for j in self._jobs if j.batch is None or j.batch is not job.batch]
        if guaranteed:
            return any(_owes(j) and j.deadline < job.deadline for j in others)
        if any(_rank(j) < _rank(job) for j in others):
            return True
        return self.clock() >= job.deadline

    def _release_batch(self, job: Job) -> None:
        """Take ``job``'s rows out of its batch (freeing its feature maps now). Never raises: this
        runs on the error path too, and an exception here would kill the engine thread. If the rows
        cannot be dropped, the batch's state is unknown, so the jobs still sharing it fail as well."""
        batch, job.batch = job.batch, None
        if batch is None:
            return
        try:
            batch.drop(job)
        except Exception:
            log.exception("could not take a finished job out of its batch; failing the jobs that shared it")
            partners, batch.jobs = [j for j in batch.jobs if j is not job], []
            for partner in partners:
                partner.batch = None
                self._finish(partner, Outcome.ERROR)

    def _finish(self, job: Job, outcome: Outcome) -> None:
        with self._cond:
            if job.finished:
                return
            job.finished = True
            job.finished_at = self.clock()
            if job in self._jobs:
                self._jobs.remove(job)
            if self._current_tick is job:
                self._current_tick = None
        self._release_batch(job)
        try:
            job.on_done(job, outcome)
        except Exception:
            log.exception("job completion callback failed")
