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

    def __init__(self, app: Any, port: int = 0, token: str = TOKEN) -> None:
        import uvicorn

        # Bind first and hand uvicorn the socket: no window in which another process can take the port.
        # (``port``: the port of a server that has just stopped, to play a restart.)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.token = token
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
                if httpx.get(f"{self.url}/ready", params={"token": self.token}, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop within 10 s"


# The picture's own pixels, drawn to a canvas (same origin, so readable): a screenshot of the <img> would
# include the overlay drawn over it, whose text changes at every tick even when the video is frozen.
PIXELS_JS = """img => {
  if (!img.complete || !img.naturalWidth) return null;  // between two snapshots, or no frame yet
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let hash = 0;
  for (let i = 0; i < data.length; i += 7) hash = (hash * 31 + data[i]) | 0;
  return hash;
}"""


def _video_moves(page: Any, img: Any, within_ms: int) -> bool:
    """Do the picture's pixels change within ``within_ms``?"""
    first = None
    for _ in range(50):  # a snapshot tile is between two pictures now and then: read again
        first = page.evaluate(PIXELS_JS, img.element_handle())
        if first is not None:
            break
        page.wait_for_timeout(20)
    assert first is not None, "the picture never finished loading"
    changed = f"img => {{ const now = ({PIXELS_JS})(img); return now !== null && now !== {first}; }}"
    try:
        page.wait_for_function(changed, arg=img.element_handle(), timeout=within_ms)
    except Exception:  # playwright's TimeoutError
        return False
    return True


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
        assert _video_moves(page, img, 3000), "the video's pixels did not change in 3 s"

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


def test_overlay_video_file_camera(browser: Any, tiny_classifier: Any) -> None:
    if not CAR_VIDEO.is_file():
        pytest.skip(f"{CAR_VIDEO} is not present")
    cameras = [{"id": "cars", "source": str(CAR_VIDEO), "loop": True}]
    app = create_app(load_settings(tick_hz=10, cameras=cameras), classifier=tiny_classifier)
    with LiveServer(app) as server:
        _check_overlay(browser, server.url + "/", "cars", "file")


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
            assert _video_moves(page, last, 3000), "the 8th camera's picture did not change in 3 s"
            updates = page.eval_on_selector_all(".tile", "tiles => tiles.map(t => +t.dataset.updates)")
            assert all(n > 0 for n in updates), f"tiles without a prediction: {updates}"
            # The page still answers other requests: the camera list loads while the pictures run.
            status = page.evaluate("fetch('cameras').then(r => r.status)")
            assert status == 200
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "overlay-crowded.png"))
        finally:
            page.close()


class _FailsOnce:
    """A synthetic source that fails once after ``frames`` frames, as a camera that drops off and comes back."""

    failed = False

    def __init__(self, config: Any, frames: int) -> None:
        from service.sources import make_source

        self.inner, self.frames = make_source(config), frames

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self) -> Any:
        from service.sources import SourceError

        self.frames -= 1
        if self.frames < 0 and not _FailsOnce.failed:
            _FailsOnce.failed = True
            raise SourceError("unplugged (test)")
        return self.inner.read()


def test_a_stream_that_died_is_restarted_when_its_camera_comes_back(
    browser: Any, tiny_classifier: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MJPEG response that ends fires no event in the page: the picture froze for good while the labels
    went on (found in review). Here the first response ends after a few frames, the camera then drops off
    and comes back, and the page must ask for a new stream and paint moving pictures again."""
    from service.api import video

    original = video.mjpeg_parts
    streams = {"n": 0}

    async def first_stream_ends(*args: Any, **kwargs: Any) -> Any:
        streams["n"] += 1
        parts = original(*args, **kwargs)
        sent = 0
        async for part in parts:
            yield part
            sent += 1
            if streams["n"] == 1 and sent == 5:  # like a proxy closing the response
                await parts.aclose()
                return

    monkeypatch.setattr(video, "mjpeg_parts", first_stream_ends)
    _FailsOnce.failed = False
    app = create_app(
        load_settings(tick_hz=10, cameras=[{"id": "flaky", "source": "synthetic:160x90"}]),
        classifier=tiny_classifier,
        source_factory=lambda config: _FailsOnce(config, frames=150),  # about 6 s at 25 fps
    )
    with LiveServer(app) as server:
        page = browser.new_page()
        try:
            page.goto(server.url + "/", timeout=TIMEOUT_MS)
            tile = page.locator('.tile[data-camera="flaky"]')
            img = tile.locator("img.video")
            page.wait_for_function("img => img.naturalWidth > 0", arg=img.element_handle(), timeout=TIMEOUT_MS)
            # The camera goes down and comes back (1 s backoff); the page then asks for a new stream.
            page.wait_for_function("t => t.dataset.state !== 'live'", arg=tile.element_handle(), timeout=15_000)
            page.wait_for_function("t => t.dataset.state === 'live'", arg=tile.element_handle(), timeout=15_000)
            deadline = time.monotonic() + 10
            while streams["n"] < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert streams["n"] >= 2, "the page never asked for a new stream"
            assert _video_moves(page, img, 5000), "the picture did not move again after the camera came back"
        finally:
            page.close()


@pytest.mark.parametrize(
    ("restarted_with", "state", "advice"),
    [
        ({"token": TOKEN, "cameras": [{"id": "other", "source": "synthetic"}]}, "removed", "reload the page"),
        ({"token": "a-new-token", "cameras": [{"id": "gone", "source": "synthetic"}]}, "not authorised", "token"),
    ],
    ids=["camera-removed", "token-changed"],
)
def test_a_tile_stops_when_a_restarted_service_refuses_it(
    browser: Any, tiny_classifier: Any, restarted_with: dict, state: str, advice: str
) -> None:
    """Restarted without the page's camera (4404) or with another token (4401), the service will refuse
    every reconnection: the tile stops retrying and the page says what to do."""
    before = {"token": TOKEN, "cameras": [{"id": "gone", "source": "synthetic"}]}
    page = browser.new_page(viewport={"width": 960, "height": 600})
    try:
        with LiveServer(create_app(load_settings(tick_hz=10, **before), classifier=tiny_classifier)) as first:
            page.goto(first.url + f"/?token={TOKEN}", timeout=TIMEOUT_MS)
            tile = page.locator('.tile[data-camera="gone"]')
            page.wait_for_function("el => +el.dataset.updates > 0", arg=tile.element_handle(), timeout=TIMEOUT_MS)
            port = first.port
        app = create_app(load_settings(tick_hz=10, **restarted_with), classifier=tiny_classifier)
        with LiveServer(app, port=port, token=restarted_with["token"]):
            page.wait_for_function(
                "el => el.dataset.ws === 'closed'", arg=tile.element_handle(), timeout=2 * TIMEOUT_MS
            )
            assert tile.get_attribute("data-state") == state
            assert advice in page.get_by_test_id("error").inner_text()
            updates = tile.get_attribute("data-updates")
            page.wait_for_timeout(2500)  # a retry would have come after 1 or 2 s
            assert tile.get_attribute("data-ws") == "closed" and tile.get_attribute("data-updates") == updates
            assert tile.locator("img.video").get_attribute("src") is None  # the picture stopped asking too
    finally:
        page.close()
