"""Liveness that means something: /health and /ready fail with the reason when a thread the service
cannot work without has died or hung, so a container health check (docker/Dockerfile) flags it."""

from __future__ import annotations

from types import SimpleNamespace

from fastapi.testclient import TestClient

from service.app import create_app
from service.config import load_settings
from service.runtime import Runtime


def _started(tiny_classifier) -> tuple[TestClient, Runtime]:
    app = create_app(load_settings(), classifier=tiny_classifier)
    return TestClient(app), app.state.runtime


def test_a_dead_engine_thread_fails_health_and_readiness(tiny_classifier) -> None:
    client, runtime = _started(tiny_classifier)
    with client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").status_code == 200
        runtime.engine.stop()
        health, ready = client.get("/health"), client.get("/ready")
    assert health.status_code == 503 and health.json()["problems"] == ["the engine thread has stopped"]
    assert ready.status_code == 503 and ready.json()["status"] == "unhealthy"


def test_a_dead_tick_thread_fails_health(tiny_classifier) -> None:
    client, runtime = _started(tiny_classifier)
    with client:
        runtime.scheduler.stop()
        health = client.get("/health")
    assert health.status_code == 503 and health.json()["problems"] == ["the tick thread has stopped"]


def test_a_stuck_engine_and_silent_ticks_are_reported(tiny_classifier, fake_clock) -> None:
    runtime = Runtime(load_settings(), classifier=tiny_classifier, clock=fake_clock)
    assert runtime.problems() == []  # not started: nothing to judge yet
    runtime.ready = True
    runtime.engine = SimpleNamespace(running=True, step_started_at=fake_clock() - 0.01)
    runtime.scheduler = SimpleNamespace(running=True, last_tick_at=fake_clock() - 0.05, period=0.1)
    assert runtime.problems() == []  # a block in progress, a tick 50 ms ago: healthy
    fake_clock.advance(30)
    assert runtime.problems() == ["the engine has been on one block for 30 s", "no tick for 30 s"]
