"""Load clients that run in their own process: websocket subscribers, /classify workers, batch senders.

Clients in the service's own process would share its GIL and its CPU accounting: JSON parsing in a
subscriber would show up as publish lateness, and 32 HTTP workers as engine time. So the benchmark
process hosts the service and launches these clients with ``python -m bench.clients KIND JSON``; a
client prints ``READY`` once connected, then one JSON line with everything it recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["Client"]

# After a 503 a closed-loop worker pauses this long instead of spinning on refusals (which would
# only measure how fast the service can say no, and steal the CPU the model needs).
BACKOFF_AFTER_503_S = 0.05


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- child side ------------------------------------------------------------------------------------


async def _websockets(url: str, cameras: list[str], duration: float) -> dict[str, Any]:
    """Subscribe to every camera, record (tick, exit, delivery delay) of every message for ``duration``."""
    from websockets.asyncio.client import connect

    ws_url = url.replace("http://", "ws://", 1)
    conns = [await connect(f"{ws_url}/ws/cameras/{camera}", max_size=None) for camera in cameras]
    records: dict[str, list[tuple[int, int, float]]] = {camera: [] for camera in cameras}
    print("READY", flush=True)
    cpu0, end = _cpu_s(), time.monotonic() + duration

    async def read(camera: str, ws: Any) -> None:
        while (remaining := end - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    text = await ws.recv()
            except TimeoutError:
                return
            received = time.time()
            message = json.loads(text)
            records[camera].append((message["tick"], message["exit"], (received - message["published_at"]) * 1000))

    await asyncio.gather(*(read(camera, ws) for camera, ws in zip(cameras, conns)))
    cpu = _cpu_s() - cpu0
    for ws in conns:
        await ws.close()
    return {"records": records, "cpu_s": cpu}


async def _classify(
    url: str, images_file: str, deadline_ms: float, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    """``concurrency`` workers POST images back to back; requests started during warm-up are not kept.

    ``images_file`` is a JSON list of ``[path, label]`` (too long for a command line).
    """
    import httpx

    images = json.loads(Path(images_file).read_text())
    blobs = [(Path(path).read_bytes(), int(label)) for path, label in images]
    order = itertools.count()
    records: list[list[Any]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        print("READY", flush=True)
        start = time.monotonic()
        keep_from, end = start + warmup, start + warmup + duration
        cpu0 = _cpu_s()

        async def worker() -> None:
            while (t0 := time.monotonic()) < end:
                data, label = blobs[next(order) % len(blobs)]
                try:
                    r = await client.post(
                        "/classify",
                        params={"deadline_ms": deadline_ms},
                        content=data,
                        headers={"content-type": "image/jpeg"},
                    )
                    status, body = r.status_code, (r.json() if r.status_code == 200 else {})
                except httpx.HTTPError:
                    status, body = -1, {}
                client_ms = (time.monotonic() - t0) * 1000
                if t0 >= keep_from:
                    correct = body["class_index"] == label if body else None
                    records.append([status, client_ms, body.get("elapsed_ms"), body.get("exit"), correct])
                if status == 503:
                    await asyncio.sleep(BACKOFF_AFTER_503_S)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = _cpu_s() - cpu0
    return {"records": records, "cpu_s": cpu, "wall_s": duration}


async def _batches(url: str, images_file: str, budget_mflops: float, size: int, duration: float) -> dict[str, Any]:
    """One ``POST /classify/batch`` of ``size`` images after another for ``duration`` seconds."""
    import httpx

    paths = [path for path, _ in json.loads(Path(images_file).read_text())]
    blobs = [(Path(path).name, Path(path).read_bytes()) for path in paths]
    records: list[list[Any]] = []
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        print("READY", flush=True)
        cpu0, end, sent = _cpu_s(), time.monotonic() + duration, 0
        while time.monotonic() < end:
            chunk = [blobs[(sent + i) % len(blobs)] for i in range(size)]
            sent += size
            files = [("file", (name, data, "image/jpeg")) for name, data in chunk]
            t0 = time.monotonic()
            r = await client.post("/classify/batch", params={"budget_mflops": budget_mflops}, files=files)
            body = r.json() if r.status_code == 200 else {}
            records.append([r.status_code, (time.monotonic() - t0) * 1000, body.get("avg_mflops")])
            if r.status_code == 503:
                await asyncio.sleep(BACKOFF_AFTER_503_S)
        cpu = _cpu_s() - cpu0
    return {"records": records, "cpu_s": cpu, "wall_s": duration}


def main() -> None:
    kind, params = sys.argv[1], json.loads(sys.argv[2])
    runner = {"ws": _websockets, "classify": _classify, "batch": _batches}[kind]
    print(json.dumps(asyncio.run(runner(**params))), flush=True)


# --- parent side -----------------------------------------------------------------------------------


class Client:
    """A client process: ``start`` it, ``wait_ready`` until connected, ``result`` when it is done."""

    def __init__(self, kind: str, **params: Any) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.clients", kind, json.dumps(params)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )

    def wait_ready(self) -> None:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if line != "READY":
            self._proc.kill()
            raise RuntimeError(f"client process did not connect (said {line!r})")

    def result(self, timeout: float = 120.0) -> dict[str, Any]:
        out, _ = self._proc.communicate(timeout=timeout)
        if self._proc.returncode != 0:
            raise RuntimeError(f"client process failed with exit code {self._proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
