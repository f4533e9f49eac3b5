"""Where batch-1 inference time goes on this CPU, and what other execution paths would buy.

The service runs the BatchNorm-folded MSDNet eagerly, exit by exit. This benchmark times the stepper
through every exit on that model three ways, interleaved repetition by repetition: eager (as served),
eager in channels-last memory format, and TorchScript (every stage and exit head traced and frozen,
driven by the same stepper). It also profiles the eager batch-1 pass by operator. Outputs are checked
against eager before timing. ``torch.compile`` is not among the paths: compiling one block took 23 s
on this machine and ran it slower than eager (measured by hand, 2026-11-26), and the service would
recompile for every batch size.

    python -m bench.inference_paths [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import (
    add_arguments,
    provenance,
    provenance_markdown,
    publish,
    pyplot,
    quick_label,
    save_figure,
    use_service_threads,
)

NAME = "inference_paths"
PATHS = ("eager", "channels_last", "torchscript")
BATCHES = (1, 4, 16)
MAX_REL_DIFF = 2e-5


def channels_last(model: Any) -> Any:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def torchscript(model: Any, example: torch.Tensor) -> Any:
    """A copy whose stages and exit heads are traced and frozen; the stepper drives it unchanged."""
    traced = copy.deepcopy(model)
    features = [example]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.x: the table says so
        for b, block in enumerate(traced.blocks):
            for s, stage in enumerate(block):
                block[s] = torch.jit.freeze(torch.jit.trace(stage, (features,), check_trace=False))
                features = stage(features)
            traced.exits[b] = torch.jit.freeze(torch.jit.trace(traced.exits[b], (features,), check_trace=False))
    return traced


def all_exits(model: Any, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One pass through every exit with the stepper, as the service runs it; returns the last logits."""

    def run() -> torch.Tensor:
        *_, last = model.iter_exits(x)
        return last.logits

    return run


def time_paths(models: dict[str, Any], batch: int, reps: int, warmup: int) -> dict[str, Any]:
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    inputs = {
        name: x.contiguous(memory_format=torch.channels_last) if name == "channels_last" else x for name in models
    }
    runs = {name: all_exits(model, inputs[name]) for name, model in models.items()}
    reference = runs["eager"]()
    max_diff = {name: float((run() - reference).abs().max()) for name, run in runs.items()}
    allowed = MAX_REL_DIFF * max(1.0, float(reference.abs().max()))  # float32 reassociation, scaled to the logits
    wrong = {name: diff for name, diff in max_diff.items() if diff > allowed}
    if wrong:  # a path that computes something else is not a faster path
        raise SystemExit(f"batch {batch}: logits differ from eager by {wrong} (allowed {allowed:.1e})")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + reps):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1000)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "batch": batch,
        "reps": reps,
        "median_ms": {k: round(v, 3) for k, v in median.items()},
        "p90_ms": {k: round(float(np.percentile(t, 90)), 3) for k, t in times.items()},
        "vs_eager_paired_median": {
            k: round(statistics.median(a / b for a, b in zip(t, times["eager"])), 3) for k, t in times.items()
        },
        "max_abs_diff_vs_eager": max_diff,
    }


def operator_profile(model: Any, passes: int) -> list[dict[str, Any]]:
    """The eager batch-1 pass's operators by self CPU time (the top ten)."""
    from torch.profiler import ProfilerActivity, profile

    run = all_exits(model, torch.randn(1, 3, 32, 32))
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(passes):
            run()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "op": e.key,
            "self_cpu_percent": round(100 * e.self_cpu_time_total / total, 1),
            "calls_per_pass": e.count // passes,
            "self_us_per_call": round(e.self_cpu_time_total / e.count, 1),
        }
        for e in events[:10]
    ]


def markdown(data: dict[str, Any], quick: bool) -> str:
    rows = [
        "| batch | repetitions | eager, as served (ms) | channels-last (ms) | TorchScript (ms) "
        "| channels-last / eager (paired median) | TorchScript / eager (paired median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["timings"]:
        m, v = r["median_ms"], r["vs_eager_paired_median"]
        rows.append(
            f"| {r['batch']} | {r['reps']} | {m['eager']} | {m['channels_last']} | {m['torchscript']} "
            f"| {v['channels_last']} | {v['torchscript']} |"
        )
    ops = ["| operator | self CPU % | calls per pass | µs per call |", "|---|---|---|---|"]
    ops += [
        f"| `{o['op']}` | {o['self_cpu_percent']} | {o['calls_per_pass']} | {o['self_us_per_call']} |"
        for o in data["profile"]
    ]
    diff = max(d for r in data["timings"] for d in r["max_abs_diff_vs_eager"].values())
    return "\n".join(
        [
            "## Inference paths: where batch-1 time goes, and what other execution paths buy",
            "",
            provenance_markdown(data, quick),
            "",
            "Shipped model with BatchNorm folded (as the service runs it), the stepper through all 7 exits on random "
            "input, the three paths interleaved repetition by repetition; the ratio columns are medians of "
            f"per-repetition ratios (below 1: faster than eager). Largest logit difference from eager: {diff:.1e}. "
            "TorchScript (`torch.jit.trace` + `freeze`, per stage) is deprecated in torch 2.x and warns on use; "
            "the service does not use it.",
            "",
            *rows,
            "",
            "Eager batch-1 pass by operator (self CPU time, top ten):",
            "",
            *ops,
            "",
            f"![inference paths](bench/{NAME}.png)",
        ]
    )


def plot(data: dict[str, Any], path: Any) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    width = 0.25
    for i, name in enumerate(PATHS):
        ratios = [r["vs_eager_paired_median"][name] for r in data["timings"]]
        ax.bar([j + (i - 1) * width for j in range(len(ratios))], ratios, width, label=name)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(data["timings"])), [f"batch {r['batch']}" for r in data["timings"]])
    ax.set(ylabel="time / eager (paired median)", title="all 7 exits, BatchNorm folded")
    if data["quick"]:
        ax.set_title(quick_label(data), fontsize=8, color="red", loc="left")
    ax.legend()
    save_figure(fig, path)


def main() -> None:
    from service.classifier import AnytimeClassifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    args = parser.parse_args()
    use_service_threads()  # the service's torch thread count (one on this 2-core machine)
    data: dict[str, Any] = {**provenance(f"bench.{NAME}"), "quick": args.quick}
    eager = AnytimeClassifier.load("default", "cpu").model
    models = {
        "eager": eager,
        "channels_last": channels_last(eager),
        "torchscript": torchscript(eager, torch.randn(1, 3, 32, 32)),
    }
    reps = {1: (20, 5), 4: (10, 3), 16: (5, 2)} if args.quick else {1: (300, 30), 4: (120, 15), 16: (40, 5)}
    data["timings"] = []
    for batch in BATCHES:
        n, warm = reps[batch]
        print(f"batch {batch}, {n} repetitions ...", flush=True)
        with torch.inference_mode():
            data["timings"].append(time_paths(models, batch, n, warm))
        print(f"  {data['timings'][-1]}", flush=True)
    with torch.inference_mode():
        data["profile"] = operator_profile(eager, 5 if args.quick else 50)
    publish(args, NAME, data, markdown, plot)


if __name__ == "__main__":
    main()
