"""The engine: exit by exit, earliest deadline first, never starting what cannot finish."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from model.msdnet import AnytimeStepper
from service.engine import Engine, Job, JobKind, Outcome
from service.latency import LatencyModel


def _job(kind: JobKind, deadline: float, n: int = 1, log: list | None = None, **kw) -> Job:
    log = log if log is not None else []
    return Job(
        kind=kind,
        images=[np.full((40, 60, 3), 100 + i, np.uint8) for i in range(n)],
        deadline=deadline,
        on_exit=lambda job, results: log.append(("exit", job.exits_done, len(results))),
        on_done=lambda job, outcome: log.append(("done", outcome)),
        **kw,
    )


def _latency(seconds: float, blocks: int = 5, sizes=(1, 2)) -> LatencyModel:
    model = LatencyModel()
    for b in range(blocks):
        for bs in sizes:
            model.record(b, bs, seconds)
    return model


def test_latency_model_predicts_a_high_percentile_and_borrows_for_unknown_sizes() -> None:
    model = LatencyModel(window=10)
    for v in [1, 1, 1, 1, 1, 1, 1, 1, 1, 9]:
        model.record(0, 1, v / 1000)
    assert model.predict(0, 1) == pytest.approx(0.009)  # p99 of 10 samples is the worst one
    for _ in range(30):
        model.record(0, 1, 0.001)
    assert model.predict(0, 1) == pytest.approx(0.001)  # old samples age out of the window
    assert model.predict(0, 4) == pytest.approx(0.004)  # unknown larger batch: scaled up
    assert model.predict(3, 1) == model.default_s
    assert model.predict_total(0, 1, 1) == pytest.approx(0.001 + model.default_s)


def test_does_not_start_a_block_that_cannot_finish(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.010), clock=fake_clock)
    log: list = []
    job = _job(JobKind.TICK, deadline=fake_clock() + 0.025, log=log)
    engine.submit(job)
    engine._step(job)  # now + 10 ms <= deadline: runs exit 1
    fake_clock.advance(0.010)
    engine._step(job)  # 20 ms <= 25 ms: runs exit 2
    fake_clock.advance(0.010)
    engine._step(job)  # 30 ms > 25 ms: refuses, closes the job with exit 2
    assert log == [("exit", 1, 1), ("exit", 2, 1), ("done", Outcome.DEADLINE)]
    assert engine.pending() == 0


def test_classify_gets_exit_one_even_when_it_cannot_fit(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.050), clock=fake_clock)
    log: list = []
    job = engine.submit(_job(JobKind.CLASSIFY, deadline=fake_clock() + 0.001, log=log, min_exits=1))
    engine._step(job)
    engine._step(job)
    assert log == [("exit", 1, 1), ("done", Outcome.DEADLINE)]


def test_forced_exit_stops_there(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    log: list = []
    job = engine.submit(_job(JobKind.CLASSIFY, deadline=fake_clock() + 10, log=log, min_exits=3, max_exits=3))
    for _ in range(3):
        engine._step(job)
    assert log[-1] == ("done", Outcome.COMPLETE) and job.exits_done == 3


def test_batch_images_leave_when_confident_and_the_rest_go_on(tiny_classifier, fake_clock) -> None:
    """Budgeted batch: images computed as one batch, each leaving at the first exit its rule accepts."""
    engine = Engine(tiny_classifier, latency=_latency(0.001, sizes=(1, 2, 3)), clock=fake_clock)
    logs: list[list] = [[], [], []]
    leave_at = [1, 3, 5]  # the last image never satisfies its rule: it stops at the last exit
    jobs = [
        engine.submit(
            _job(
                JobKind.BATCH,
                deadline=fake_clock() + 10,
                log=logs[i],
                min_exits=1,
                stop_when=lambda r, at=leave_at[i]: r.exit == at and at < 5,
            )
        )
        for i in range(3)
    ]
    engine._step(jobs[0])  # exit 1 for all three at once; the first is confident and leaves
    assert jobs[0].exits_done == 1 and logs[0][-1] == ("done", Outcome.COMPLETE)
    assert jobs[1].batch is jobs[2].batch and jobs[1].batch.size == 2  # the others go on, one batch
    while engine.pending():
        engine._step(min(engine._jobs, key=lambda j: j.seq))
    assert [j.exits_done for j in jobs] == [1, 3, 5]
    assert all(log[-1] == ("done", Outcome.COMPLETE) for log in logs)


def test_a_new_tick_supersedes_the_previous_one(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    old_log: list = []
    old = engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.1, log=old_log))
    engine._step(old)
    new = engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.2))
    assert old.superseded and not new.superseded
    engine._step(old)
    assert old_log == [("exit", 1, 1), ("done", Outcome.SUPERSEDED)]


def test_earliest_deadline_first_and_preemption_between_layers(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    tick_log: list = []
    tick = engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.1, n=2, log=tick_log))
    urgent_log: list = []
    urgent = _job(JobKind.CLASSIFY, deadline=fake_clock() + 0.05, min_exits=1, max_exits=1, log=urgent_log)
    first_stage = tiny_classifier.model.blocks[0][0]

    def arrive(*_: object) -> None:  # the urgent request arrives while the tick's block is part-way
        if urgent not in engine._jobs:
            engine.submit(urgent)

    hook = first_stage.register_forward_hook(arrive)
    try:
        engine._step(tick)
    finally:
        hook.remove()
    assert tick.exits_done == 0 and tick.stepper is not None and tick.stepper.in_progress
    assert engine._next_job() is urgent
    engine._step(urgent)
    assert urgent_log == [("exit", 1, 1), ("done", Outcome.COMPLETE)]
    assert engine._next_job() is tick
    engine._step(tick)  # resumes the interrupted block
    assert tick_log == [("exit", 1, 2)]


def test_cancel_stops_between_layers_when_the_deadline_passes(tiny_classifier, fake_clock) -> None:
    """A block predicted to fit, whose first layer then runs long: the engine stops before the next layer
    instead of finishing the block past the deadline (a check only before blocks would let it run on)."""
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    block = tiny_classifier.model.blocks[1]
    assert len(block) >= 2  # the test needs a layer after the slow one
    slow = block[0].register_forward_pre_hook(lambda module, args: fake_clock.advance(0.020))  # predicted: 1 ms
    try:
        job = engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.010))
        engine._step(job)  # exit 1
        engine._step(job)  # exit 2: its first layer overruns the deadline, and the block stops there
        assert job.exits_done == 1 and job.batch is not None and job.batch.stepper.in_progress
        engine._step(job)  # and the job ends with exit 1
        assert job.exits_done == 1 and engine.pending() == 0
    finally:
        slow.remove()


def test_threaded_engine_serves_jobs_and_stops(tiny_classifier) -> None:
    import time

    engine = Engine(tiny_classifier)
    engine.warm_up([1, 2], rounds=1)
    assert engine.latency.known()[(0, 2)] == 1
    engine.start()
    done = threading.Event()
    results: list = []
    engine.submit(
        Job(
            kind=JobKind.CLASSIFY,
            images=[np.zeros((32, 32, 3), np.uint8)],
            deadline=time.monotonic() + 5,
            on_exit=lambda job, r: results.append(r[0].exit),
            on_done=lambda job, outcome: done.set(),
            min_exits=1,
        )
    )
    assert done.wait(10)
    assert results == [1, 2, 3, 4, 5]
    engine.stop()
    assert not engine.running
    with pytest.raises(RuntimeError, match="stopped"):
        engine.submit(_job(JobKind.TICK, deadline=0))


def test_a_slow_outlier_ages_out_instead_of_blocking_a_block_forever(fake_clock) -> None:
    model = LatencyModel(window=20, horizon_s=5.0, clock=fake_clock)
    for seconds in (0.004, 0.005, 0.080):  # warm-up with one hiccup
        model.record(1, 4, seconds)
    assert model.predict(1, 4) == pytest.approx(0.080)  # recent: the cautious p99
    fake_clock.advance(6.0)  # the block was never run again because of that prediction...
    assert model.predict(1, 4) == pytest.approx(0.005)  # ...so the old samples' median takes over
    model.record(1, 4, 0.006)
    assert model.predict(1, 4) == pytest.approx(0.006)  # fresh measurements rule again


def test_first_answers_come_before_anyone_goes_deeper(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    first = engine.submit(_job(JobKind.CLASSIFY, deadline=fake_clock() + 0.050, min_exits=1))
    engine._step(first)  # exit 1 for the earliest request
    second = engine.submit(_job(JobKind.CLASSIFY, deadline=fake_clock() + 0.051, min_exits=1))
    # EDF alone would let `first` run its optional exits up to its deadline and make `second`
    # late; guaranteed work goes first.
    assert engine._next_job() is second
    assert engine._should_yield(first, guaranteed=False)
    engine._step(second)
    assert engine._next_job() is first


def test_a_superseded_tick_stops_even_before_its_first_exit(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    log: list = []
    old = engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.1, log=log, min_exits=1))
    engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.2, min_exits=1))
    engine._step(old)
    assert log == [("done", Outcome.SUPERSEDED)]


def _interrupt_after_layers(engine: Engine, layers: int) -> None:
    """Make the next ``_step`` stop its block after ``layers`` layers, as a more urgent arrival would."""
    calls = iter(range(1_000))
    engine._should_yield = lambda job, guaranteed: next(calls) >= layers  # type: ignore[method-assign]


def test_a_superseded_tick_finishes_the_exit_one_it_has_started(tiny_classifier, fake_clock) -> None:
    """When exit 1 takes longer than a tick, dropping it at every tick would leave the cameras with no
    answer at all (found in review: every tick superseded at exit 0, an empty board for good)."""
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    old_log: list = []
    old = engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.1, log=old_log, min_exits=1))
    _interrupt_after_layers(engine, 1)
    engine._step(old)  # one layer of exit 1, then interrupted
    del engine._should_yield
    assert old.batch is not None and old.exits_done == 0 and old.batch.stepper.in_progress
    new = engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.2, min_exits=1))
    assert old.superseded
    assert engine._next_job() is old  # its exit 1 is owed and the most urgent
    engine._step(old)
    assert old_log == [("exit", 1, 1), ("done", Outcome.SUPERSEDED)]  # exit 1 landed, then it gave way
    assert engine._next_job() is new


def test_batch_images_wait_for_ticks_and_requests_going_deeper(tiny_classifier, fake_clock) -> None:
    """Budgeted batch images are the least urgent work, even with earlier deadlines than a tick's."""
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    tick = engine.submit(_job(JobKind.TICK, deadline=fake_clock() + 0.1, min_exits=1))
    engine._step(tick)  # exit 1 paid: from here on the tick owes nothing
    image = engine.submit(_job(JobKind.BATCH, deadline=fake_clock() + 0.05))
    assert engine._next_job() is tick
    engine._step(image)  # (if it runs anyway) it yields to the tick between layers
    assert engine._should_yield(image, guaranteed=False)
    assert not engine._should_yield(tick, guaranteed=False)


def test_a_job_is_finished_once_whoever_finishes_it(tiny_classifier, fake_clock) -> None:
    """stop() finishes leftover jobs from another thread while a stuck engine thread may still finish
    them itself: on_done must run once."""
    engine = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    log: list = []
    job = engine.submit(_job(JobKind.CLASSIFY, deadline=fake_clock() + 0.1, log=log, min_exits=1))
    engine._finish(job, Outcome.STOPPED)
    engine._finish(job, Outcome.COMPLETE)
    assert log == [("done", Outcome.STOPPED)]


def _distinct_request(deadline: float, seed: int, log: list, **kw) -> Job:
    image = np.random.default_rng(seed).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    return Job(
        kind=JobKind.CLASSIFY,
        images=[image],
        deadline=deadline,
        on_exit=lambda job, results: log.append((job.exits_done, results[0].confidence, results[0].class_index)),
        on_done=lambda job, outcome: log.append(("done", outcome)),
        min_exits=1,
        **kw,
    )


def test_waiting_requests_share_one_batch_and_each_gets_its_own_answer(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.001, sizes=(1, 2, 3)), clock=fake_clock)
    logs: list[list] = [[], [], []]
    jobs = [engine.submit(_distinct_request(fake_clock() + 10, i, logs[i], max_exits=2)) for i in range(3)]
    engine._step(jobs[0])
    assert all(j.exits_done == 1 for j in jobs)  # one step answered all three
    assert jobs[0].batch is jobs[1].batch is jobs[2].batch and jobs[0].batch.size == 3
    engine._step(jobs[1])
    assert engine.pending() == 0 and all(log[-1] == ("done", Outcome.COMPLETE) for log in logs)
    for i in range(len(jobs)):  # batched answers equal the same image classified alone
        alone: list = []
        solo = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
        solo_job = solo.submit(_distinct_request(fake_clock() + 10, i, alone, max_exits=2))
        solo._step(solo_job)
        solo._step(solo_job)
        assert [entry[2] for entry in alone[:2]] == [entry[2] for entry in logs[i][:2]]
        assert [entry[1] for entry in alone[:2]] == pytest.approx([entry[1] for entry in logs[i][:2]], abs=1e-5)


def test_a_request_leaves_its_batch_at_its_deadline_and_the_rest_go_deeper(tiny_classifier, fake_clock) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.010, sizes=(1, 2)), clock=fake_clock)
    early_log: list = []
    late_log: list = []
    early = engine.submit(_distinct_request(fake_clock() + 0.015, 0, early_log))
    late = engine.submit(_distinct_request(fake_clock() + 1.0, 1, late_log))
    engine._step(engine._next_job())  # exit 1 for both, as one batch of 2
    assert early.exits_done == late.exits_done == 1 and late.batch.size == 2
    fake_clock.advance(0.010)
    engine._step(engine._next_job())  # early: 10 ms + 10 ms > 15 ms, so it is answered with exit 1
    assert early_log[-1] == ("done", Outcome.DEADLINE) and late.batch.size == 1
    while engine.pending():
        engine._step(engine._next_job())
    assert late.exits_done == 5 and late_log[-1] == ("done", Outcome.COMPLETE)
    # The survivor's rows were kept correctly: its answers match the image classified alone.
    alone: list = []
    solo = Engine(tiny_classifier, latency=_latency(0.001), clock=fake_clock)
    solo_job = solo.submit(_distinct_request(fake_clock() + 10, 1, alone))
    while solo.pending():
        solo._step(solo_job)
    assert [e[2] for e in alone[:5]] == [e[2] for e in late_log[:5]]
    assert [e[1] for e in alone[:5]] == pytest.approx([e[1] for e in late_log[:5]], abs=1e-5)


def _keep_that_fails(self: AnytimeStepper, rows: object) -> None:
    """Stands in for ``AnytimeStepper.keep`` as it failed on a GPU (row numbers on the wrong device)."""
    raise RuntimeError("rows on the wrong device")


def test_a_batch_that_cannot_drop_a_leaving_request_fails_its_partners_not_the_engine(
    tiny_classifier, fake_clock, monkeypatch
) -> None:
    """Taking a request's rows out of a shared batch runs on the error path too; if it raised, the
    engine thread would die (a GPU once made it raise). The partners fail instead, and the engine
    goes on serving."""
    engine = Engine(tiny_classifier, latency=_latency(0.010, sizes=(1, 2)), clock=fake_clock)
    early_log: list = []
    late_log: list = []
    early = engine.submit(_distinct_request(fake_clock() + 0.015, 0, early_log))
    engine.submit(_distinct_request(fake_clock() + 1.0, 1, late_log))
    engine._step(engine._next_job())  # exit 1 for both, as one batch of 2
    fake_clock.advance(0.010)
    with monkeypatch.context() as patch:
        patch.setattr(AnytimeStepper, "keep", _keep_that_fails)
        engine._step(engine._next_job())  # early leaves at its deadline; dropping its rows fails
    assert early_log[-1] == ("done", Outcome.DEADLINE) and early.batch is None
    assert late_log[-1] == ("done", Outcome.ERROR) and engine.pending() == 0
    after: list = []
    job = engine.submit(_distinct_request(fake_clock() + 10, 2, after, max_exits=2))
    while engine.pending():
        engine._step(job)
    assert after[-1] == ("done", Outcome.COMPLETE)


def test_a_failed_batch_answers_each_of_its_requests_once(tiny_classifier, fake_clock, monkeypatch) -> None:
    """Three requests complete at the same exit; dropping the first fails the batch, so the others
    have already had their answer (an error) and must not be completed a second time."""
    engine = Engine(tiny_classifier, latency=_latency(0.001, sizes=(1, 2, 3)), clock=fake_clock)
    logs: list[list] = [[], [], []]
    first = engine.submit(_distinct_request(fake_clock() + 10, 0, logs[0], max_exits=1))
    engine.submit(_distinct_request(fake_clock() + 10, 1, logs[1], max_exits=1))
    engine.submit(_distinct_request(fake_clock() + 10, 2, logs[2], max_exits=1))
    monkeypatch.setattr(AnytimeStepper, "keep", _keep_that_fails)
    engine._step(first)  # exit 1 for all three as one batch, where all three are done
    done = [[entry[1] for entry in log if entry[0] == "done"] for log in logs]
    assert done == [[Outcome.COMPLETE], [Outcome.ERROR], [Outcome.ERROR]]
    assert engine.pending() == 0


def test_waiting_requests_are_counted_as_the_batch_they_will_share(tiny_classifier, fake_clock) -> None:
    latency = _latency(0.001, sizes=(1,))
    latency.record(0, 4, 0.002)  # a batch of 4 costs twice one image, not four times
    engine = Engine(tiny_classifier, latency=latency, clock=fake_clock)
    for i in range(4):
        engine.submit(_distinct_request(fake_clock() + 1, i, []))
    assert engine.estimated_wait(fake_clock() + 2) == pytest.approx(0.002)
    # A forced exit never shares a batch with free requests, so it is owed its own block.
    engine.submit(_distinct_request(fake_clock() + 1, 9, [], max_exits=1))
    assert engine.estimated_wait(fake_clock() + 2) == pytest.approx(0.003)


def test_more_waiting_requests_than_one_batch_holds_are_counted_as_several_batches(tiny_classifier, fake_clock) -> None:
    latency = _latency(0.001, sizes=(1,))
    latency.record(0, 4, 0.002)
    latency.record(0, 2, 0.0015)
    engine = Engine(tiny_classifier, latency=latency, clock=fake_clock, max_classify_batch=4)
    for i in range(10):  # two full batches of 4, then one of 2
        engine.submit(_distinct_request(fake_clock() + 1, i, []))
    assert engine.estimated_wait(fake_clock() + 2) == pytest.approx(2 * 0.002 + 0.0015)


def test_a_preempted_request_is_answered_at_its_deadline_not_after_the_newcomers_block(
    tiny_classifier, fake_clock
) -> None:
    engine = Engine(tiny_classifier, latency=_latency(0.010), clock=fake_clock)
    old_log: list = []
    old = engine.submit(_distinct_request(fake_clock() + 0.018, 0, old_log))
    engine._step(old)  # exit 1
    fake_clock.advance(0.010)
    newcomer = engine.submit(_distinct_request(fake_clock() + 0.050, 1, []))  # old has 8 ms left
    assert engine._next_job() is newcomer  # owed exit 1 first
    engine._step(newcomer)  # its 10 ms block would end after old's deadline: old is answered first
    assert old_log[-1] == ("done", Outcome.DEADLINE) and old.exits_done == 1
    assert newcomer.exits_done == 1
