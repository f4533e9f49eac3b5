"""The tick clock with an injected fake clock: aligned ticks, publish-then-submit, missed ticks."""

from __future__ import annotations

import numpy as np

from service.classifier import ExitResult
from service.frames import CameraState, CameraStatus, Frame
from service.scheduler import BoardEntry, ResultBoard, TickScheduler


class FakeEngine:
    def __init__(self) -> None:
        self.jobs: list = []

    def submit(self, job):
        self.jobs.append(job)
        return job


def _status(cid: str) -> CameraStatus:
    return CameraStatus(cid, "synthetic", CameraState.LIVE, 25.0, 10, 0, 0, None, None)


def _frame(cid: str, seq: int) -> Frame:
    return Frame(cid, seq, np.zeros((8, 8, 3), np.uint8), captured_at=1.0 * seq, captured_mono=1.0 * seq)


def _result(exit_: int) -> ExitResult:
    return ExitResult(exit_, 5, 3, "cat", 0.9, (), 1.0 * exit_)


def _scheduler(clock, frames_per_tick: list[dict], reports: list, stop_after: int, **kw) -> TickScheduler:
    engine = FakeEngine()
    board = ResultBoard()
    feed = iter(frames_per_tick)

    def publish(report) -> None:
        reports.append(report)
        if len(reports) >= stop_after:
            sched._stop.set()

    sched = TickScheduler(
        engine,
        board,
        take_frames=lambda: next(feed, {}),
        statuses=lambda: [_status("a"), _status("b")],
        publish=publish,
        period=0.1,
        clock=clock,
        wall_clock=lambda: 5.0,
        sleep=clock.sleep,
        **kw,
    )
    return sched


def test_ticks_are_aligned_to_the_clock_and_never_drift(fake_clock) -> None:
    reports: list = []
    sched = _scheduler(fake_clock, [], reports, stop_after=50)
    start = fake_clock()
    sched.run()
    assert [r.tick for r in reports] == list(range(1, 51))
    for r in reports:
        assert abs(r.scheduled_at - (start + r.tick * 0.1)) < 1e-9
        assert r.lateness_s == 0.0
    assert sched.missed_ticks == 0


def test_a_stall_is_counted_as_missed_ticks_and_the_clock_catches_up(fake_clock) -> None:
    reports: list = []
    missed: list[int] = []
    sched = _scheduler(fake_clock, [], reports, stop_after=4, on_missed=missed.append)
    original = sched.publish

    def stalling_publish(report) -> None:
        original(report)
        if report.tick == 2:
            fake_clock.advance(0.35)  # the process froze for 3.5 periods

    sched.publish = stalling_publish
    start = fake_clock()
    sched.run()
    assert [r.tick for r in reports] == [1, 2, 6, 7]
    assert sum(missed) == sched.missed_ticks == 3
    assert abs(reports[2].scheduled_at - (start + 0.6)) < 1e-9


def test_publishes_the_board_before_submitting_new_frames(fake_clock) -> None:
    reports: list = []
    frames = [{"a": _frame("a", 1), "b": _frame("b", 1)}, {"a": _frame("a", 2)}]
    sched = _scheduler(fake_clock, frames, reports, stop_after=3)
    engine = sched.engine
    start = fake_clock()

    def engine_reaches_exit(job, exit_: int) -> None:
        job.exits_done = exit_
        job.on_exit(job, [_result(exit_)] * len(job.images))

    sched.tick(1, start + 0.1)
    assert reports[0].entries == {"a": None, "b": None}  # nothing classified yet
    job1 = engine.jobs[0]
    assert len(job1.images) == 2 and abs(job1.deadline - (start + 0.2 - sched.margin)) < 1e-9
    engine_reaches_exit(job1, 2)
    sched.tick(2, start + 0.2)
    assert {cid: e.result.exit for cid, e in reports[1].entries.items()} == {"a": 2, "b": 2}
    # Only camera a had a new frame: b keeps its result, a keeps the old one until exit 1 lands.
    job2 = engine.jobs[1]
    assert len(job2.images) == 1
    sched.tick(3, start + 0.3)
    assert reports[2].entries["a"].frame_seq == 1
    engine_reaches_exit(job2, 1)
    entry = sched.board.get("a")
    assert entry is not None and entry.frame_seq == 2 and entry.result.exit == 1


def test_board_prefers_fresh_frames_over_deep_old_ones() -> None:
    board = ResultBoard()
    board.update("a", BoardEntry(2, 0.0, _result(1), 1.0))
    board.update("a", BoardEntry(1, 0.0, _result(5), 9.0))  # a late write for an older frame
    entry = board.get("a")
    assert entry is not None and entry.frame_seq == 2 and entry.result.exit == 1
