"""Latest-wins fan-out: a stalled subscriber loses messages, never delays the others."""

from __future__ import annotations

import asyncio

from service.publisher import Publisher


def test_stalled_subscriber_does_not_delay_a_live_one() -> None:
    async def scenario() -> None:
        pub = Publisher(send_timeout=30)
        pub.attach(asyncio.get_running_loop())
        live: list[str] = []
        stall = asyncio.Event()

        async def live_send(text: str) -> None:
            live.append(text)

        async def stalled_send(text: str) -> None:
            await stall.wait()  # a client whose TCP window never opens

        live_sub = pub.subscribe("cam", live_send)
        stalled_sub = pub.subscribe("cam", stalled_send)
        tasks = [asyncio.create_task(live_sub.run()), asyncio.create_task(stalled_sub.run())]
        for i in range(50):
            pub.deliver({"cam": f"m{i}"})
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert live == [f"m{i}" for i in range(50)]  # every tick, in order, on time
        assert stalled_sub.sent == 0
        assert stalled_sub.dropped == 48  # one in flight, one waiting, the rest overwritten
        assert stalled_sub._slot == "m49"  # memory bounded: only the newest is kept
        for t in tasks:
            t.cancel()

    asyncio.run(scenario())


def test_new_subscriber_gets_the_current_state_at_once() -> None:
    async def scenario() -> None:
        pub = Publisher()
        pub.deliver({"cam": "latest"})
        got: list[str] = []

        async def send(text: str) -> None:
            got.append(text)

        sub = pub.subscribe("cam", send)
        task = asyncio.create_task(sub.run())
        await asyncio.sleep(0)
        assert got == ["latest"]
        pub.unsubscribe(sub)
        assert pub.subscriber_counts() == {"cam": 0}
        task.cancel()

    asyncio.run(scenario())


def test_a_send_that_stalls_past_the_timeout_ends_the_subscriber() -> None:
    async def scenario() -> None:
        pub = Publisher(send_timeout=0.01)

        async def never(text: str) -> None:
            await asyncio.sleep(10)

        sub = pub.subscribe("cam", never)
        sub.offer("x")
        try:
            await sub.run()
        except TimeoutError:
            return
        raise AssertionError("expected a timeout")

    asyncio.run(scenario())
