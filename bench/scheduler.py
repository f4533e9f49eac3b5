"""Tick scheduler under load: publish lateness, missed ticks and exit depth for 1 to 16 cameras.

Runs the real app (default model, N synthetic 640x360 cameras at 10 Hz) under a real uvicorn server,
with one real websocket subscriber per camera in another process. The scheduler's publish callback
is wrapped (see ``bench.ticks``) to get every tick's exact lateness and exit depth; ``/metrics`` and
``/cameras`` are scraped to cross-check the service's own counters.

    python -m bench.scheduler [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
import numpy as np

from bench.clients import Client
from bench.common import (
    ServerThread,
    add_arguments,
    cpu_seconds,
    figure_caption,
    percentile,
    provenance,
    provenance_markdown,
    publish,
    pyplot,
    save_figure,
    spread,
    use_service_threads,
)
from bench.ticks import TickRecorder

NAME = "scheduler"
# Cumulative since start-up; a counter never incremented is absent from /metrics, hence the zeros.
SERVICE_COUNTERS = ("anytime_ticks_total", "anytime_missed_ticks_total", "anytime_ws_dropped_messages_total")
FLOOR = {"cameras": 4, "max_p99_lateness_ms": 5.0, "max_missed_ticks": 0, "duration_s": 60}


def scrape_metrics(url: str) -> dict[str, float]:
    """Prometheus text -> {metric name: value summed over labels} (histograms give _count and _sum)."""
    totals: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("{", 1)[0].split(" ", 1)[0], line.rsplit(" ", 1)[1]
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def dropped_frames(url: str) -> int:
    return sum(camera["dropped_frames"] for camera in httpx.get(url + "/cameras", timeout=10).json())


def missing_ticks(received: list[int], published: set[int]) -> int:
    """Ticks the service published while this subscriber was connected that it never got."""
    if not received:
        return len(published)
    window = {t for t in published if min(received) <= t <= max(received)}
    return len(window - set(received))


def measure(
    cameras: int,
    tick_hz: float,
    duration: float,
    settle: float,
    camera_fps: float | None = None,
    subscribe: bool = True,
) -> dict[str, Any]:
    """One run of the whole service; returns the figures and the raw per-frame exits (for bench.overheads)."""
    from service.app import create_app
    from service.config import load_settings

    ids = [f"cam{i}" for i in range(cameras)]
    settings = load_settings(
        cameras=[{"id": c, "source": "synthetic", "fps": camera_fps} for c in ids], tick_hz=tick_hz
    )
    app = create_app(settings)
    with ServerThread(app) as server:
        runtime = app.state.runtime
        exits_total = runtime.classifier.exits_total
        recorder = TickRecorder(runtime.scheduler)
        time.sleep(settle)  # cameras live, first frames classified
        client = Client("ws", url=server.url, cameras=ids, duration=duration) if subscribe else None
        if client is not None:
            client.wait_ready()
        missed0, dropped0, cpu0, t0 = (
            runtime.scheduler.missed_ticks,
            dropped_frames(server.url),
            cpu_seconds(),
            time.time(),
        )
        recorder.start()
        time.sleep(duration)
        recorder.stop()
        wall, cpu = time.time() - t0, cpu_seconds() - cpu0
        missed, dropped = runtime.scheduler.missed_ticks - missed0, dropped_frames(server.url) - dropped0
        metrics = scrape_metrics(server.url)
        latency = runtime.engine.latency  # what the engine believed at the end: shows a block it stopped running
        known = latency.known()
        beliefs = {
            "batch": cameras,
            "predicted_ms": [round(latency.predict(b, cameras) * 1000, 2) for b in range(exits_total)],
            "samples": [known.get((b, cameras), 0) for b in range(exits_total)],
        }
        ws = client.result() if client is not None else None
        recorder.detach()
    published = set(recorder.ticks)
    exits = np.asarray(recorder.exits, dtype=float)
    result: dict[str, Any] = {
        "cameras": cameras,
        "tick_hz": tick_hz,
        "exits_total": exits_total,
        "wall_s": round(wall, 3),
        "ticks": len(recorder.ticks),
        "missed_ticks": missed,
        "lateness_ms": spread(recorder.lateness_ms),
        "wake_ms": spread(recorder.wake_ms),
        "exit_mean": round(float(exits.mean()), 3) if exits.size else None,
        "exit_p10": percentile(exits, 10),
        "exit_median": percentile(exits, 50),
        "exit_histogram": np.bincount(exits.astype(int)).tolist() if exits.size else [],
        "dropped_frames": dropped,
        "dropped_frames_per_camera_per_s": round(dropped / cameras / wall, 2),
        "cpu_percent": round(100 * cpu / wall, 1),
        "engine_latency_model_at_end": beliefs,
        "service_counters_since_start": {k: metrics.get(k, 0.0) for k in SERVICE_COUNTERS},
    }
    if ws is not None:
        records = ws["records"]
        counts = [len(records[c]) for c in ids]
        result.update(
            ws_messages_per_camera_min=min(counts),
            ws_messages_per_camera_max=max(counts),
            ws_missing_ticks_max=max(missing_ticks([r[0] for r in records[c]], published) for c in ids),
            ws_delivery_ms=spread(r[2] for c in ids for r in records[c]),
            client_cpu_percent=round(100 * ws["cpu_s"] / duration, 1),
        )
    return {"result": result, "deepest": recorder.deepest}


def markdown(data: dict[str, Any], quick: bool) -> str:
    rows = [
        "| cameras | ticks | missed | lateness p50 / p99 / max (ms) | of which waking p50 / p99 (ms) "
        "| exit mean / p10 / median | ws msgs per camera (min) / ticks missing (max) | ws delivery p99 (ms) "
        "| dropped frames /s per camera | service CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["results"]:
        lat, wake = r["lateness_ms"], r.get("wake_ms") or {"p50": "–", "p99": "–"}
        rows.append(
            f"| {r['cameras']} | {r['ticks']} | {r['missed_ticks']} | {lat['p50']} / {lat['p99']} / {lat['max']} "
            f"| {wake['p50']} / {wake['p99']} "
            f"| {r['exit_mean']} / {r['exit_p10']} / {r['exit_median']} "
            f"| {r['ws_messages_per_camera_min']} / {r['ws_missing_ticks_max']} | {r['ws_delivery_ms']['p99']} "
            f"| {r['dropped_frames_per_camera_per_s']} | {r['cpu_percent']} |"
        )
    floor = data["floor"]
    caveat = (
        f" — **{data['duration_s']:g} s per point, not the 60 s the floor asks for: indicative only**" if quick else ""
    )
    verdict = "no 4-camera point was run" if floor["pass"] is None else ("PASS" if floor["pass"] else "FAIL")
    return "\n".join(
        [
            "## Tick scheduler: lateness and exit depth against the number of cameras",
            "",
            provenance_markdown(data, quick),
            "",
            f"Default model, synthetic 640x360 cameras at 25 fps, {data['tick_hz']:g} Hz ticks, "
            f"{data['duration_s']:g} s per point, one websocket subscriber per camera in a separate process. "
            "Lateness = publish time − scheduled tick time, from every tick (the scheduler's publish callback is "
            "wrapped); of it, waking is the time from the scheduled instant to the start of the tick's work (the "
            "scheduler thread waking up: timer, GIL, CPU), the rest is the tick's own work. Exit 0 means no "
            "frame classified yet. Dropped frames are camera frames replaced before a tick took them (25 fps "
            "cameras, 10 Hz ticks: about 15/s per camera is by design). Service CPU % is the "
            "benchmark process (service plus an idle main thread) in % of one core; the subscribers are not in it.",
            "",
            *rows,
            "",
            f"**Floor** (issue): {FLOOR['cameras']} cameras, p99 lateness ≤ {FLOOR['max_p99_lateness_ms']:g} ms and "
            f"0 missed ticks over 60 s: **{verdict}** (p99 {floor['p99_lateness_ms']} ms, "
            f"{floor['missed_ticks']} missed){caveat}.",
            "",
            f"Largest number of cameras (of those run) whose median exit is ≥ 4: "
            f"**{data['max_cameras_median_exit_ge_4']}**.",
            "",
            f"![lateness and exit depth](bench/{NAME}.png)",
        ]
    )


def plot(data: dict[str, Any], path: Any) -> None:
    plt = pyplot()
    n = [r["cameras"] for r in data["results"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for key, style in (("p50", "o-"), ("p99", "s-"), ("max", "^:")):
        left.plot(n, [r["lateness_ms"][key] for r in data["results"]], style, label=key)
    left.axhline(FLOOR["max_p99_lateness_ms"], color="red", lw=0.8, ls="--", label="floor (p99, 4 cameras)")
    left.set(xlabel="cameras", ylabel="publish lateness (ms)", xscale="log", title="publish lateness")
    right.plot(n, [r["exit_mean"] for r in data["results"]], "o-", label="mean")
    right.plot(n, [r["exit_p10"] for r in data["results"]], "s-", label="10th percentile")
    right.set(xlabel="cameras", ylabel="exit reached", xscale="log", title="exit depth per tick")
    right.set_ylim(0, data["results"][0]["exits_total"] + 0.5)
    for ax in (left, right):
        ax.set_xticks(n, [str(x) for x in n])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path, figure_caption(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    args = parser.parse_args()
    counts, duration, settle = ((1, 4), 5.0, 1.0) if args.quick else ((1, 2, 4, 8, 16), 60.0, 3.0)
    use_service_threads()
    data: dict[str, Any] = {**provenance(f"bench.{NAME}"), "quick": args.quick, "tick_hz": 10.0, "duration_s": duration}
    results = []
    for n in counts:
        print(f"{n} camera(s), {duration:g} s ...", flush=True)
        results.append(measure(n, 10.0, duration, settle)["result"])
        print(f"  {results[-1]}", flush=True)
    data["results"] = results
    deep = [r["cameras"] for r in results if r["exit_median"] is not None and r["exit_median"] >= 4]
    data["max_cameras_median_exit_ge_4"] = max(deep) if deep else None
    four = next((r for r in results if r["cameras"] == FLOOR["cameras"]), None)
    data["floor"] = {
        **FLOOR,
        "p99_lateness_ms": four["lateness_ms"]["p99"] if four else None,
        "missed_ticks": four["missed_ticks"] if four else None,
        "pass": None
        if four is None
        else bool(four["lateness_ms"]["p99"] <= FLOOR["max_p99_lateness_ms"] and four["missed_ticks"] == 0),
        "measured_duration_s": duration,
    }
    publish(args, NAME, data, markdown, plot)


if __name__ == "__main__":
    main()
