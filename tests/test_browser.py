"""The overlay page in a real headless Chromium against a real uvicorn server.

What only a browser can show: the MJPEG <img> actually paints, the websocket feeds the overlay at the
tick rate, and the page forwards the access token to every request it makes. Needs Debian's
/usr/bin/chromium and the ``playwright`` package (never ``playwright install``: no downloads here).
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import load_settings

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CAR_VIDEO = REPO.parent / "shared" / "videos" / "car-detection.mp4"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TOKEN = "s3cret"
TIMEOUT_MS = 10_000  # per wait in the page; a scenario stays well under 20 s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("no Chromium: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class LiveServer:
    """uvicorn in a background thread on a free port, for as long as the ``with`` block lasts."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        # Bind first and hand uvicorn the socket: no window in which another process can take the port.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, ws_ping_interval=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while True:
            assert self.thread.is_alive(), "uvicorn exited during start-up"
            assert time.monotonic() < deadline, "the service was not ready within 20 s"
            try:
                # 503 until the model is loaded; the token is ignored when none is configured.
                if httpx.get(f"{self.url}/ready", params={"token": TOKEN}, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop within 10 s"


def _check_overlay(browser: Any, url: str, camera: str, scenario: str) -> None:
    page = browser.new_page(viewport={"width": 960, "height": 600})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        page.goto(url, timeout=TIMEOUT_MS)
        tile = page.locator(f'.tile[data-camera="{camera}"]')
        tile.wait_for(timeout=TIMEOUT_MS)
        img = tile.locator("img.video")

        # The video paints: the MJPEG image has a size, and its pixels move.
        page.wait_for_function("img => img.naturalWidth > 0", arg=img.element_handle(), timeout=TIMEOUT_MS)
        first = img.screenshot()
        page.wait_for_timeout(500)
        assert img.screenshot() != first, "the video did not change in 0.5 s"

        # The overlay follows the ticks: at least 5 messages in 2 s (10 Hz sends about 20).
        page.wait_for_function("el => +el.dataset.updates > 0", arg=tile.element_handle(), timeout=TIMEOUT_MS)
        before = int(tile.get_attribute("data-updates") or 0)
        page.wait_for_timeout(2000)
        after = int(tile.get_attribute("data-updates") or 0)
        assert after - before >= 5, f"only {after - before} websocket messages in 2 s"
        assert tile.get_attribute("data-ws") == "open"
        assert tile.get_attribute("data-video") == "stream"  # one camera: the MJPEG stream, not snapshots
        assert tile.get_attribute("data-state") == "live"
        assert re.fullmatch(r"exit \d+/\d+", tile.get_by_test_id("exit").inner_text()), "no exit depth shown"
        assert tile.get_by_test_id("label").inner_text().strip()
        assert tile.get_by_test_id("state").is_hidden(), "a live camera shows a state badge"

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"overlay-{scenario}.png"))
        assert not errors, f"errors in the page: {errors}"
    finally:
        page.close()


def test_overlay_synthetic_camera_with_token(browser: Any, tiny_classifier: Any) -> None:
    started = time.monotonic()
    app = create_app(load_settings(tick_hz=10, token=TOKEN), classifier=tiny_classifier)
    with LiveServer(app) as server:
        # Without the token the page loads but shows why nothing else does.
        page = browser.new_page()
        try:
            page.goto(server.url + "/", timeout=TIMEOUT_MS)
            page.get_by_test_id("error").wait_for(timeout=TIMEOUT_MS)
            assert "token" in page.get_by_test_id("error").inner_text()
            assert page.locator(".tile").count() == 0
        finally:
            page.close()
        _check_overlay(browser, server.url + f"/?token={TOKEN}", "synthetic", "synthetic")
    assert time.monotonic() - started < 30


def test_overlay_video_file_camera(browser: Any, tiny_classifier: Any) -> None:
    if not CAR_VIDEO.is_file():
        pytest.skip(f"{CAR_VIDEO} is not present")
    started = time.monotonic()
    cameras = [{"id": "cars", "source": str(CAR_VIDEO), "loop": True}]
    app = create_app(load_settings(tick_hz=10, cameras=cameras), classifier=tiny_classifier)
    with LiveServer(app) as server:
        _check_overlay(browser, server.url + "/", "cars", "file")
    assert time.monotonic() - started < 30


def test_overlay_paints_every_camera_of_a_crowded_page(browser: Any, tiny_classifier: Any) -> None:
    """More cameras than a browser's 6 HTTP/1.1 connections per host: every tile still paints.

    One endless MJPEG response per tile would hold one connection each, so the 7th tile's picture
    (and any later request) would wait forever; crowded pages poll snapshots instead."""
    cameras = [{"id": f"cam{i}", "source": "synthetic:160x90"} for i in range(8)]
    app = create_app(load_settings(tick_hz=10, cameras=cameras), classifier=tiny_classifier)
    with LiveServer(app) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(server.url + "/", timeout=TIMEOUT_MS)
            page.wait_for_function("document.querySelectorAll('.tile').length === 8", timeout=TIMEOUT_MS)
            for i in range(8):
                img = page.locator(f'.tile[data-camera="cam{i}"] img.video')
                page.wait_for_function("img => img.naturalWidth > 0", arg=img.element_handle(), timeout=TIMEOUT_MS)
            assert page.locator(".tile[data-video=snapshots]").count() == 8
            last = page.locator('.tile[data-camera="cam7"] img.video')
            first = last.screenshot()
            page.wait_for_timeout(1500)
            assert last.screenshot() != first, "the 8th camera's picture did not change in 1.5 s"
            updates = page.eval_on_selector_all(".tile", "tiles => tiles.map(t => +t.dataset.updates)")
            assert all(n > 0 for n in updates), f"tiles without a prediction: {updates}"
            # The page still answers other requests: the camera list loads while the pictures run.
            status = page.evaluate("fetch('cameras').then(r => r.status)")
            assert status == 200
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "overlay-crowded.png"))
        finally:
            page.close()
