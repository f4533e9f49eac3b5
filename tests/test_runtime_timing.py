"""What the runtime does so that answers arrive on time: a /classify deadline keeps back the measured
hand-off from the engine thread to the request, and start-up freezes the heap so a full garbage
collection cannot stall every thread for ~100 ms."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import load_settings
from service.runtime import Runtime

LONG_DEADLINE_MS = 1000.0  # half of it is far above the margin's bounds


def _answered(runtime: Runtime, handoff_s: float, clock) -> None:
    """Record one answer that reached its coroutine ``handoff_s`` after the engine finished it."""
    job = SimpleNamespace(finished_at=clock())
    clock.advance(handoff_s)
    runtime._record_handoff(job, clock())


def test_the_margin_follows_measured_handoffs_within_its_bounds(tiny_classifier, fake_clock) -> None:
    runtime = Runtime(load_settings(), classifier=tiny_classifier, clock=fake_clock)
    margin = lambda: runtime.response_margin(LONG_DEADLINE_MS)  # noqa: E731
    assert margin() == Runtime.MIN_RESPONSE_MARGIN_S  # nothing measured yet
    for _ in range(200):
        _answered(runtime, 0.0005, fake_clock)  # quick hand-offs: the floor still holds
    assert margin() == Runtime.MIN_RESPONSE_MARGIN_S
    for _ in range(20):  # 10 % of the recent trips took 6 ms: the 99th percentile is 6 ms
        _answered(runtime, 0.006, fake_clock)
    assert margin() == pytest.approx(0.006)
    for _ in range(100):
        _answered(runtime, 0.5, fake_clock)  # a sick host does not eat the whole deadline
    assert margin() == Runtime.MAX_RESPONSE_MARGIN_S
    assert runtime.response_margin(20) == pytest.approx(0.010)  # nor more than half of a short one
    assert runtime.response_margin(3) == pytest.approx(0.0015)  # (below the floor, then)
    fake_clock.advance(61)  # a quiet minute: the old trips no longer count
    assert margin() == Runtime.MIN_RESPONSE_MARGIN_S


def test_a_few_slow_trips_at_light_load_do_not_move_the_margin(tiny_classifier, fake_clock) -> None:
    """At one request a second the 99th percentile of a minute's trips would be their maximum."""
    runtime = Runtime(load_settings(), classifier=tiny_classifier, clock=fake_clock)
    for i in range(Runtime.MIN_RECENT_HANDOFFS - 1):
        _answered(runtime, 0.02 if i in (10, 20) else 0.0005, fake_clock)  # two slow trips in 99
        fake_clock.advance(0.5)
    assert runtime.response_margin(LONG_DEADLINE_MS) == Runtime.MIN_RESPONSE_MARGIN_S
    _answered(runtime, 0.0005, fake_clock)  # the hundredth: now the tail counts (2 % of trips at 20 ms)
    assert runtime.response_margin(LONG_DEADLINE_MS) == pytest.approx(0.02)


def test_a_request_is_planned_for_its_deadline_less_the_margin(tiny_classifier, fake_clock) -> None:
    submitted = []

    class Admitted(Exception):
        pass

    def submit(job) -> None:
        submitted.append(job)
        raise Admitted

    runtime = Runtime(load_settings(), classifier=tiny_classifier, clock=fake_clock)
    runtime.engine = SimpleNamespace(pending=lambda kind=None: 0, estimated_wait=lambda deadline: 0.0, submit=submit)
    runtime.ready = True
    runtime.response_margin = lambda deadline_ms: 0.007
    received = fake_clock()
    with pytest.raises(Admitted):
        asyncio.run(runtime.classify(np.zeros((32, 32, 3), np.uint8), 50, received_at=received))
    assert submitted[0].deadline == pytest.approx(received + 0.050 - 0.007)


def test_classify_records_its_handoff_and_the_heap_is_frozen_while_serving(tiny_classifier) -> None:
    app = create_app(load_settings(cameras=[]), classifier=tiny_classifier)
    runtime: Runtime = app.state.runtime
    jpeg = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    with TestClient(app) as client:
        assert gc.get_freeze_count() > 0
        for _ in range(3):
            answer = client.post("/classify?deadline_ms=200", content=jpeg, headers={"content-type": "image/jpeg"})
            assert answer.status_code == 200
        assert runtime.metrics.classify_handoff.count() == 3
        assert len(runtime._handoffs) == 3
    assert gc.get_freeze_count() == 0  # stopped: what start-up froze can be collected again


def test_the_heap_stays_frozen_until_the_last_runtime_stops(tiny_classifier) -> None:
    first = TestClient(create_app(load_settings(cameras=[]), classifier=tiny_classifier))
    second = TestClient(create_app(load_settings(cameras=[]), classifier=tiny_classifier))
    with first:
        with second:
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() > 0  # the first is still running
    assert gc.get_freeze_count() == 0
