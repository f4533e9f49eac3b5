"""The service end to end through FastAPI's TestClient (lifespan, websocket, /classify, ops)."""

from __future__ import annotations

import io
import itertools
import statistics
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.app import create_app
from service.config import CameraConfig, load_settings
from service.messages import CameraPrediction, ClassifyResponse

from .conftest import VIDEOS


def _jpeg(w: int = 64, h: int = 48) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims huge dimensions: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64


@pytest.fixture
def client(tiny_classifier):
    settings = load_settings(tick_hz=10, max_upload_bytes=200_000)
    with TestClient(create_app(settings, classifier=tiny_classifier)) as c:
        yield c


def test_ready_cameras_model_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    cams = client.get("/cameras").json()
    assert [c["id"] for c in cams] == ["synthetic"]
    card = client.get("/model").json()
    assert card["preset"] == "msdnet-cifar-budgeted" and len(card["exits"]) == 5
    time.sleep(0.35)
    text = client.get("/metrics").text
    assert "anytime_ticks_total" in text and 'anytime_camera_fps{camera="synthetic"}' in text
    assert "anytime_publish_lateness_ms_bucket" in text


def test_the_readme_lists_every_metric() -> None:
    from service.telemetry import ServiceMetrics

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    names = [metric.name for metric in ServiceMetrics(5, list, dict).registry._metrics]
    assert names and [name for name in names if f"| `{name}` |" not in readme] == []


def test_websocket_receives_one_message_per_tick(client: TestClient) -> None:
    with client.websocket_connect("/ws/cameras/synthetic") as ws:
        messages = [CameraPrediction.model_validate_json(ws.receive_text()) for _ in range(8)]
    ticks = [m.tick for m in messages]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    later = messages[2:]  # the first one or two may predate the first classified frame
    assert all(m.exit >= 1 and m.label for m in later)
    assert all(m.camera_state == "live" and m.exits_total == 5 for m in later)
    gaps = [b.published_at - a.published_at for a, b in itertools.pairwise(later)]
    # ~100 ms apart: one message per tick (loose: tests are not benchmarks, and a starved CI machine may
    # skip a tick, which the tick numbers above already show as a gap, not a repeat)
    assert all(g > 0.05 for g in gaps) and 0.08 < statistics.median(gaps) < 0.15, gaps
    assert all(len(m.top5) == 5 and m.mflops > 0 for m in later)


def test_unknown_camera_is_refused_with_a_close_code(client: TestClient) -> None:
    with client.websocket_connect("/ws/cameras/nope") as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive_text()
    assert info.value.code == 4404 and "unknown camera" in info.value.reason


def test_classify_raw_and_multipart(client: TestClient) -> None:
    r = client.post("/classify?deadline_ms=500", content=_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    answer = ClassifyResponse.model_validate(r.json())
    assert 1 <= answer.exit <= 5 and answer.deadline_ms == 500 and answer.label
    r = client.post("/classify", files={"file": ("x.jpg", io.BytesIO(_jpeg()), "image/jpeg")})
    assert r.status_code == 200, r.text
    r = client.post("/classify?exit=2&deadline_ms=1000", content=_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.json()["exit"] == 2
    # curl -F file=@photo (no known extension) labels the part application/octet-stream: the bytes decide.
    r = client.post("/classify", files={"file": ("photo", io.BytesIO(_jpeg()), "application/octet-stream")})
    assert r.status_code == 200, r.text
    r = client.post("/classify", files={"file": ("notes", io.BytesIO(b"plain text"), "application/octet-stream")})
    assert r.status_code == 400 and "not a decodable" in r.json()["detail"]


def test_non_finite_deadline_is_named_as_such(client: TestClient) -> None:
    r = client.post("/classify?deadline_ms=nan", content=_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 422 and "finite" in r.text


def test_tiny_deadline_still_answers_after_exit_one(client: TestClient) -> None:
    r = client.post("/classify?deadline_ms=1", content=_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    body = r.json()
    assert body["exit"] == 1 and body["deadline_met"] is False and body["elapsed_ms"] > 1


@pytest.mark.parametrize(
    ("query", "body", "ctype", "status", "fragment"),
    [
        ("deadline_ms=0", _jpeg(), "image/jpeg", 422, "deadline_ms"),
        ("deadline_ms=10001", _jpeg(), "image/jpeg", 422, "deadline_ms"),
        ("deadline_ms=abc", _jpeg(), "image/jpeg", 422, "deadline_ms"),
        ("exit=6", _jpeg(), "image/jpeg", 422, "exit must be between 1 and 5"),
        ("exit=0", _jpeg(), "image/jpeg", 422, "exit"),
        ("", b"x" * 300_000, "image/jpeg", 413, "cap"),
        ("", b"hello", "text/plain", 415, "not an image"),
        ("", b"GIF89a....", "image/gif", 415, "unsupported image type"),
        ("", b"\xff\xd8\xff\xe0garbage", "image/jpeg", 400, "truncated or corrupt"),
        ("", b"not an image at all", "image/png", 400, "not a decodable"),
        ("", b"", "image/png", 400, "empty body"),
        ("", _png_header_only(100_000, 100_000), "image/png", 400, "over the cap"),
    ],
)
def test_bad_inputs_get_clear_errors(client: TestClient, query, body, ctype, status, fragment) -> None:
    r = client.post(f"/classify?{query}", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert fragment in r.text
    # ... and the service keeps serving.
    assert client.post("/classify", content=_jpeg(), headers={"content-type": "image/jpeg"}).status_code == 200


def test_multipart_without_a_file_field(client: TestClient) -> None:
    r = client.post("/classify", data={"other": "x"}, files={"nofile": ("a.txt", b"hi", "text/plain")})
    assert r.status_code == 400 and "'file'" in r.text


def test_over_capacity_answers_503_with_retry_after(tiny_classifier) -> None:
    settings = load_settings(max_pending_classify=1)
    app = create_app(settings, classifier=tiny_classifier)
    with TestClient(app) as c:
        engine = app.state.runtime.engine
        engine.pending = lambda kind=None: 1  # the queue is full
        r = c.post("/classify", content=_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "over capacity" in r.json()["detail"]


def test_access_token(tiny_classifier) -> None:
    settings = load_settings(token="s3cret")
    with TestClient(create_app(settings, classifier=tiny_classifier)) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/cameras").status_code == 401
        assert c.get("/cameras", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/cameras", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/metrics?token=s3cret").status_code == 200
        r = c.post("/classify", content=_jpeg(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 401
        with c.websocket_connect("/ws/cameras/synthetic") as ws, pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 4401
        with c.websocket_connect("/ws/cameras/synthetic?token=s3cret") as ws:
            assert CameraPrediction.model_validate_json(ws.receive_text()).camera_id == "synthetic"
        with c.websocket_connect("/ws/cameras/synthetic", headers={"Authorization": "Bearer s3cret"}) as ws:
            assert CameraPrediction.model_validate_json(ws.receive_text()).camera_id == "synthetic"  # the client's way
        for path in ("/docs", "/redoc", "/openapi.json"):  # off with a token: nothing answers without it
            assert c.get(path).status_code == 404
            assert c.get(f"{path}?token=s3cret").status_code == 404


def test_docs_are_served_without_a_token(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["info"]["title"] == "anytime"
    assert client.get("/docs").status_code == 200


@pytest.mark.skipif(not (VIDEOS / "cat.mp4").exists(), reason="../shared/videos is not present")
def test_file_camera_is_classified(tiny_classifier) -> None:
    cams = [CameraConfig(id="cat", source=str(VIDEOS / "cat.mp4")), CameraConfig(id="synthetic", source="synthetic")]
    settings = load_settings(cameras=[c.model_dump() for c in cams])
    with TestClient(create_app(settings, classifier=tiny_classifier)) as c:
        with c.websocket_connect("/ws/cameras/cat") as ws:
            msgs = [CameraPrediction.model_validate_json(ws.receive_text()) for _ in range(6)]
        states = {s["id"]: s["state"] for s in c.get("/cameras").json()}
    assert msgs[-1].camera_state == "live" and msgs[-1].exit >= 1 and msgs[-1].frame_seq
    assert states == {"cat": "live", "synthetic": "live"}


def test_shutdown_stops_every_thread(tiny_classifier) -> None:
    import threading

    before = {t.name for t in threading.enumerate()}
    app = create_app(load_settings(), classifier=tiny_classifier)
    with TestClient(app):
        pass
    time.sleep(0.1)
    leftover = {t.name for t in threading.enumerate()} - before
    assert not {n for n in leftover if n.startswith("anytime") or n.startswith("camera")}, leftover


def test_bad_weights_path_fails_start_up_clearly(tmp_path: Path) -> None:
    settings = load_settings(weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(FileNotFoundError, match="weights file"), TestClient(create_app(settings)):
        pass


def test_subscribers_beyond_the_cap_are_told_to_come_back_later(tiny_classifier) -> None:
    app = create_app(load_settings(max_subscribers=1), classifier=tiny_classifier)
    with TestClient(app) as c, c.websocket_connect("/ws/cameras/synthetic") as first:
        first.receive_text()
        with c.websocket_connect("/ws/cameras/synthetic") as second, pytest.raises(WebSocketDisconnect) as info:
            second.receive_text()
        assert info.value.code == 1013 and "try again later" in info.value.reason
        first.receive_text()  # the first subscription is untouched


def test_a_service_with_no_cameras_serves_classify(tiny_classifier) -> None:
    """``cameras: []`` is a /classify-only deployment (it once crashed at warm-up on batch size 0)."""
    settings = load_settings(cameras=[])
    with TestClient(create_app(settings, classifier=tiny_classifier)) as c:
        assert c.get("/ready").status_code == 200
        assert c.get("/cameras").json() == []
        r = c.post("/classify?deadline_ms=1000", content=_jpeg(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and ClassifyResponse.model_validate(r.json()).exit >= 1
