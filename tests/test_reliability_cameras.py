"""Reliability of camera sources: a network camera (MJPEG over HTTP, read by OpenCV's FFmpeg backend)
that dies and comes back, or freezes, reconnects by itself while a synthetic camera beside it keeps
ticking.

Everything runs on loopback with the tiny untrained MSDNet, and every wait is bounded so that a
regression fails instead of hanging CI. A real uvicorn server runs in a thread
(tests/reliability_helpers.py); the camera that dies is tests/mjpeg_server.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import CameraConfig
from service.messages import CameraPrediction

from .mjpeg_server import MjpegServer
from .reliability_helpers import (
    TICK_HZ,
    UvicornThread,
    reliability_settings,
    served_metric,
    tick_gaps,
    wait_until,
)
from .ws_clients import WsRecorder

# =====================================================================================================
# 2. A network camera whose source dies and comes back, next to a synthetic one that must not notice
# =====================================================================================================


def _camera(http: httpx.Client, camera_id: str) -> dict[str, Any]:
    return next(c for c in http.get("/cameras").json() if c["id"] == camera_id)


@contextlib.contextmanager
def _network_camera_beside_a_synthetic(
    tiny_classifier: Any,
) -> Iterator[tuple[MjpegServer, UvicornThread, httpx.Client]]:
    """A served app with an MJPEG-over-HTTP camera ("net", already delivering) and a synthetic one."""
    with MjpegServer(fps=20) as mjpeg:
        cameras = [CameraConfig(id="net", source=mjpeg.url), CameraConfig(id="synthetic", source="synthetic")]
        app = create_app(reliability_settings(cameras=cameras), classifier=tiny_classifier)
        with UvicornThread(app) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
            wait_until(lambda: _camera(http, "net")["frames"] >= 20, 15, what="the network camera to deliver frames")
            yield mjpeg, server, http


def test_network_camera_dies_and_comes_back_without_disturbing_the_others(tiny_classifier: Any) -> None:
    """An MJPEG-over-HTTP camera is switched off and on; the runtime's real 1 s..30 s backoff brings it back."""
    with _network_camera_beside_a_synthetic(tiny_classifier) as (mjpeg, server, http):
        missed_before = served_metric(http, "anytime_missed_ticks_total")
        with (
            WsRecorder(f"{server.ws_url}/ws/cameras/synthetic") as synthetic,
            WsRecorder(f"{server.ws_url}/ws/cameras/net") as net,
        ):
            before = net.wait_for(lambda m: m["exit"] >= 1, 10, "a classified frame from the network camera")
            frames_before = _camera(http, "net")["frames"]

            mjpeg.stop()  # the camera loses power: listening socket and open stream both gone
            stopped_at = time.monotonic()
            down = wait_until(
                lambda: (c := _camera(http, "net"))["state"] in ("down", "connecting") and c["last_error"] and c,
                15,
                what="/cameras to report the network camera down",
            )
            time.sleep(1.5)  # stay dead through at least one failed reconnect

            mjpeg.start()  # same port: the configured URL works again
            restarted_at = time.monotonic()
            back = wait_until(
                lambda: (c := _camera(http, "net"))["state"] == "live" and c["frames"] > frames_before and c,
                20,
                what="the network camera to come back by itself",
            )
            time.sleep(0.5)
            ended_at = time.monotonic()
            after = net.wait_for(
                lambda m: m["camera_state"] == "live" and m["exit"] >= 1 and m["frame_seq"] > before["frame_seq"],
                10,
                "a newly classified frame from the network camera",
            )
        missed = served_metric(http, "anytime_missed_ticks_total") - missed_before

    assert down["last_error"] and back["reconnects"] >= 1, (down, back)
    assert after["frame_seq"] > before["frame_seq"]
    # The synthetic camera's subscriber got a message at every tick of the whole episode ...
    during = [CameraPrediction.model_validate(m) for m in synthetic.between(stopped_at, ended_at)]
    ticks = [m.tick for m in during]
    assert len(ticks) >= 0.7 * (ended_at - stopped_at) * TICK_HZ, (len(ticks), ended_at - stopped_at)
    assert tick_gaps(ticks) <= missed, f"synthetic subscriber lost ticks while 'net' was down: {ticks}"
    # ... each one live and classified: the dead camera's reconnects never starved it.
    assert all(m.camera_state == "live" and m.exit >= 1 for m in during), [m for m in during if m.exit < 1]
    # The dead camera's own subscribers kept getting one message per tick too, saying it was not live.
    outage = net.between(stopped_at + 0.5, restarted_at)
    assert outage and all(m["camera_state"] in ("down", "connecting") for m in outage), outage[:3]
    assert tick_gaps([m["tick"] for m in outage]) <= missed
    assert synthetic.error is None and net.error is None


@pytest.mark.slow
def test_a_frozen_network_stream_times_out_and_reconnects(tiny_classifier: Any) -> None:
    """The stream stays connected but goes silent (network path lost without FIN/RST): FFmpeg's read
    timeout (service/sources.py NETWORK_TIMEOUT_S, 10 s) must end the read so the reader reconnects."""
    with _network_camera_beside_a_synthetic(tiny_classifier) as (mjpeg, server, http):
        missed_before = served_metric(http, "anytime_missed_ticks_total")
        with WsRecorder(f"{server.ws_url}/ws/cameras/synthetic") as synthetic:
            frozen_at = time.monotonic()
            mjpeg.freeze_open_streams()
            connections = mjpeg.connections
            back = wait_until(
                lambda: mjpeg.connections > connections and (c := _camera(http, "net"))["state"] == "live" and c,
                30,
                interval=0.2,
                what="the reader to give up on the silent stream and reconnect",
            )
            frames = back["frames"]
            wait_until(lambda: _camera(http, "net")["frames"] > frames + 5, 10, what="frames on the new stream")
            ended_at = time.monotonic()
        missed = served_metric(http, "anytime_missed_ticks_total") - missed_before

    assert back["reconnects"] >= 1 and "no frame" in (back["last_error"] or ""), back
    ticks = [m["tick"] for m in synthetic.between(frozen_at, ended_at)]
    assert len(ticks) >= 0.7 * (ended_at - frozen_at) * TICK_HZ and tick_gaps(ticks) <= missed, ticks
