"""Ad hoc probes of the scheduler's publish-lateness tail: one short service run per call, one knob changed.

Not a benchmark with a results section: each call prints one line, and the notes in docs/benchmarks.md
("Where the lateness tail comes from") quote them. The knobs reach into the service's internals
(monkeypatching, per-thread niceness), which is why they live here and not in the service.

    python -m bench.lateness_probes --variant base --cameras 4          # as bench.scheduler, 30 s
    python -m bench.lateness_probes --variant gc-freeze --cameras 4
    python -m bench.lateness_probes --variant spin6 --cameras 1
    python -m bench.lateness_probes --sequence 4,1                     # two runs in one process
    python -m bench.lateness_probes --bare-thread                      # a lone timing thread, no service
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from typing import Any

import numpy as np

VARIANTS = ("base", "gc-freeze", "nice10", "no-subscribers", "camera-fps5", "spin6")


def _apply(variant: str) -> dict[str, Any]:
    """Patch the service for ``variant``; returns extra keyword arguments for ``bench.scheduler.measure``."""
    import bench.ticks
    import service.cameras
    import service.engine
    import service.scheduler

    if variant == "gc-freeze":  # move every object alive at the start of recording out of the collector's reach
        start = bench.ticks.TickRecorder.start

        def start_frozen(self: Any) -> None:
            gc.collect()
            gc.freeze()
            start(self)

        bench.ticks.TickRecorder.start = start_frozen
    elif variant == "nice10":  # engine and camera threads yield the CPU to the tick thread
        for cls in (service.engine.Engine, service.cameras.CameraReader):
            run = cls._run

            def niced(self: Any, run: Any = run) -> None:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
                run(self)

            cls._run = niced
    elif variant == "spin6":  # busy-wait the last 6 ms before a tick instead of 1.5 ms

        def precise_sleep(self: Any, remaining: float) -> None:
            if remaining > 0.0065:
                self._stop.wait(remaining - 0.006)
            else:
                time.sleep(0)

        service.scheduler.TickScheduler._precise_sleep = precise_sleep
    return {"no-subscribers": {"subscribe": False}, "camera-fps5": {"camera_fps": 5.0}}.get(variant, {})


def bare_thread(seconds: float, spin_s: float = 0.0015) -> dict[str, float]:
    """A lone thread timing 100 ms ticks the way the scheduler does: how late does this machine wake it?"""
    late: list[float] = []
    start = time.monotonic()
    for k in range(1, int(seconds * 10)):
        due = start + k * 0.1
        remaining = due - time.monotonic()
        if remaining > spin_s + 0.0005:
            time.sleep(remaining - spin_s)
        while time.monotonic() < due:
            pass
        late.append((time.monotonic() - due) * 1000)
    values = np.asarray(late)
    return {key: round(float(np.percentile(values, q)), 3) for key, q in (("p50", 50), ("p99", 99), ("max", 100))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="base")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--sequence", help="camera counts run one after another in this process, e.g. 4,1")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds recorded per run")
    parser.add_argument("--bare-thread", action="store_true", help="time a lone thread instead of the service")
    args = parser.parse_args()
    if args.bare_thread:
        print("bare thread lateness (ms):", bare_thread(args.duration), flush=True)
        return
    from bench.common import use_service_threads
    from bench.scheduler import measure

    extra = _apply(args.variant)
    use_service_threads()
    pauses: list[tuple[int, float]] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pauses.append((info["generation"], (time.perf_counter() - started[0]) * 1000))

    gc.callbacks.append(on_gc)
    import bench.ticks

    start_recording = bench.ticks.TickRecorder.start

    def start_counting(self: Any) -> None:  # count collections only while ticks are recorded
        start_recording(self)
        pauses.clear()

    bench.ticks.TickRecorder.start = start_counting
    counts = [int(n) for n in args.sequence.split(",")] if args.sequence else [args.cameras]
    for cameras in counts:
        result = measure(cameras, 10.0, args.duration, 3.0, **extra)["result"]
        collections = {
            g: (sum(1 for p in pauses if p[0] == g), round(max((p[1] for p in pauses if p[0] == g), default=0.0), 2))
            for g in (0, 1, 2)
        }
        print(
            f"{args.variant} cameras={cameras} lateness_ms={result['lateness_ms']} wake_ms={result['wake_ms']} "
            f"cpu%={result['cpu_percent']} gc while recording, by generation (count, longest ms)={collections}",
            flush=True,
        )


if __name__ == "__main__":
    main()
