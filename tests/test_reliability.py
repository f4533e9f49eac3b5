"""Reliability: hostile uploads, a camera that dies and comes back, many and misbehaving subscribers.

The unit tests check each component on its own; these check the promises the README makes about the
running service as a whole: /classify never answers 5xx to bad input (except 503 with Retry-After), one
dead camera never disturbs the others and comes back by itself, a stalled or vanished websocket client
never delays the live ones and never lingers as a subscriber. Everything runs on loopback, with the tiny
untrained MSDNet, and every wait is bounded so a regression fails instead of hanging CI.

Sections: 1. fuzzed /classify (TestClient); 2. a network camera (MJPEG over HTTP, read by OpenCV's FFmpeg
backend) that dies, comes back, or freezes; 3. 100 subscribers of which 10 never read; 4. clients that
vanish or stop reading; 5. an upload small in bytes but huge in pixels. Sections 2-5 use a
real uvicorn server in a thread (tests/reliability_helpers.py), because TestClient has no sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import string
import struct
import time
import zlib
from collections import Counter
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.config import CameraConfig, Settings, load_settings
from service.messages import CameraPrediction, ClassifyResponse

from .reliability_helpers import (
    LoopLagProbe,
    MjpegServer,
    UvicornThread,
    WsRecorder,
    abort_socket,
    call_with_timeout,
    metric_value,
    raw_websocket,
    small_write_buffer_ws_protocol,
    sockets_closed,
    tick_gaps,
    wait_until,
)

TICK_HZ = 10.0
EXITS = 5  # the tiny classifier's exits
WS_PATH = "/ws/cameras/synthetic"


def _settings(**overrides: Any) -> Settings:
    return load_settings(tick_hz=TICK_HZ, **overrides)


def _jpeg(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


# =====================================================================================================
# 1. Fuzzed /classify: never a 5xx (but 503 + Retry-After), always a JSON detail, and the ticks go on
# =====================================================================================================

SUPPORTED = ("image/jpeg", "image/png", "image/webp")


@functools.cache
def _valid_images() -> dict[str, bytes]:
    """Complete, decodable encodings of odd and ordinary sizes, in every accepted format and some variants."""
    rng = np.random.default_rng(1)
    out: dict[str, bytes] = {}
    for w, h in [(1, 1), (3000, 1), (1, 3000), (2, 2), (17, 5), (32, 32), (64, 48)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for ext in (".jpg", ".png", ".webp"):
            out[f"{w}x{h}{ext}"] = cv2.imencode(ext, image)[1].tobytes()
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    out["grey.png"] = cv2.imencode(".png", grey)[1].tobytes()
    out["grey.jpg"] = cv2.imencode(".jpg", grey)[1].tobytes()
    out["rgba.png"] = cv2.imencode(".png", rng.integers(0, 256, (9, 11, 4), dtype=np.uint8))[1].tobytes()
    out["16bit.png"] = cv2.imencode(".png", rng.integers(0, 65536, (8, 8, 3), dtype=np.uint16))[1].tobytes()
    out["lossless.webp"] = cv2.imencode(
        ".webp", rng.integers(0, 256, (7, 13, 3), dtype=np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101]
    )[1].tobytes()
    return out


def _png_claiming(w: int, h: int) -> bytes:
    """A PNG signature and a valid IHDR claiming w x h, then no image data: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 32


def _jpeg_claiming(w: int, h: int) -> bytes:
    """SOI and a baseline SOF0 segment claiming w x h, then garbage."""
    return b"\xff\xd8\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01" * 2


def _webp_claiming(w: int, h: int) -> bytes:
    """A RIFF/WEBP container with a VP8X chunk claiming a w x h canvas (1..2^24 each)."""
    vp8x = b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8x)) + b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x


@st.composite
def _valid_body(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A complete image, from the odd-sized and variant set or encoded fresh at a random small size."""
    if draw(st.booleans()):
        return _valid_images()[draw(st.sampled_from(sorted(_valid_images())))], True
    w, h = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    ext = draw(st.sampled_from([".jpg", ".png", ".webp"]))
    image = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(ext, image)[1].tobytes(), True


@st.composite
def _truncated_body(draw: st.DrawFn) -> tuple[bytes, bool]:
    data = _valid_images()[draw(st.sampled_from(sorted(_valid_images())))]
    return data[: draw(st.integers(0, len(data) - 1))], False


@st.composite
def _corrupted_body(draw: st.DrawFn) -> tuple[bytes, bool]:
    data = bytearray(_valid_images()[draw(st.sampled_from(sorted(_valid_images())))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data), False


_claiming_body = st.one_of(
    st.builds(_png_claiming, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(_jpeg_claiming, st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(_webp_claiming, st.integers(1, 2**24), st.integers(1, 2**24)),
).map(lambda data: (data, False))

_magic_then_noise = st.builds(
    lambda magic, noise: (magic + noise, False),
    st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b""]),
    st.binary(max_size=600),
)

# Each body is (bytes, valid): valid means "a complete image the service must accept". Complete images
# come a third of the time so the happy path is checked under the same random parameters.
_BODIES = {
    "valid": _valid_body(),
    "truncated": _truncated_body(),
    "corrupted": _corrupted_body(),
    "claiming": _claiming_body,
    "noise": _magic_then_noise,
}
_any_body = st.sampled_from(["valid", "valid", "valid", "truncated", "corrupted", "claiming", "noise"]).flatmap(
    _BODIES.__getitem__
)

_TYPE_ALPHABET = string.ascii_letters + string.digits + "/;=-+.* "
_good_type = st.sampled_from([None, *SUPPORTED, "image/jpeg; charset=binary", "IMAGE/PNG", " image/webp "])
_content_type = st.one_of(
    _good_type.map(lambda t: (t, True)),
    _good_type.map(lambda t: (t, True)),
    st.sampled_from(
        [
            "",
            "image/gif",
            "image/*",
            "image/",
            "image",
            "text/plain",
            "application/octet-stream",
            "application/json",
            "garbage",
            ";",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=zzz",
            "multipart/mixed; boundary=zzz",
            "application/x-www-form-urlencoded",
        ]
    ).map(lambda t: (t, False)),
    st.text(_TYPE_ALPHABET, max_size=40).map(lambda t: (t, False)),
)


@st.composite
def _raw_request(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bool]:
    body, body_ok = draw(_any_body)
    ctype, ctype_ok = draw(_content_type)
    headers = {} if ctype is None else {"content-type": ctype}
    return body, headers, body_ok and ctype_ok


@st.composite
def _multipart_request(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bool]:
    """A multipart/form-data body built by hand, so every part header (or its absence) is under control."""
    boundary = "b0undary" + draw(st.text(string.ascii_letters + string.digits, max_size=10))
    image, image_ok = draw(_any_body)
    name = draw(st.sampled_from(["file", "file", "file", "image", "upload", "File"]))
    filename = draw(st.sampled_from(["x.jpg", "x", None, ""]))
    part_type = draw(st.sampled_from([None, *SUPPORTED, "application/octet-stream", "text/plain"]))
    extra = draw(st.lists(st.tuples(st.sampled_from(["a", "note", "file2"]), st.text(max_size=20)), max_size=3))
    second_file = draw(st.booleans()) and draw(st.booleans())  # two file parts: over max_files=1

    def part(field: str, content: bytes, fname: str | None, ctype: str | None) -> bytes:
        disposition = f'form-data; name="{field}"' + (f'; filename="{fname}"' if fname is not None else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if ctype is not None:
            head += f"Content-Type: {ctype}\r\n"
        return head.encode() + b"\r\n" + content + b"\r\n"

    body = b"".join(part(k, v.encode(), None, None) for k, v in extra)
    body += part(name, image, filename, part_type)
    if second_file:
        body += part("other", _jpeg(), "y.jpg", "image/jpeg")
    body += f"--{boundary}--\r\n".encode()
    cut = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, len(body) - 1)))
    if cut is not None:
        body = body[:cut]
    ok = (
        image_ok
        and name == "file"
        and filename in ("x.jpg", "x")
        and part_type in (None, *SUPPORTED, "application/octet-stream")
        and not second_file
        and cut is None
    )
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}, ok


_good_deadline = st.one_of(st.none(), st.integers(1, 10000).map(str), st.floats(1, 10000).map(repr))
_good_exit = st.one_of(st.none(), st.none(), st.integers(1, EXITS).map(str))
_bad_deadline = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.text(max_size=12),
)
_bad_exit = st.one_of(
    st.integers(-5, 12).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=8),
)
_unknown_params = st.lists(
    st.tuples(st.text(string.ascii_lowercase + "_", min_size=1, max_size=10), st.text(max_size=10)).filter(
        lambda kv: kv[0] not in ("deadline_ms", "exit", "token")
    ),
    max_size=3,
)


@st.composite
def _query(draw: st.DrawFn) -> tuple[list[tuple[str, str]], bool, int | None]:
    """Query parameters, well-formed two times in three so that most requests get past validation."""
    good = draw(st.sampled_from([True, True, False]))
    if good:
        deadline, exit_ = draw(_good_deadline), draw(_good_exit)
    else:
        deadline = draw(st.one_of(st.none(), _good_deadline, _bad_deadline))
        exit_ = draw(st.one_of(st.none(), _good_exit, _bad_exit))
    params = [("deadline_ms", deadline)] if deadline is not None else []
    if exit_ is not None:
        params.append(("exit", exit_))
    params += draw(_unknown_params)
    forced = int(exit_) if good and exit_ is not None else None
    return draw(st.permutations(params)), good, forced


def _fresh_tick(client: TestClient) -> int:
    """The tick number of a message published after this call (the first one may be the cached last)."""
    with client.websocket_connect(WS_PATH) as ws:
        call_with_timeout(ws.receive_text, 5, "the cached websocket message")
        message = json.loads(call_with_timeout(ws.receive_text, 5, "a new websocket message"))
    return int(message["tick"])


def _counter(client: TestClient, name: str) -> float:
    return metric_value(client.get("/metrics").text, name) or 0.0


@pytest.fixture
def fuzz_client(tiny_classifier: Any) -> Any:
    # raise_server_exceptions=False: a crash must show up as the 500 a real client would get.
    with TestClient(create_app(_settings(), classifier=tiny_classifier), raise_server_exceptions=False) as client:
        yield client


def test_fuzzed_classify_never_fails_the_server_and_ticks_go_on(fuzz_client: TestClient) -> None:
    """Random bodies, content types and parameters: no 5xx but 503 + Retry-After, a JSON detail with every
    4xx, good requests always answered; and the camera's ticks keep being published all along."""
    client = fuzz_client
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=200,
        deadline=None,
        database=None,  # no .hypothesis/ folder in the checkout; failures print the reproducing example
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=st.one_of(_raw_request(), _multipart_request()), query=_query())
    def post_anything(request: tuple[bytes, dict[str, str], bool], query: tuple[list, bool, int | None]) -> None:
        body, headers, body_ok = request
        params, params_ok, forced_exit = query
        r = client.post("/classify", params=params, content=body, headers=headers)
        statuses[r.status_code] += 1
        where = f"{r.status_code} {r.headers.get('content-type')} {r.text[:300]!r}"
        assert r.status_code < 500 or r.status_code == 503, where
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/json"), where
            assert "detail" in r.json(), where
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1, where
        if r.status_code == 200:
            answer = ClassifyResponse.model_validate(r.json())
            assert 1 <= answer.exit <= answer.exits_total == EXITS, where
            if forced_exit is not None:
                assert answer.exit == forced_exit, where
        if body_ok and params_ok:  # a good image with good parameters is answered (or deferred), never refused
            assert r.status_code in (200, 503), where

    tick_before = _fresh_tick(client)
    published_before = _counter(client, "anytime_ticks_total")
    missed_before = _counter(client, "anytime_missed_ticks_total")
    started = time.monotonic()
    post_anything()
    elapsed = time.monotonic() - started
    tick_after = _fresh_tick(client)
    published = _counter(client, "anytime_ticks_total") - published_before
    missed = _counter(client, "anytime_missed_ticks_total") - missed_before

    assert statuses[200] > 0 and sum(n for s, n in statuses.items() if 400 <= s < 500) > 0, statuses
    # The tick clock kept running: tick numbers follow the monotonic clock ...
    slots = tick_after - tick_before
    assert slots >= 0.8 * elapsed * TICK_HZ - 2, (slots, elapsed)
    # ... and every slot in between was published, or (CPU starvation on a shared machine) counted as
    # missed; most of them must have been published.
    assert abs(published + missed - slots) <= 3, (published, missed, slots)
    assert published >= 0.75 * slots, f"only {published:.0f} of {slots} ticks published ({missed:.0f} missed)"
    # And the service still answers a plain request.
    r = client.post("/classify", content=_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text


# =====================================================================================================
# 2. A network camera whose source dies and comes back, next to a synthetic one that must not notice
# =====================================================================================================


def _camera(http: httpx.Client, camera_id: str) -> dict[str, Any]:
    return next(c for c in http.get("/cameras").json() if c["id"] == camera_id)


def _counter_http(http: httpx.Client, name: str) -> float:
    return metric_value(http.get("/metrics").text, name) or 0.0


def test_network_camera_dies_and_comes_back_without_disturbing_the_others(tiny_classifier: Any) -> None:
    """An MJPEG-over-HTTP camera is switched off and on; the runtime's real 1 s..30 s backoff brings it back."""
    with MjpegServer(fps=20) as mjpeg:
        cameras = [CameraConfig(id="net", source=mjpeg.url), CameraConfig(id="synthetic", source="synthetic")]
        app = create_app(_settings(cameras=cameras), classifier=tiny_classifier)
        with UvicornThread(app) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
            wait_until(lambda: _camera(http, "net")["frames"] >= 20, 15, what="the network camera to deliver frames")
            missed_before = _counter_http(http, "anytime_missed_ticks_total")
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
            missed = _counter_http(http, "anytime_missed_ticks_total") - missed_before

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
    with MjpegServer(fps=20) as mjpeg:
        cameras = [CameraConfig(id="net", source=mjpeg.url), CameraConfig(id="synthetic", source="synthetic")]
        app = create_app(_settings(cameras=cameras), classifier=tiny_classifier)
        with UvicornThread(app) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
            wait_until(lambda: _camera(http, "net")["frames"] >= 20, 15, what="the network camera to deliver frames")
            missed_before = _counter_http(http, "anytime_missed_ticks_total")
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
            missed = _counter_http(http, "anytime_missed_ticks_total") - missed_before

    assert back["reconnects"] >= 1 and "no frame" in (back["last_error"] or ""), back
    ticks = [m["tick"] for m in synthetic.between(frozen_at, ended_at)]
    assert len(ticks) >= 0.7 * (ended_at - frozen_at) * TICK_HZ and tick_gaps(ticks) <= missed, ticks


# =====================================================================================================
# 3. 100 websocket subscribers on a real server, 10 of which never read
# =====================================================================================================


async def _live_subscribers(
    ws_url: str, base_url: str, count: int, stalled: list[socket.socket], stall_port: int, window_s: float
) -> tuple[list[list[tuple[float, int]]], dict[str, float], float, float]:
    """Connect 10 clients that never read, wait until they really stall the server's sends, then ``count``
    reading clients, and record what the readers receive."""
    from websockets.asyncio.client import connect

    received: list[list[tuple[float, int]]] = [[] for _ in range(count)]

    async def reader(ws: Any, out: list[tuple[float, int]]) -> None:
        async for text in ws:
            out.append((time.monotonic(), json.loads(text)["tick"]))

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http, contextlib.AsyncExitStack() as stack:

        async def counters() -> dict[str, float]:
            text = (await http.get("/metrics")).text
            return {
                "subscribers": metric_value(text, "anytime_ws_subscribers", camera="synthetic") or 0.0,
                "missed": metric_value(text, "anytime_missed_ticks_total") or 0.0,
                "dropped": metric_value(text, "anytime_ws_dropped_messages_total") or 0.0,
            }

        for _ in range(10):
            stalled.append(await asyncio.to_thread(raw_websocket, stall_port, WS_PATH, rcvbuf=4096))
        # The stall is real once the server's sends to them block and their latest-wins mailboxes start
        # overwriting: 2 overwrites each (they are the only subscribers yet, so the drops are theirs).
        deadline = time.monotonic() + 20
        while (await counters())["dropped"] < 20:
            assert time.monotonic() < deadline, "the non-reading clients never stalled the server's sends"
            await asyncio.sleep(0.2)
        clients = await asyncio.gather(
            *(stack.enter_async_context(connect(ws_url + WS_PATH, open_timeout=20)) for _ in range(count))
        )
        tasks = [asyncio.create_task(reader(ws, out)) for ws, out in zip(clients, received)]
        while not all(received):
            assert time.monotonic() < deadline + 20, "some subscribers never got a first message"
            await asyncio.sleep(0.1)
        # The counters' interval must contain the window: a tick missed while /metrics is being read
        # at the window's edge would otherwise look like a tick lost by the publisher.
        first = await counters()
        start = time.monotonic()
        await asyncio.sleep(window_s)
        end = time.monotonic()
        last = await counters()
        for task in tasks:
            task.cancel()
        stats = {
            "subscribers": first["subscribers"],
            "subscribers_end": last["subscribers"],
            "missed": last["missed"] - first["missed"],
            "dropped": last["dropped"] - first["dropped"],
        }
    return [[(t, tick) for t, tick in out if start <= t <= end] for out in received], stats, start, end


@pytest.mark.slow
def test_hundred_subscribers_ten_stalled_the_others_get_every_tick(tiny_classifier: Any) -> None:
    app = create_app(_settings(), classifier=tiny_classifier)
    # The stalled clients must stay subscribed through the test: the send timeout has its own test.
    app.state.runtime.publisher.send_timeout = 120.0
    # Small server send buffers and no user-space write buffer: a non-reading client really blocks the
    # server's sends within a second or two (see small_write_buffer_ws_protocol).
    with (
        UvicornThread(app, ws=small_write_buffer_ws_protocol(), sndbuf=4096) as server,
        sockets_closed([]) as stalled,
    ):
        scenario = _live_subscribers(server.ws_url, server.base_url, 90, stalled, server.port, window_s=3.0)
        windows, stats, start, end = asyncio.run(asyncio.wait_for(scenario, 60))

    assert stats["subscribers"] == 100 and stats["subscribers_end"] == 100, stats
    expected = (end - start) * TICK_HZ
    # The stalled clients stayed stalled through the window: ~one overwritten message per tick each.
    assert stats["dropped"] >= 10 * 0.5 * expected, stats
    ticks = [[tick for _, tick in window] for window in windows]
    short = [len(t) for t in ticks if len(t) < 0.8 * expected - stats["missed"]]
    assert not short, f"{len(short)} of 90 live clients got too few messages: {short} of ~{expected:.0f} ({stats})"
    lossy = {i: tick_gaps(t) for i, t in enumerate(ticks) if tick_gaps(t) > stats["missed"]}
    assert not lossy, f"{len(lossy)} of 90 live clients lost ticks (client: ticks lost): {lossy} ({stats})"


# =====================================================================================================
# 4. Clients that vanish or stop reading are removed, and the service keeps serving
# =====================================================================================================


def _subscribers(http: httpx.Client) -> float:
    return metric_value(http.get("/metrics").text, "anytime_ws_subscribers", camera="synthetic") or 0.0


def _still_serving(server: UvicornThread, http: httpx.Client) -> None:
    """A new subscriber gets consecutive ticks, and /classify answers."""
    missed_before = _counter_http(http, "anytime_missed_ticks_total")
    with WsRecorder(server.ws_url + WS_PATH) as recorder:
        wait_until(lambda: len(recorder.messages) >= 8, 10, what="8 messages on a fresh subscription")
    missed = _counter_http(http, "anytime_missed_ticks_total") - missed_before
    assert tick_gaps([m["tick"] for _, m in recorder.messages]) <= missed
    r = http.post("/classify", content=_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text


def test_vanished_websocket_clients_are_removed(tiny_classifier: Any) -> None:
    """Clients that disappear without a close frame: RST (killed process), FIN after draining, half-close."""
    app = create_app(_settings(), classifier=tiny_classifier)
    with (
        UvicornThread(app) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
        sockets_closed([]) as socks,
    ):
        socks += [raw_websocket(server.port, WS_PATH) for _ in range(6)]
        wait_until(lambda: _subscribers(http) == 6, 5, what="6 subscribers")
        time.sleep(0.3)  # let some messages arrive unread
        abort_socket(socks[0])  # RST: the process was killed
        abort_socket(socks[1])
        for sock in socks[2:4]:  # read what has arrived, then a plain close: FIN, no close frame
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while sock.recv(65536):
                    pass
            sock.close()
        for sock in socks[4:]:
            sock.shutdown(socket.SHUT_WR)  # half-close: EOF to the server, socket still open here
        wait_until(lambda: _subscribers(http) == 0, 5, what="the vanished subscribers to be removed")
        _still_serving(server, http)


@pytest.mark.slow
def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(tiny_classifier: Any) -> None:
    """Latest-wins keeps a stalled client's memory bounded; the send timeout then ends the subscription."""
    app = create_app(_settings(), classifier=tiny_classifier)
    send_timeout = app.state.runtime.publisher.send_timeout
    with (
        UvicornThread(app, ws=small_write_buffer_ws_protocol(), sndbuf=4096) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
        sockets_closed([]) as socks,
    ):
        socks.append(raw_websocket(server.port, WS_PATH, rcvbuf=4096))
        wait_until(lambda: _subscribers(http) == 1, 5, what="the subscriber to be counted")
        started = time.monotonic()
        wait_until(
            lambda: _subscribers(http) == 0, send_timeout + 10, interval=0.25, what="the stalled client's removal"
        )
        assert time.monotonic() - started >= send_timeout - 0.5  # not before its sends really timed out
        _still_serving(server, http)


@pytest.mark.slow
def test_the_handler_of_a_dropped_stalled_client_ends(tiny_classifier: Any) -> None:
    app = create_app(_settings(), classifier=tiny_classifier)
    app.state.runtime.publisher.send_timeout = 2.0  # read at subscribe time; keeps the test short
    with (
        UvicornThread(app, ws=small_write_buffer_ws_protocol(), sndbuf=4096, ws_ping_interval=2.0) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
        sockets_closed([]) as socks,
    ):
        socks.append(raw_websocket(server.port, WS_PATH, rcvbuf=4096))
        wait_until(lambda: _subscribers(http) == 1, 5, what="the subscriber to be counted")
        wait_until(lambda: _subscribers(http) == 0, 15, interval=0.25, what="the stalled client's removal")
        # Unsubscribed; its ASGI task must end too (keepalive pings are 2 s here, so give it 3 rounds).
        tasks = server.server.server_state.tasks
        wait_until(lambda: not tasks, 6, interval=0.1, what="the stalled client's websocket handler to return")


# =====================================================================================================
# 5. Uploads small in bytes but huge in pixels must not block the event loop
# =====================================================================================================


@functools.cache
def _many_pixel_png() -> bytes:
    """A 39 KB greyscale PNG of 6324 x 6324 = 39.99 M pixels: under the default 40 M pixel cap, small
    in bytes, yet ~120 MB once decoded (a regression test: the service once chose by bytes)."""
    return cv2.imencode(".png", np.zeros((6324, 6324), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


@pytest.mark.slow
def test_a_small_upload_with_many_pixels_does_not_block_the_event_loop(tiny_classifier: Any) -> None:
    png = _many_pixel_png()
    assert len(png) < 256 * 1024
    app = create_app(_settings(), classifier=tiny_classifier)
    with UvicornThread(app) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert server.loop is not None
        with LoopLagProbe(server.loop) as probe:
            time.sleep(0.3)
            baseline = probe.max_lag
            r = http.post("/classify", params={"deadline_ms": 1000}, content=png, headers={"content-type": "image/png"})
            time.sleep(0.3)
        assert r.status_code == 200, r.text
    # One tick period: a longer stall costs websocket subscribers messages (latest-wins mailboxes).
    assert probe.max_lag < 1 / TICK_HZ, (
        f"the event loop was blocked {probe.max_lag * 1000:.0f} ms (baseline {baseline * 1000:.0f} ms) "
        f"by a {len(png)}-byte upload"
    )
