"""The service's Prometheus metrics, defined in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from service.frames import CameraStatus
from service.metrics import Registry

__all__ = ["ServiceMetrics"]

_MS_BUCKETS = (1, 2, 5, 10, 20, 30, 40, 50, 60, 75, 100, 150, 250, 500, 1000, 2500)
_LATENESS_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 10, 20, 50, 100)


class ServiceMetrics:
    def __init__(
        self,
        exits_total: int,
        statuses: Callable[[], list[CameraStatus]],
        subscribers: Callable[[], dict[str, int]],
    ) -> None:
        self.registry = r = Registry()

        def per_camera(attr: str) -> Callable[[], Iterable[tuple[dict[str, str], float]]]:
            return lambda: [({"camera": s.camera_id}, float(getattr(s, attr))) for s in statuses()]

        r.gauge("anytime_camera_fps", "Decoded frames per second per camera.", per_camera("fps"))
        r.gauge("anytime_camera_frames_total", "Decoded frames per camera.", per_camera("frames"))
        r.gauge(
            "anytime_camera_dropped_frames_total",
            "Frames replaced before the model took them.",
            per_camera("dropped_frames"),
        )
        r.gauge("anytime_camera_reconnects_total", "Reconnections per camera.", per_camera("reconnects"))
        r.gauge(
            "anytime_camera_live",
            "1 when the camera delivers frames.",
            lambda: [({"camera": s.camera_id}, float(s.state.value == "live")) for s in statuses()],
        )
        r.gauge(
            "anytime_ws_subscribers",
            "Websocket subscribers per camera.",
            lambda: [({"camera": c}, float(n)) for c, n in subscribers().items()],
        )
        self.exit_depth = r.histogram(
            "anytime_tick_exit_depth", "Exit published per camera per tick.", range(0, exits_total + 1)
        )
        self.publish_lateness = r.histogram(
            "anytime_publish_lateness_ms", "Publish time minus tick time.", _LATENESS_BUCKETS
        )
        self.ticks = r.counter("anytime_ticks_total", "Ticks published.")
        self.missed_ticks = r.counter("anytime_missed_ticks_total", "Ticks skipped because the scheduler woke late.")
        self.tick_jobs = r.counter("anytime_tick_jobs_total", "Camera batches by how they ended.")
        self.classify_latency = r.histogram("anytime_classify_latency_ms", "POST /classify elapsed time.", _MS_BUCKETS)
        self.classify_handoff = r.histogram(
            "anytime_classify_handoff_ms",
            "Engine's answer to the request's coroutine (kept back from later deadlines).",
            _LATENESS_BUCKETS,
        )
        self.classify_requests = r.counter("anytime_classify_requests_total", "POST /classify by status code.")
        self.classify_exit = r.histogram(
            "anytime_classify_exit_depth", "Exit reached by /classify answers.", range(1, exits_total + 1)
        )
        self.batch_requests = r.counter("anytime_batch_requests_total", "POST /classify/batch by status code.")
        self.batch_exit = r.histogram(
            "anytime_batch_exit_depth", "Exit each /classify/batch image left at.", range(1, exits_total + 1)
        )
        self.ws_dropped = r.counter(
            "anytime_ws_dropped_messages_total", "Messages overwritten before a slow subscriber took them."
        )

    def render(self) -> str:
        return self.registry.render()
