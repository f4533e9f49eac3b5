"""What anytime inference costs: the exit-by-exit stepper against one full forward pass, and the
service against a bare model loop.

(a) The stepper keeps per-scale feature maps between exits and checks for cancellation between
layers; the claim to test is that advancing it through all exits costs at most 5 % more than
``model(x)``. The variants run interleaved, repetition by repetition, so machine drift hits all alike.

(b) The bare loop is preprocessing plus the stepper through every exit on synthetic 640x360 frames,
back to back. The service runs 4 synthetic cameras at 30 Hz ticks; what it achieves is read from
every tick (``bench.ticks``): frames classified per second, their exit depth, and the compute they
got in full-pass equivalents.

    python -m bench.overheads [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import (
    add_arguments,
    figure_caption,
    provenance,
    provenance_markdown,
    publish,
    pyplot,
    save_figure,
    use_service_threads,
)
from bench.scheduler import measure

NAME = "overheads"
CLAIM_MAX_OVERHEAD_PERCENT = 5.0
SERVICE_CAMERAS, SERVICE_TICK_HZ = 4, 30.0
# Cameras faster than the ticks, so every tick finds a fresh frame from every camera: the tick rate,
# not the cameras, sets the service's pace (the extra frames are dropped, as designed).
SERVICE_CAMERA_FPS = 60.0


def _time_ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def stepper_vs_forward(model: Any, batch: int, reps: int, warmup: int) -> dict[str, Any]:
    """Median times of a full forward pass and of the stepper through all exits, with and without a check."""
    x = torch.randn(
        batch, 3, model.config.input_size, model.config.input_size, generator=torch.Generator().manual_seed(0)
    )

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    def stepper(check: Callable[[], bool] | None) -> Callable[[], None]:
        def run() -> None:
            s = model.stepper(x)
            while not s.finished:
                s.advance(check)

        return run

    variants = {"forward": forward, "stepper": stepper(None), "stepper_with_cancel_check": stepper(lambda: False)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + reps):
        for name, fn in variants.items():
            ms = _time_ms(fn)
            if i >= warmup:
                times[name].append(ms)
    med = {name: statistics.median(t) for name, t in times.items()}
    paired = [s / f for s, f in zip(times["stepper"], times["forward"])]
    return {
        "batch": batch,
        "reps": reps,
        "median_ms": {k: round(v, 4) for k, v in med.items()},
        "p90_ms": {k: round(float(np.percentile(t, 90)), 4) for k, t in times.items()},
        "overhead_percent": round(100 * (med["stepper"] / med["forward"] - 1), 2),
        "overhead_with_check_percent": round(100 * (med["stepper_with_cancel_check"] / med["forward"] - 1), 2),
        "overhead_paired_median_percent": round(100 * (statistics.median(paired) - 1), 2),
    }


def bare_loop(classifier: Any, frames: list[np.ndarray], batch: int, duration: float) -> dict[str, Any]:
    """Frames per second of preprocess + every exit, back to back, for ``duration`` seconds."""
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < duration:
        chunk = [frames[(done + j) % len(frames)] for j in range(batch)]
        s = classifier.model.stepper(classifier.preprocess(chunk))
        while not s.finished:
            s.advance()
        done += batch
    fps = done / (time.perf_counter() - t0)
    return {"batch": batch, "frames_per_s": round(fps, 1), "mflops_per_s": round(fps * classifier.exit_mflops[-1], 1)}


def service_throughput(duration: float, settle: float, full_mflops: float) -> dict[str, Any]:
    run = measure(SERVICE_CAMERAS, SERVICE_TICK_HZ, duration, settle, camera_fps=SERVICE_CAMERA_FPS)
    result, deepest = run["result"], run["deepest"]
    wall = result["wall_s"]
    exits = [e for e, _ in deepest.values()]
    mflops = sum(m for _, m in deepest.values())
    return {
        "cameras": SERVICE_CAMERAS,
        "tick_hz": SERVICE_TICK_HZ,
        "camera_fps": SERVICE_CAMERA_FPS,
        "wall_s": wall,
        "frames_classified": len(deepest),
        "frames_per_s": round(len(deepest) / wall, 1),
        "exit_mean_per_frame": round(float(np.mean(exits)), 3) if exits else None,
        "mflops_per_s": round(mflops / wall, 1),
        "full_pass_equivalent_frames_per_s": round(mflops / full_mflops / wall, 1),
        "scheduler": {k: result[k] for k in ("ticks", "missed_ticks", "lateness_ms", "exit_mean", "cpu_percent")},
        "engine_latency_model_at_end": result["engine_latency_model_at_end"],
    }


def markdown(data: dict[str, Any], quick: bool) -> str:
    a_rows = [
        "| batch | repetitions | forward (ms) | stepper (ms) | stepper + cancel check (ms) | overhead | "
        "overhead with check | paired median overhead |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["stepper_vs_forward"]:
        m = r["median_ms"]
        a_rows.append(
            f"| {r['batch']} | {r['reps']} | {m['forward']} | {m['stepper']} | {m['stepper_with_cancel_check']} "
            f"| {r['overhead_percent']} % | {r['overhead_with_check_percent']} % "
            f"| {r['overhead_paired_median_percent']} % |"
        )
    verdict = "PASS" if data["claim_pass"] else "FAIL"
    svc = data["service"]
    beliefs = svc["engine_latency_model_at_end"]
    b_rows = ["| pipeline | frames/s | mean exit | MFLOPs/s | full-pass-equivalent frames/s |", "|---|---|---|---|---|"]
    for r in data["bare_loop"]:
        b_rows.append(
            f"| bare loop, batch {r['batch']} | {r['frames_per_s']} | all | {r['mflops_per_s']} | {r['frames_per_s']} |"
        )
    b_rows.append(
        f"| service, {svc['cameras']} cameras at {svc['tick_hz']:g} Hz | {svc['frames_per_s']} "
        f"| {svc['exit_mean_per_frame']} | {svc['mflops_per_s']} | {svc['full_pass_equivalent_frames_per_s']} |"
    )
    return "\n".join(
        [
            "## Overheads: stepper against a full forward pass, service against a bare model loop",
            "",
            provenance_markdown(data, quick),
            "",
            "**(a)** Default model, random input, median of interleaved repetitions after warm-up; overhead = "
            "stepper median / forward median − 1 (the paired column is the median of per-repetition ratios).",
            "",
            *a_rows,
            "",
            f"Claim: the stepper costs at most {CLAIM_MAX_OVERHEAD_PERCENT:g} % more than `model(x)` — **{verdict}** "
            f"(worst overhead {data['worst_overhead_percent']} %).",
            "",
            f"**(b)** Bare loop: preprocessing plus every exit on synthetic 640x360 frames, back to back. Service: the "
            f"whole app under uvicorn with {svc['cameras']} synthetic cameras at {svc['camera_fps']:g} fps, ticks at "
            f"{svc['tick_hz']:g} Hz, one websocket subscriber per camera, {svc['wall_s']:g} s; a frame counts once "
            "with the deepest exit any tick published for it. Full-pass equivalents = MFLOPs spent / MFLOPs of the "
            f"last exit. Scheduler meanwhile: {svc['scheduler']['ticks']} ticks, {svc['scheduler']['missed_ticks']} "
            f"missed, lateness p99 {svc['scheduler']['lateness_ms']['p99']} ms. The engine's predicted block times "
            f"(batch {beliefs['batch']}) at the end: {', '.join(f'{v:g}' for v in beliefs['predicted_ms'])} ms; "
            f"the engine does not start a block predicted to end after the job's deadline (the next tick, "
            f"{1000 / svc['tick_hz']:.0f} ms after this one, less a 2 ms margin).",
            "",
            *b_rows,
            "",
            f"![overheads](bench/{NAME}.png)",
        ]
    )


def plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    rows = data["stepper_vs_forward"]
    for i, name in enumerate(("forward", "stepper", "stepper_with_cancel_check")):
        left.bar(
            [j + 0.27 * (i - 1) for j in range(len(rows))],
            [r["median_ms"][name] / r["median_ms"]["forward"] for r in rows],
            0.27,
            label=name.replace("_", " "),
        )
    left.axhline(1 + CLAIM_MAX_OVERHEAD_PERCENT / 100, color="red", lw=0.8, ls="--", label="claim (+5 %)")
    left.set_xticks(range(len(rows)), [f"batch {r['batch']}" for r in rows])
    left.set(ylabel="median time / forward median", title="(a) stepper vs forward")
    left.set_ylim(0.8, None)
    labels = [f"bare, batch {r['batch']}" for r in data["bare_loop"]] + ["service"]
    values = [r["frames_per_s"] for r in data["bare_loop"]] + [data["service"]["full_pass_equivalent_frames_per_s"]]
    right.bar(labels, values, color=["C0"] * len(data["bare_loop"]) + ["C1"])
    right.set(ylabel="full-pass-equivalent frames/s", title="(b) bare loop vs service")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="y")
    left.legend(fontsize=8)
    save_figure(fig, path, figure_caption(data))


def main() -> None:
    from model.weights import load_model
    from service.classifier import AnytimeClassifier
    from service.sources import SyntheticSource

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    args = parser.parse_args()
    reps = {1: (30, 5), 64: (5, 2)} if args.quick else {1: (300, 30), 64: (40, 5)}
    duration, settle = (3.0, 1.0) if args.quick else (10.0, 3.0)
    # Everything here runs with the thread count the service uses, so (a) and (b) compare like with like
    # (torch's thread count is per process: the service thread below would set it anyway).
    use_service_threads()
    data: dict[str, Any] = {**provenance(f"bench.{NAME}"), "quick": args.quick}
    model, card = load_model("default")
    data["stepper_vs_forward"] = []
    for batch, (n, warm) in reps.items():
        print(f"stepper vs forward, batch {batch}, {n} repetitions ...", flush=True)
        data["stepper_vs_forward"].append(stepper_vs_forward(model, batch, n, warm))
        print(f"  {data['stepper_vs_forward'][-1]}", flush=True)
    data["worst_overhead_percent"] = max(r["overhead_percent"] for r in data["stepper_vs_forward"])
    data["claim_max_overhead_percent"] = CLAIM_MAX_OVERHEAD_PERCENT
    data["claim_pass"] = data["worst_overhead_percent"] <= CLAIM_MAX_OVERHEAD_PERCENT

    classifier = AnytimeClassifier.load("default", "cpu")  # what the service runs: BatchNorm folded
    source = SyntheticSource(640, 360, fps=1000.0, sleep=lambda s: None)
    source.open()
    frames = [source.read() for _ in range(64)]
    data["bare_loop"] = []
    for batch in (1, SERVICE_CAMERAS):
        print(f"bare loop, batch {batch}, {duration:g} s ...", flush=True)
        bare_loop(classifier, frames, batch, min(1.0, duration / 3))  # warm-up
        data["bare_loop"].append(bare_loop(classifier, frames, batch, duration))
        print(f"  {data['bare_loop'][-1]}", flush=True)
    print(f"service, {SERVICE_CAMERAS} cameras at {SERVICE_TICK_HZ:g} Hz, {duration:g} s ...", flush=True)
    data["service"] = service_throughput(duration, settle, card.exit_mflops[-1])
    print(f"  {data['service']}", flush=True)
    publish(args, NAME, data, markdown, plot)


if __name__ == "__main__":
    main()
