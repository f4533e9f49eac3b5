"""Time to each exit as the service computes it, on the CPU or a GPU.

The shipped model is loaded the way the engine loads it (``AnytimeClassifier``: BatchNorm folded,
``--device`` as in the service's settings) and the stepper advanced exit by exit, synchronising after
every exit because the engine reads every exit's logits. One full ``model(x)`` pass is timed beside it.
On a GPU a batch-1 pass is bound by launching MSDNet's many small kernels, not by arithmetic, so this
shows where the deadline scheduler's budget goes there and how little a larger batch costs.

    python -m bench.exit_times [--device auto|cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

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
from model.msdnet import MSDNet

NAME = "exit_times"
BATCHES = (1, 4, 16, 64)


def _synchroniser(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_exits(model: MSDNet, images: torch.Tensor, reps: int, warm: int) -> dict[str, Any]:
    """Median ms from the start of a batch to each exit, and to the end of one full pass."""
    sync = _synchroniser(images.device)
    to_exit: list[list[float]] = []
    full: list[float] = []
    for rep in range(warm + reps):
        sync()
        t0 = time.perf_counter()
        marks = []
        stepper = model.stepper(images)
        while not stepper.finished:
            stepper.advance()
            sync()
            marks.append((time.perf_counter() - t0) * 1000)
        t1 = time.perf_counter()  # the last exit was synchronised already
        with torch.inference_mode():
            model(images)
        sync()
        if rep >= warm:
            to_exit.append(marks)
            full.append((time.perf_counter() - t1) * 1000)
    exits = len(to_exit[0])
    return {
        "batch": int(images.shape[0]),
        "ms_to_exit": [round(statistics.median(r[k] for r in to_exit), 3) for k in range(exits)],
        "ms_full_pass": round(statistics.median(full), 3),
        "repetitions": reps,
    }


def markdown(data: dict[str, Any], quick: bool) -> str:
    exits = len(data["timings"][0]["ms_to_exit"])
    lines = [
        "## Time to each exit, as the service computes it",
        "",
        provenance_markdown(data, quick),
        "",
        f"Shipped model, BatchNorm folded, on **{data['device_name']}** (`--device {data['device_arg']}`); random "
        "input; the stepper advanced exit by exit with a synchronisation after each exit (the engine reads "
        "every exit's logits), and one full `model(x)` pass timed after it in the same repetition. Medians.",
        "",
        "| batch | " + " | ".join(f"exit {k}" for k in range(1, exits + 1)) + " | full pass | repetitions |",
        "|---" * (exits + 3) + "|",
    ]
    for row in data["timings"]:
        cells = " | ".join(f"{ms:.2f}" for ms in row["ms_to_exit"])
        lines.append(f"| {row['batch']} | {cells} | {row['ms_full_pass']:.2f} | {row['repetitions']} |")
    lines += ["", "(ms from the start of the batch.)", "", f"![time to each exit](bench/{NAME}.png)"]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Any) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in data["timings"]:
        ax.plot(range(1, len(row["ms_to_exit"]) + 1), row["ms_to_exit"], marker="o", label=f"batch {row['batch']}")
    ax.set(xlabel="exit", ylabel="ms from the start of the batch (log scale)", yscale="log")
    ax.set_title(f"time to each exit, {data['device_name']}")
    ax.legend()
    save_figure(fig, path, figure_caption(data))


def main() -> None:
    from service.classifier import AnytimeClassifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="as the service's setting")
    args = parser.parse_args()
    use_service_threads()  # the service's torch thread count, before provenance records it
    classifier = AnytimeClassifier.load("default", args.device)
    device = classifier.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    data: dict[str, Any] = {**provenance(f"bench.{NAME}"), "quick": args.quick}
    data |= {"device_arg": args.device, "device_name": name, "timings": []}
    reps, warm = (5, 1) if args.quick else (200, 30)
    for batch in BATCHES:
        images = torch.randn(batch, 3, 32, 32, device=device)
        data["timings"].append(time_exits(classifier.model, images, reps, warm))
        print(data["timings"][-1], flush=True)
    publish(args, NAME, data, markdown, plot)


if __name__ == "__main__":
    main()
