"""Cameras under budgeted-batch load: does ``POST /classify/batch`` stay out of the cameras' way?

Runs the app (default model, 4 synthetic cameras at 10 Hz) under uvicorn and alternates phases without
and with a client process sending 64-image ``/classify/batch`` requests (budget 30 MFLOPs per image)
back to back. For each phase: publish lateness and exit depth of every tick (``bench.ticks``), and the
batches answered, their round trip and the compute they spent per image.

    python -m bench.batch_load [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.classify import validation_images
from bench.clients import Client
from bench.common import (
    ServerThread,
    add_arguments,
    percentile,
    provenance,
    provenance_markdown,
    publish,
    pyplot,
    quick_label,
    save_figure,
    spread,
    use_service_threads,
)
from bench.ticks import TickRecorder

NAME = "batch_load"
CAMERAS, TICK_HZ, BATCH_SIZE, BUDGET_MFLOPS = 4, 10.0, 64, 30.0


def phase(recorder: TickRecorder, url: str, images_file: str | None, duration: float) -> dict[str, Any]:
    """One phase of ``duration`` seconds, with a batch client when ``images_file`` is given."""
    client = None
    if images_file is not None:
        client = Client(
            "batch", url=url, images_file=images_file, budget_mflops=BUDGET_MFLOPS, size=BATCH_SIZE, duration=duration
        )
        client.wait_ready()
        time.sleep(1.0)  # the first batch is in flight before ticks are recorded
    recorder.lateness_ms.clear()
    recorder.wake_ms.clear()
    recorder.exits.clear()
    recorder.start()
    time.sleep(duration - (1.0 if client else 0.0))
    recorder.stop()
    exits = np.asarray(recorder.exits, dtype=float)
    result: dict[str, Any] = {
        "batch_load": client is not None,
        "ticks_lateness_ms": spread(recorder.lateness_ms),
        "exit_mean": round(float(exits.mean()), 3),
        "exit_p10": percentile(exits, 10),
    }
    if client is not None:
        records = client.result()["records"]
        ok = [r for r in records if r[0] == 200]
        result.update(
            batches=len(records),
            answered=len(ok),
            status_503=sum(1 for r in records if r[0] == 503),
            images_per_s=round(len(ok) * BATCH_SIZE / duration, 1),
            batch_round_trip_ms=spread(r[1] for r in ok),
            avg_mflops_per_image=round(float(np.mean([r[2] for r in ok])), 2) if ok else None,
        )
    return result


def markdown(data: dict[str, Any], quick: bool) -> str:
    rows = [
        "| phase | tick lateness p50 / p99 / max (ms) | camera exit mean / p10 | batches answered (503) "
        "| images/s | batch round trip p50 / p99 (ms) | MFLOPs per image |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(data["phases"], 1):
        lat = r["ticks_lateness_ms"]
        load = (
            f"| {r['answered']} ({r['status_503']}) | {r['images_per_s']} | {r['batch_round_trip_ms']['p50']} / "
            f"{r['batch_round_trip_ms']['p99']} | {r['avg_mflops_per_image']} |"
            if r["batch_load"]
            else "| – | – | – | – |"
        )
        rows.append(
            f"| {i}: {'batches' if r['batch_load'] else 'cameras only'} | {lat['p50']} / {lat['p99']} / {lat['max']} "
            f"| {r['exit_mean']} / {r['exit_p10']} {load}"
        )
    return "\n".join(
        [
            "## Budgeted batch under camera load: cameras first",
            "",
            provenance_markdown(data, quick),
            "",
            f"Default model, {CAMERAS} synthetic cameras at {TICK_HZ:g} Hz, {data['phase_s']:g} s per phase, phases "
            f"alternating without and with a client process sending {BATCH_SIZE}-image `/classify/batch` requests "
            f"(budget {BUDGET_MFLOPS:g} MFLOPs per image, validation images) back to back. Batch images are the "
            "engine's least urgent work, exit 1 included: the cameras' exit depth should not move.",
            "",
            *rows,
            "",
            f"![camera depth and lateness under batch load](bench/{NAME}.png)",
        ]
    )


def plot(data: dict[str, Any], path: Any) -> None:
    plt = pyplot()
    phases = data["phases"]
    labels = [f"{i}\n{'batches' if p['batch_load'] else 'cameras'}" for i, p in enumerate(phases, 1)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    left.bar(labels, [p["exit_mean"] for p in phases], color=["C1" if p["batch_load"] else "C0" for p in phases])
    left.set(ylabel="camera exit (mean per tick)", ylim=(0, 7.5), title="camera depth")
    right.bar(labels, [p["ticks_lateness_ms"]["p99"] for p in phases], color="C2")
    right.set(ylabel="publish lateness p99 (ms)", title="tick lateness")
    if data["quick"]:
        fig.suptitle(quick_label(data), fontsize=8, color="red")
    save_figure(fig, path)


def main() -> None:
    from service.app import create_app
    from service.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    args = parser.parse_args()
    duration = 6.0 if args.quick else 30.0
    use_service_threads()
    data: dict[str, Any] = {**provenance(f"bench.{NAME}"), "quick": args.quick, "phase_s": duration, "phases": []}
    cameras = [{"id": f"cam{i}", "source": "synthetic"} for i in range(CAMERAS)]
    settings = load_settings(cameras=cameras, tick_hz=TICK_HZ)
    app = create_app(settings)
    with tempfile.TemporaryDirectory() as tmp, ServerThread(app) as server:
        images_file = str(Path(tmp) / "images.json")
        Path(images_file).write_text(json.dumps(validation_images(BATCH_SIZE * 4)))
        recorder = TickRecorder(app.state.runtime.scheduler)
        time.sleep(3.0)  # cameras live, first frames classified
        for with_batches in (False, True, False, True):
            print(f"phase {'with' if with_batches else 'without'} batches, {duration:g} s ...", flush=True)
            data["phases"].append(phase(recorder, server.url, images_file if with_batches else None, duration))
            print(f"  {data['phases'][-1]}", flush=True)
        recorder.detach()
    publish(args, NAME, data, markdown, plot)


if __name__ == "__main__":
    main()
