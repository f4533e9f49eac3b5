"""The client against a stand-in service: a tiny FastAPI app served by uvicorn in a thread.

The stand-in speaks the real wire format (client and service messages are kept equal by
test_client_contract.py) but answers instantly, so these tests run in about a second and need no model.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

import client
from client import errors
from client.http import AnytimeClient, AsyncAnytimeClient, sniff_content_type
from client.ws import camera_url, subscribe, subscribe_sync
from service.cli import main

TOKEN = "s3cret"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
BACKOFF: dict[str, Any] = {"min_backoff": 0.01, "max_backoff": 0.05}  # reconnect at once: the server is local


@dataclass
class StandIn:
    url: str
    tick: Iterator[int] = field(default_factory=itertools.count)
    connections: Counter[str] = field(default_factory=Counter)
    open: Counter[str] = field(default_factory=Counter)

    def prediction(self, camera_id: str) -> dict[str, Any]:
        tick = next(self.tick)
        top = {"class_index": 3, "label": "cat", "confidence": 0.75}
        return {
            "type": "prediction", "camera_id": camera_id, "tick": tick, "frame_seq": tick, "captured_at": 1.7e9,
            "published_at": 1.7e9 + 0.1, "exit": 2, "exits_total": 5, "label": "cat", "class_index": 3,
            "confidence": 0.75, "top5": [top], "mflops": 12.5, "compute_ms": 3.0, "camera_state": "live",
            "added_in_a_later_version": True,
        }  # fmt: skip


def make_app(state: StandIn) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def bearer(request: Request, call_next: Callable[..., Any]) -> Any:
        if request.url.path != "/health" and request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"detail": "missing or invalid bearer token"}, status_code=401)
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/cameras")
    def cameras() -> list[dict[str, Any]]:
        return [
            {"id": "cam0", "source": "synthetic", "state": "live", "fps": 10.0, "frames": 5, "dropped_frames": 0,
             "reconnects": 0, "last_error": None, "last_frame_at": 1.7e9, "future_field": 1}
        ]  # fmt: skip

    @app.get("/model")
    def model() -> dict[str, Any]:
        return {"preset": "msdnet-cifar-anytime", "classes": ["cat", "dog"]}

    @app.post("/classify")
    async def classify(request: Request, deadline_ms: float = Query(50, gt=0), exit: int | None = None) -> Any:
        body = await request.body()
        if body.startswith(b"status:"):  # the test asks for an error answer
            code = int(body[7:10])
            return JSONResponse({"detail": f"simulated {code}"}, code, headers={"Retry-After": "1.5"})
        ctype = request.headers.get("content-type", "")
        top = {"class_index": len(body), "label": ctype, "confidence": 0.5}
        return {**top, "top5": [top], "exit": exit or 3, "exits_total": 5, "mflops": 20.0, "elapsed_ms": 4.2,
                "deadline_ms": deadline_ms, "deadline_met": True}  # fmt: skip

    @app.websocket("/ws/cameras/{camera_id}")
    async def camera(websocket: WebSocket, camera_id: str, token: str | None = None) -> None:
        await websocket.accept()
        # The client sends its token in the handshake's header; in the URL it would reach the logs.
        if token is not None or websocket.headers.get("authorization") != f"Bearer {TOKEN}":
            await websocket.close(4401, "invalid token")
            return
        if camera_id == "missing":
            await websocket.close(4404, "no camera 'missing'")
            return
        state.connections[camera_id] += 1
        state.open[camera_id] += 1
        try:
            await websocket.send_text(json.dumps({"type": "hello", "server": "stand-in"}))  # skipped by clients
            while camera_id == "quiet":  # connected, never a prediction: a client waits in recv()
                await websocket.receive_text()  # (until the client closes: WebSocketDisconnect)
            for sent in itertools.count():
                if camera_id.startswith("drop") and sent == 2:  # "drop-1000", "drop-1011": close after 2 messages
                    await websocket.close(int(camera_id[5:]))
                    return
                await websocket.send_text(json.dumps(state.prediction(camera_id)))
                await asyncio.sleep(0.005)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            state.open[camera_id] -= 1

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state = StandIn(url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    config = uvicorn.Config(make_app(state), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait_for(lambda: srv.started, "stand-in server start")
    yield state
    srv.should_exit = True
    thread.join(5)


@pytest.fixture
def api(server: StandIn) -> Iterator[AnytimeClient]:
    with AnytimeClient(server.url, token=TOKEN) as c:
        yield c


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- HTTP --------------------------------------------------------------------------------------------


def test_classify_bytes_path_and_exit(api: AnytimeClient, tmp_path: Path) -> None:
    r = api.classify(PNG, deadline_ms=25)
    assert (r.label, r.class_index, r.exit, r.deadline_ms) == ("image/png", len(PNG), 3, 25)
    image = tmp_path / "photo.JPG"
    image.write_bytes(b"not really a jpeg")
    r = api.classify(image, exit=2)
    assert (r.label, r.exit, r.deadline_ms) == ("image/jpeg", 2, 50)
    assert api.classify(str(image)).label == "image/jpeg"


def test_sniff_content_type() -> None:
    assert sniff_content_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_content_type(PNG) == "image/png"
    assert sniff_content_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_content_type(b"GIF89a") == "application/octet-stream"


def test_cameras_model_health_ready(api: AnytimeClient, server: StandIn) -> None:
    (cam,) = api.cameras()
    assert (cam.id, cam.state, cam.fps) == ("cam0", "live", 10.0)  # and future_field was ignored
    assert api.model_card()["classes"] == ["cat", "dog"]
    assert api.health() is True
    with AnytimeClient(server.url) as anonymous:
        assert anonymous.health() is True
        assert anonymous.ready() is False  # 401 without the token
    with AnytimeClient(f"http://127.0.0.1:{_free_port()}", timeout=2) as nobody:
        assert nobody.health() is False
        with pytest.raises(errors.ConnectionLost, match=r"GET http://127\.0\.0\.1"):
            nobody.cameras()


def test_real_server_errors(api: AnytimeClient, server: StandIn) -> None:
    with pytest.raises(errors.Overloaded) as info:
        api.classify(b"status:503")
    assert (info.value.status_code, info.value.detail, info.value.retry_after) == (503, "simulated 503", 1.5)
    with pytest.raises(errors.InvalidParameters, match=r"deadline_ms: Input should be greater than 0"):
        api.classify(PNG, deadline_ms=-1)
    with AnytimeClient(server.url, token="wrong") as bad, pytest.raises(errors.Unauthorized, match="bearer token"):
        bad.classify(PNG)


@pytest.mark.parametrize(
    ("status", "body", "exc", "detail"),
    [
        (400, {"detail": "cannot decode image"}, errors.BadRequest, "cannot decode image"),
        (401, {"detail": "missing token"}, errors.Unauthorized, "missing token"),
        (413, {"detail": "over 10 MB"}, errors.PayloadTooLarge, "over 10 MB"),
        (415, {"detail": "not an image"}, errors.UnsupportedMediaType, "not an image"),
        (422, {"detail": [{"loc": ["query", "exit"], "msg": "bad exit", "type": "x"}]}, errors.InvalidParameters,
         "exit: bad exit"),
        (422, {"detail": "exit 9 out of range"}, errors.InvalidParameters, "exit 9 out of range"),
        (503, {"detail": "queue full"}, errors.Overloaded, "queue full"),
        (500, "Internal Server Error", errors.ServerError, "Internal Server Error"),
        (418, {"other": 1}, errors.HTTPStatusError, "{'other': 1}"),
    ],
)  # fmt: skip
def test_status_maps_to_exception(status: int, body: Any, exc: type[errors.HTTPStatusError], detail: str) -> None:
    headers = {"Retry-After": "3"} if status == 503 else {}

    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    with AnytimeClient(transport=httpx.MockTransport(handler)) as c, pytest.raises(exc) as info:
        c.classify(PNG)
    assert type(info.value) is exc and isinstance(info.value, client.AnytimeError)
    assert (info.value.status_code, info.value.detail) == (status, detail)
    assert info.value.retry_after == (3.0 if status == 503 else None)

    async def run_async() -> None:
        async with AsyncAnytimeClient(transport=httpx.MockTransport(handler)) as ac:
            with pytest.raises(exc):
                await ac.classify(PNG)

    asyncio.run(run_async())


@pytest.mark.parametrize("body", [b"<html>a proxy's login page</html>", b'{"label": "cat"}', b"[1, 2]"])
def test_a_2xx_answer_that_is_not_the_service_s_is_an_anytime_error(body: bytes) -> None:
    """Another service (or a proxy page) at the URL once raised pydantic's or json's errors."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    with AnytimeClient(transport=transport) as c:
        calls = [lambda: c.classify(PNG), c.cameras]
        if not body.startswith(b"{"):  # any JSON object is a model card: its shape is the model's
            calls.append(c.model_card)
        for call in calls:
            with pytest.raises(client.AnytimeError, match="is not the anytime service's"):
                call()

    async def run_async() -> None:
        async with AsyncAnytimeClient(transport=transport) as ac:
            with pytest.raises(client.AnytimeError, match="is not the anytime service's"):
                await ac.cameras()

    asyncio.run(run_async())


def test_a_url_that_does_not_parse_is_an_anytime_error() -> None:
    with pytest.raises(client.AnytimeError, match="not a URL"):
        AnytimeClient("http://[::1")


def test_retry_after_http_date() -> None:
    assert errors.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert errors.parse_retry_after("soon") is None
    assert errors.parse_retry_after(None) is None


def test_async_client(server: StandIn) -> None:
    async def run() -> None:
        async with AsyncAnytimeClient(server.url, token=TOKEN) as ac:
            r = await ac.classify(PNG, deadline_ms=30, exit=1)
            assert (r.label, r.exit, r.deadline_ms) == ("image/png", 1, 30)
            assert [c.id for c in await ac.cameras()] == ["cam0"]
            assert (await ac.model_card())["preset"] == "msdnet-cifar-anytime"
            assert await ac.health() and await ac.ready()
            with pytest.raises(errors.Overloaded):
                await ac.classify(b"status:503")

    asyncio.run(run())


# --- WebSocket ---------------------------------------------------------------------------------------


def test_camera_url() -> None:
    assert camera_url("http://h:8000", "cam 1") == "ws://h:8000/ws/cameras/cam%201"
    assert camera_url("https://h/prefix/", "c", token="a&b") == "wss://h/prefix/ws/cameras/c?token=a%26b"


def test_subscribe_sync_receives_and_closes_on_break(server: StandIn) -> None:
    with subscribe_sync("cam0", server.url, token=TOKEN) as stream:
        messages = list(itertools.islice(stream, 3))
    assert [m.camera_id for m in messages] == ["cam0"] * 3
    assert messages[0].tick < messages[1].tick < messages[2].tick and messages[0].top5[0].label == "cat"
    _wait_for(lambda: server.open["cam0"] == 0, "server to see the socket closed")

    for _ in subscribe_sync("cam0", server.url, token=TOKEN):
        break  # no context manager: dropping the generator closes the socket
    _wait_for(lambda: server.open["cam0"] == 0, "server to see the socket closed after break")


def test_subscribe_async_receives_and_closes_on_break(server: StandIn) -> None:
    async def run() -> None:
        async with subscribe("cam0", server.url, token=TOKEN) as stream:
            ticks = [m.tick async for m in _take(stream, 3)]
        assert ticks == sorted(ticks) and len(set(ticks)) == 3
        async for _ in subscribe("cam0", server.url, token=TOKEN):
            break  # asyncio's async-generator finalizer closes the socket, in a task of its own
        while len(asyncio.all_tasks()) > 1:  # let that task finish before asyncio.run cancels it
            await asyncio.sleep(0.005)

    asyncio.run(run())
    _wait_for(lambda: server.open["cam0"] == 0, "server to see the socket closed")


async def _take(stream: Any, n: int) -> Any:
    async for message in stream:
        yield message
        n -= 1
        if n == 0:
            return


@pytest.mark.parametrize("code", [1000, 1011])
def test_reconnects_after_the_server_drops(server: StandIn, code: int) -> None:
    camera = f"drop-{code}"
    with subscribe_sync(camera, server.url, token=TOKEN, **BACKOFF) as stream:
        ticks = [m.tick for m in itertools.islice(stream, 5)]
        assert stream.connections == 3  # 2 + 2 + 1 messages
    assert ticks == sorted(ticks) and len(set(ticks)) == 5

    async def run() -> int:
        async with subscribe(camera, server.url, token=TOKEN, **BACKOFF) as astream:
            assert len([m async for m in _take(astream, 5)]) == 5
            return astream.connections

    assert asyncio.run(run()) == 3


def test_close_from_another_thread_ends_a_blocked_iteration(server: StandIn) -> None:
    """A consumer waiting for the next message once could not be stopped: close() from another thread
    raised "generator already executing" and the consumer kept waiting."""
    stream = subscribe_sync("quiet", server.url, token=TOKEN)
    outcome: list[object] = []
    consumer = threading.Thread(target=lambda: outcome.append(list(stream)), daemon=True)
    consumer.start()
    _wait_for(lambda: server.open["quiet"] == 1, "the consumer to connect and wait")
    stream.close()
    consumer.join(5)
    assert not consumer.is_alive() and outcome == [[]]
    _wait_for(lambda: server.open["quiet"] == 0, "server to see the socket closed")


def test_aclose_from_another_task_ends_a_waiting_iteration(server: StandIn) -> None:
    async def run() -> list:
        stream = subscribe("quiet", server.url, token=TOKEN)
        consumer = asyncio.create_task(_collect(stream))
        while server.open["quiet"] == 0:
            await asyncio.sleep(0.01)
        await stream.aclose()
        return await asyncio.wait_for(consumer, 5)

    assert asyncio.run(run()) == []
    _wait_for(lambda: server.open["quiet"] == 0, "server to see the socket closed")


async def _collect(stream: Any) -> list:
    return [m async for m in stream]


def test_no_reconnect_raises_connection_lost(server: StandIn) -> None:
    stream = subscribe_sync("drop-1011", server.url, token=TOKEN, reconnect=False)
    assert len(list(itertools.islice(stream, 2))) == 2
    with pytest.raises(errors.ConnectionLost, match="drop-1011"):
        next(stream)
    with pytest.raises(errors.ConnectionLost):  # nobody listening: max_retries bounds the attempts
        next(iter(subscribe_sync("cam0", f"http://127.0.0.1:{_free_port()}", max_retries=1, **BACKOFF)))


def test_final_close_codes(server: StandIn) -> None:
    with pytest.raises(errors.CameraNotFound, match="no camera 'missing'") as info:
        next(iter(subscribe_sync("missing", server.url, token=TOKEN)))
    assert info.value.camera_id == "missing"
    with pytest.raises(errors.Unauthorized, match="invalid token"):
        next(iter(subscribe_sync("cam0", server.url, token="wrong")))

    async def run() -> None:
        with pytest.raises(errors.CameraNotFound):
            await anext(subscribe("missing", server.url, token=TOKEN))

    asyncio.run(run())


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_watch(server: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "cam0", "--url", server.url, "--token", TOKEN, "--count", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("cat" in line and "exit 2/5" in line and line.endswith("live") for line in lines)
    assert main(["watch", "cam0", "--url", server.url, "--token", TOKEN, "--count", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["camera_id"] == "cam0"
    assert main(["watch", "missing", "--url", server.url, "--token", TOKEN]) == 1
    assert capsys.readouterr().err.startswith("anytime watch: error: camera 'missing' not found")


def test_cli_classify(
    server: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYTIME_URL", server.url)
    monkeypatch.setenv("ANYTIME_TOKEN", TOKEN)
    image = tmp_path / "x.png"
    image.write_bytes(PNG)
    assert main(["classify", str(image), "--deadline-ms", "40"]) == 0
    assert capsys.readouterr().out.strip() == "image/png  0.500  exit 3/5  4.2 ms  deadline met (40 ms)"
    assert main(["classify", str(image), "--exit", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exit"] == 4
    image.write_bytes(b"status:503")
    assert main(["classify", str(image)]) == 1
    assert capsys.readouterr().err.strip() == "anytime classify: error: 503 overloaded: simulated 503"
    assert main(["classify", str(tmp_path / "absent.png")]) == 2
    assert "anytime classify: error:" in capsys.readouterr().err


def test_cli_default_url_matches_the_client() -> None:
    from client.cli import DEFAULT_URL
    from client.http import DEFAULT_URL as HTTP_DEFAULT

    assert DEFAULT_URL == HTTP_DEFAULT
