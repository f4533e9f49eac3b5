"""The scheduler benchmark's tick recorder splits each tick's lateness into waking and the tick's work."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from bench.ticks import TickRecorder
from service.scheduler import TickReport


def test_recorder_splits_lateness_into_waking_and_work() -> None:
    forwarded: list[TickReport] = []
    scheduler = SimpleNamespace(publish=forwarded.append)
    recorder = TickRecorder(scheduler)
    assert scheduler.publish is recorder  # wrapped
    now = time.monotonic()
    report = TickReport(
        tick=7,
        scheduled_at=now - 0.004,  # due 4 ms ago
        started_at=now - 0.001,  # woke 3 ms late, then worked
        published_at_mono=now,
        published_at=time.time(),
        entries={"cam": None},
        statuses={},
    )
    recorder(report)  # not recording yet: forwarded, not kept
    recorder.start()
    recorder(report)
    recorder.stop()
    recorder.detach()
    assert forwarded == [report, report] and scheduler.publish == forwarded.append
    assert recorder.ticks == [7] and recorder.exits == [0]
    assert recorder.wake_ms == [pytest.approx(3.0, abs=1e-6)]
    assert recorder.lateness_ms[0] >= 4.0 > recorder.wake_ms[0]
