"""The video endpoints (MJPEG stream, snapshot) and the overlay page's static files, through TestClient."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import video
from service.app import create_app
from service.config import load_settings
from service.frames import Frame

STREAM = "/cameras/synthetic/stream.mjpg"
SNAPSHOT = "/cameras/synthetic/snapshot.jpg"
HARD_TIMEOUT_S = 15.0  # no test here may hang on a stream that stops producing


@pytest.fixture
def client(tiny_classifier) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(tick_hz=10), classifier=tiny_classifier)) as client:
        _wait_for_frame(client)
        yield client


@pytest.fixture
def token_client(tiny_classifier) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(tick_hz=10, token="s3cret"), classifier=tiny_classifier)) as client:
        yield client


def _wait_for_frame(client: TestClient, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get(SNAPSHOT).status_code == 503:
        assert time.monotonic() < deadline, "the synthetic camera produced no frame"
        time.sleep(0.05)


def _decode(jpeg: bytes) -> np.ndarray:
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9", "not a complete JPEG"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "undecodable JPEG"
    return image


def _read_parts(response: httpx.Response, count: int) -> list[bytes]:
    """The first ``count`` JPEG parts of a multipart stream, parsed by their Content-Length."""
    boundary = b"--" + video.BOUNDARY.encode()
    buffer, parts = b"", []
    chunks = response.iter_bytes()
    while len(parts) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0 or len(buffer) < head_end + 4 + _content_length(buffer[:head_end]):
            buffer += next(chunks)
            continue
        head = buffer[:head_end]
        assert head.startswith(boundary + b"\r\n"), head[:60]
        assert b"content-type: image/jpeg" in head.lower()
        start = head_end + 4
        end = start + _content_length(head)
        parts.append(buffer[start:end])
        assert buffer[end : end + 2] == b"\r\n"
        buffer = buffer[end + 2 :]
    return parts


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _stream_parts(client: TestClient, url: str, count: int) -> tuple[httpx.Response, list[bytes], float]:
    """Read ``count`` parts in a helper thread, so a stalled stream fails the test instead of hanging it."""
    result: dict[str, object] = {}

    def read() -> None:
        try:
            with client.stream("GET", url) as response:
                result["response"] = response
                started = time.monotonic()
                result["parts"] = _read_parts(response, count)
                result["elapsed"] = time.monotonic() - started
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(HARD_TIMEOUT_S)
    assert not thread.is_alive(), f"no {count} MJPEG parts within {HARD_TIMEOUT_S} s"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["response"], result["parts"], result["elapsed"]  # type: ignore[return-value]


def test_snapshot_is_a_jpeg_of_the_camera_frame(client: TestClient) -> None:
    response = client.get(SNAPSHOT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert "no-store" in response.headers["cache-control"]
    assert _decode(response.content).shape == (360, 640, 3)  # the default synthetic camera


def test_mjpeg_stream_yields_jpeg_parts(client: TestClient) -> None:
    response, parts, _ = _stream_parts(client, STREAM, 3)
    assert response.status_code == 200
    assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
    images = [_decode(part) for part in parts]
    assert all(image.shape == (360, 640, 3) for image in images)
    assert len({part for part in parts}) == 3, "the stream repeated a frame"


def test_mjpeg_fps_query_caps_the_rate(client: TestClient) -> None:
    # A cap can only be checked from below: 4 parts at 5 fps need at least 3 periods (0.6 s).
    _, parts, elapsed = _stream_parts(client, STREAM + "?fps=5&quality=30", 4)
    assert len(parts) == 4
    assert elapsed >= 3 / 5 - 0.05


def test_quality_changes_the_encoding(client: TestClient) -> None:
    low = client.get(SNAPSHOT, params={"quality": 5}).content
    high = client.get(SNAPSHOT, params={"quality": 95}).content
    assert len(low) < len(high)


def test_unknown_camera_is_404(client: TestClient) -> None:
    for url in ("/cameras/nope/stream.mjpg", "/cameras/nope/snapshot.jpg"):
        response = client.get(url)
        assert response.status_code == 404
        assert "nope" in response.json()["detail"]


@pytest.mark.parametrize("query", ["fps=0", "fps=31", "fps=abc", "quality=0", "quality=101", "quality=high"])
def test_bad_stream_parameters_are_422(client: TestClient, query: str) -> None:
    assert client.get(f"{STREAM}?{query}").status_code == 422


def test_video_needs_the_token(token_client: TestClient) -> None:
    assert token_client.get(SNAPSHOT).status_code == 401
    assert token_client.get(STREAM).status_code == 401
    assert token_client.get(SNAPSHOT, headers={"Authorization": "Bearer wrong"}).status_code == 401
    _wait_for_frame_with_token(token_client)
    assert token_client.get(SNAPSHOT, params={"token": "s3cret"}).status_code == 200
    assert token_client.get(SNAPSHOT, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    response, parts, _ = _stream_parts(token_client, STREAM + "?token=s3cret", 1)
    assert response.status_code == 200 and len(parts) == 1


def _wait_for_frame_with_token(client: TestClient, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get(SNAPSHOT, params={"token": "s3cret"}).status_code == 503:
        assert time.monotonic() < deadline, "the synthetic camera produced no frame"
        time.sleep(0.05)


def test_overlay_page_and_static_files_are_public(token_client: TestClient) -> None:
    page = token_client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="static/overlay.js"' in page.text
    assert 'href="static/overlay.css"' in page.text
    script = token_client.get("/static/overlay.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "new WebSocket" in script.text
    assert token_client.get("/static/overlay.css").status_code == 200
    assert token_client.get("/cameras").status_code == 401  # the data behind the page stays protected


# --- the generator alone: pacing and "only new frames" without a server ----------------------------------


def _frame(seq: int, width: int = 64, height: int = 48) -> Frame:
    image = np.full((height, width, 3), seq % 256, np.uint8)
    image.flags.writeable = False  # like the camera's frames: the encoder must not need to write
    return Frame("cam", seq, image, captured_at=0.0, captured_mono=0.0)


def test_a_frame_is_encoded_once_however_fast_the_viewer(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[int] = []
    monkeypatch.setattr(video, "encode_jpeg", lambda image, quality: encoded.append(int(image[0, 0, 0])) or b"jpg")

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        current = {"frame": _frame(1)}

        async def never() -> bool:
            return False

        parts = video.mjpeg_parts(lambda: current["frame"], never, fps=30, quality=50)
        await anext(parts)
        started = loop.time()
        loop.call_later(0.3, current.__setitem__, "frame", _frame(2))
        await anext(parts)  # a 30 fps viewer still waits for the camera's next frame
        waited = loop.time() - started
        await parts.aclose()
        return waited

    waited = asyncio.run(asyncio.wait_for(scenario(), HARD_TIMEOUT_S))
    assert encoded == [1, 2]
    assert waited >= 0.25


def test_a_stream_with_no_new_frame_repeats_the_last_one_so_it_never_goes_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A camera that is down sends nothing new; a silent MJPEG response is closed by proxies, and a
    browser's <img> never asks again (found in review: the tile froze for good)."""
    monkeypatch.setattr(video, "KEEPALIVE_S", 0.1)
    encoded: list[int] = []
    monkeypatch.setattr(video, "encode_jpeg", lambda image, quality: encoded.append(int(image[0, 0, 0])) or b"jpg")

    async def scenario() -> list[bytes]:
        async def never() -> bool:
            return False

        parts = video.mjpeg_parts(lambda: _frame(1), never, fps=30, quality=50)
        received = [await anext(parts) for _ in range(3)]
        await parts.aclose()
        return received

    received = asyncio.run(asyncio.wait_for(scenario(), HARD_TIMEOUT_S))
    assert len(set(received)) == 1 and encoded == [1]  # the same part again, encoded once


def test_the_stream_ends_when_finished() -> None:
    async def scenario() -> list[bytes]:
        seq = iter(range(1, 100))
        calls = {"n": 0}

        async def after_two() -> bool:
            calls["n"] += 1
            return calls["n"] > 2

        return [part async for part in video.mjpeg_parts(lambda: _frame(next(seq)), after_two, 30, 50)]

    assert len(asyncio.run(asyncio.wait_for(scenario(), HARD_TIMEOUT_S))) == 2


def test_wide_frames_are_downscaled() -> None:
    wide = _frame(1, width=1920, height=1080).image
    assert _decode(video.encode_jpeg(wide, 70)).shape == (720, 1280, 3)
    small = _frame(1).image
    assert _decode(video.encode_jpeg(small, 70)).shape == (48, 64, 3)
