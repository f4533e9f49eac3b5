"""Reliability of websocket publishing: 100 subscribers of which 10 never read (the live ones still get
every tick), and clients that vanish or stop reading are removed while the service keeps serving.

Everything runs on loopback with the tiny untrained MSDNet, and every wait is bounded so that a
regression fails instead of hanging CI. A real uvicorn server runs in a thread
(tests/reliability_helpers.py), because TestClient has no sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import httpx
import pytest

from service.app import create_app

from .reliability_helpers import (
    TICK_HZ,
    WS_PATH,
    UvicornThread,
    metric_value,
    random_jpeg,
    reliability_settings,
    served_metric,
    small_write_buffer_ws_protocol,
    tick_gaps,
    wait_until,
)
from .ws_clients import WsRecorder, abort_socket, raw_websocket, sockets_closed

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
    app = create_app(reliability_settings(), classifier=tiny_classifier)
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
    missed_before = served_metric(http, "anytime_missed_ticks_total")
    with WsRecorder(server.ws_url + WS_PATH) as recorder:
        wait_until(lambda: len(recorder.messages) >= 8, 10, what="8 messages on a fresh subscription")
    missed = served_metric(http, "anytime_missed_ticks_total") - missed_before
    assert tick_gaps([m["tick"] for _, m in recorder.messages]) <= missed
    r = http.post("/classify", content=random_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text


def test_vanished_websocket_clients_are_removed(tiny_classifier: Any) -> None:
    """Clients that disappear without a close frame: RST (killed process), FIN after draining, half-close."""
    app = create_app(reliability_settings(), classifier=tiny_classifier)
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
    app = create_app(reliability_settings(), classifier=tiny_classifier)
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
    app = create_app(reliability_settings(), classifier=tiny_classifier)
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
