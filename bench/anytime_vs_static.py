"""Anytime against static networks: validation accuracy by a per-image deadline, batch 1, this CPU.

The project's claim: MSDNet answering with the deepest exit it has reached by the deadline is at least
as accurate as the best static network at every deadline. For each validation image, every model runs
on the same 32x32 image (normalised as that model was trained), one after the other (interleaved, so
load drifts hit all alike), with the torch thread count the service uses and every model's BatchNorms
folded into its convolutions, as the service serves MSDNet (``model/fuse.py``):

* MSDNet runs exit by exit through the stepper; the finish time of every exit is recorded. At deadline
  D its answer is the deepest exit finished by D; with no exit finished, the image counts as wrong.
* A static network's single forward pass counts only if it finished by D.

Static baselines are CIFAR ResNets trained by ``anytime train --preset resnet20`` with the default
model's recipe (``model/resnet.py``); pass their exported weights with ``--static``. The claim is tested
on ``--weights``; ``--also`` adds more anytime models (the shipped default, say) as extra rows.

``bench/weights/`` holds an equal-time trio (one recipe, the same 400 s each on one H200, side by side;
``docs/training/equal-time.command.sh``), so the published figures can be reproduced:

    python -m bench.anytime_vs_static --weights bench/weights/msdnet-equal-time.safetensors --also default \
        --static bench/weights/resnet20-equal-time.safetensors bench/weights/resnet56-equal-time.safetensors

``--contention N`` measures the same on a busy machine: N competing processes (``bench/contention.py``)
share the CPU for the whole measurement, so each pass gets a different slice of it, as on a machine
shared with other work. Its figures go to their own section, ``anytime_vs_static_contended``.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import (
    DOCS,
    SHARED,
    add_arguments,
    provenance,
    provenance_markdown,
    publish,
    pyplot,
    quick_label,
    save_figure,
    use_service_threads,
)
from bench.contention import competing_processes

NAME = "anytime_vs_static"
DATASET = SHARED / "datasets" / "cifar10" / "train"
DEADLINES_MS = (2, 5, 10, 20, 50, 100)
QUICK_IMAGES = 300
WARMUP_IMAGES = 20


def section(contention: int) -> str:
    """The results-page section (and default file names) of a run: contended runs keep their own."""
    return f"{NAME}_contended" if contention else NAME


def time_anytime(model: Any, x: torch.Tensor) -> tuple[list[float], list[int]]:
    """Seconds from the start to each exit's answer, and each exit's predicted class."""
    times, preds = [], []
    t0 = time.perf_counter()
    stepper = model.stepper(x)
    while not stepper.finished:
        out = stepper.advance()
        preds.append(int(out.logits.argmax(1)))
        times.append(time.perf_counter() - t0)
    return times, preds


def time_static(model: Any, x: torch.Tensor) -> tuple[float, int]:
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = model(x)[0]
    return time.perf_counter() - t0, int(logits.argmax(1))


def anytime_accuracy(
    runs: list[tuple[list[float], list[int]]], labels: list[int], deadlines_ms: tuple[int, ...]
) -> tuple[list[float], list[float]]:
    """Accuracy and mean exit reached at each deadline, answering with the deepest exit in time."""
    n = len(labels)
    accuracy, exit_reached = [], []
    for d in deadlines_ms:
        correct, depth = 0, []
        for (times, preds), label in zip(runs, labels):
            done = [k for k, t in enumerate(times) if t * 1000 <= d]
            depth.append(done[-1] + 1 if done else 0)
            correct += bool(done) and preds[done[-1]] == label
        accuracy.append(round(correct / n, 5))
        exit_reached.append(round(float(np.mean(depth)), 3))
    return accuracy, exit_reached


def accuracy_by_deadline(
    anytime: list[tuple[list[float], list[int]]],
    static: dict[str, list[tuple[float, int]]],
    labels: list[int],
    deadlines_ms: tuple[int, ...] = DEADLINES_MS,
) -> dict[str, Any]:
    """The benchmark's figures from per-image timings and predictions."""
    n = len(labels)
    msdnet, exit_reached = anytime_accuracy(anytime, labels, deadlines_ms)
    static_acc = {
        name: [round(sum(t * 1000 <= d and p == y for (t, p), y in zip(runs, labels)) / n, 5) for d in deadlines_ms]
        for name, runs in static.items()
    }
    return {"deadlines_ms": list(deadlines_ms), "msdnet": msdnet, "msdnet_mean_exit": exit_reached,
            "static": static_acc}  # fmt: skip


def verdicts(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Per deadline: is MSDNet at least as accurate as the best static network?"""
    rows = []
    for i, d in enumerate(figures["deadlines_ms"]):
        best_name, best = max(((n, a[i]) for n, a in figures["static"].items()), key=lambda t: t[1], default=("", 0))
        rows.append({"deadline_ms": d, "best_static": best_name, "best_static_accuracy": best,
                     "msdnet": figures["msdnet"][i], "holds": figures["msdnet"][i] >= best,
                     "vacuous": figures["msdnet"][i] == best == 0})  # fmt: skip
    return rows


def markdown(data: dict[str, Any], quick: bool) -> str:
    names = list(data["static"])
    others = list(data.get("also", {}))
    head = (
        f"| deadline (ms) | {data['models'][0]['name']} (mean exit) | "
        + "".join(f"{o} (mean exit) | " for o in others)
        + " | ".join(names)
        + " | claim |"
    )
    rows = [head, "|" + "---|" * (3 + len(others) + len(names))]
    for i, v in enumerate(data["verdicts"]):
        statics = " | ".join(f"{100 * data['static'][n][i]:.2f} %" for n in names)
        extra = "".join(
            f"{100 * data['also'][o]['accuracy'][i]:.2f} % ({data['also'][o]['mean_exit'][i]}) | " for o in others
        )
        rows.append(
            f"| {v['deadline_ms']} | {100 * v['msdnet']:.2f} % ({data['msdnet_mean_exit'][i]}) | {extra}{statics} "
            f"| {_verdict(v)} |"
        )
    models = "; ".join(_describe(m) for m in data["models"])
    held = data["claim_holds"]
    busy = data.get("contention", 0)
    title = "## Anytime against static networks under a per-image deadline" + (
        f", with {busy} competing processes" if busy else ""
    )
    load = (
        f" {busy} competing processes (one torch thread each, multiplying matrices) shared the CPU for the "
        "whole measurement."
        if busy
        else ""
    )
    return "\n".join(
        [
            title,
            "",
            provenance_markdown(data, quick),
            "",
            f"{data['images']} validation images, batch 1, {data['torch_threads']} torch thread(s), every model on "
            f"every image in turn.{load} MSDNet answers with the deepest exit finished by the deadline; a static "
            "network's answer counts only if its pass finished by then. Accuracy counts an unanswered image as "
            "wrong.",
            "",
            *rows,
            "",
            f"Models — {models}.",
            "",
            f"Claim ({data['models'][0]['name']} at least as accurate as the best static network at every "
            "deadline): "
            f"**{'holds' if held else 'does not hold everywhere'}**.",
            "",
            f"![accuracy by deadline](bench/{section(busy)}.png)",
        ]
    )


def _describe(m: dict[str, Any]) -> str:
    text = (
        f"{m['name']}: {m['mflops']:.1f} MFLOPs, {m['params'] / 1e6:.2f} M params, "
        f"{m['accuracy_no_deadline'] * 100:.2f} % with no deadline, median {m['median_ms']:.2f} ms "
        f"(p90 {m['p90_ms']:.2f} ms)"
    )
    if m.get("exit_median_ms"):
        text += f", median time to each exit {' / '.join(f'{t:.2f}' for t in m['exit_median_ms'])} ms"
    return text + f", trained {m['train_epochs']} epochs ({m['trained']})"


def _verdict(row: dict[str, Any]) -> str:
    if row.get("vacuous"):
        return "no model answers"
    return "holds" if row["holds"] else "**fails**"


def plot(data: dict[str, Any], path: Path) -> None:
    """Left: the whole range (who answers at all); right: zoomed to the answers' accuracies."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    subject = data["models"][0]["name"]
    answered = [100 * a for a in _plotted_accuracies(data) if a > 0]
    for ax, ylim in zip(axes, [(0, 100), (max(0, min(answered) - 2), max(answered) + 1)]):
        ax.plot(data["deadlines_ms"], [100 * a for a in data["msdnet"]], "o-", lw=2, label=f"{subject}, deepest exit")
        for name, figures in data.get("also", {}).items():
            ax.plot(data["deadlines_ms"], [100 * a for a in figures["accuracy"]], "o:", label=f"{name}, deepest exit")
        for name, accs in data["static"].items():
            ax.plot(data["deadlines_ms"], [100 * a for a in accs], "s--", label=f"{name} (static)")
        ax.set(xscale="log", xlabel="deadline per image (ms)", ylabel="validation accuracy (%)", ylim=ylim)
        ax.set_xticks(data["deadlines_ms"], [str(d) for d in data["deadlines_ms"]])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].set_title("zoomed", fontsize=9)
    title = textwrap.fill(data["command"], 140) + (f"\n{quick_label(data)}" if data["quick"] else "")
    fig.suptitle(title, fontsize=7)
    save_figure(fig, path)


def _plotted_accuracies(data: dict[str, Any]) -> list[float]:
    """Every accuracy the plot draws: the subject's, the other MSDNets' and the static networks'."""
    values = [*data["msdnet"], *(v for accs in data["static"].values() for v in accs)]
    return values + [v for f in data.get("also", {}).values() for v in f["accuracy"]]


def _trained(training: dict) -> str:
    """Where and how long a model trained, from its card."""
    by_device = training.get("train_seconds_by_device")
    if by_device:
        return ", ".join(f"{s:.0f} s on {d}" for d, s in by_device.items())
    seconds = training.get("train_seconds_total", training.get("train_seconds", 0))
    return f"{seconds:.0f} s on {training.get('options', {}).get('device', 'cpu')}"


def _summary(name: str, times: list[float], correct: float, mflops: float, params: int, training: dict) -> dict:
    return {
        "name": name,
        "mflops": round(mflops, 3),
        "params": params,
        "accuracy_no_deadline": round(correct, 5),
        "median_ms": round(1000 * float(np.median(times)), 3),
        "p90_ms": round(1000 * float(np.percentile(times, 90)), 3),
        "train_epochs": training.get("epochs_total", training.get("epochs_done")),
        "train_hours": round(training.get("train_seconds_total", training.get("train_seconds", 0)) / 3600, 3),
        "trained": _trained(training),
    }


def _label(weights: str) -> str:
    return "msdnet (default)" if weights == "default" else f"msdnet ({Path(weights).stem})"


def _anytime_summary(name: str, card: Any, runs: list, labels: list[int]) -> dict:
    correct = float(np.mean([p[-1] == y for (_, p), y in zip(runs, labels)]))
    times = [t[-1] for t, _ in runs]
    summary = _summary(name, times, correct, card.exits[-1].mflops, card.exits[-1].params, card.training)
    per_exit = np.array([t for t, _ in runs]) * 1000  # (images, exits)
    summary["exit_median_ms"] = [round(float(v), 3) for v in np.median(per_exit, axis=0)]
    return summary


def main() -> None:
    from model.data import load_split, normalize
    from model.fuse import fold_batchnorm
    from model.resnet import load_static
    from model.weights import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    parser.add_argument("--static", type=Path, nargs="+", required=True, help="exported static baselines")
    parser.add_argument("--weights", default="default", help="the MSDNet to test (default: the shipped one)")
    parser.add_argument("--also", nargs="*", default=[], help="more MSDNets to report beside it ('default' or paths)")
    parser.add_argument("--contention", type=int, default=0, help="competing processes sharing the CPU (default 0)")
    args = parser.parse_args()
    if args.contention < 0:
        parser.error("--contention must be 0 or more")
    if args.out == DOCS / "bench" / f"{NAME}.json":  # the default: a contended run keeps its own files
        args.out = DOCS / "bench" / f"{section(args.contention)}.json"
    use_service_threads()
    # The anytime models, the claim's subject first; every model runs folded, as the service serves it.
    anytime = {_label(w): load_model(w) for w in [args.weights, *args.also]}
    for m, _ in anytime.values():
        fold_batchnorm(m)
    subject = _label(args.weights)
    card = anytime[subject][1]
    statics = {}
    for path in args.static:
        static_model, static_card = load_static(path)
        if list(static_card.classes) != list(card.classes):
            parser.error(f"{path} was trained on other classes than {args.weights}")
        statics[static_card.preset] = (fold_batchnorm(static_model), static_card)
    val = load_split(DATASET, "val", classes=tuple(card.classes))
    if args.quick:  # the split is sorted by class: a seeded random subset, not a prefix
        val = val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:QUICK_IMAGES])
    # Each model sees the images normalised as it was trained.
    anytime_images = {name: normalize(val.images, tuple(c.mean), tuple(c.std)) for name, (_, c) in anytime.items()}
    static_images = {name: normalize(val.images, tuple(c.mean), tuple(c.std)) for name, (_, c) in statics.items()}
    labels = [int(y) for y in val.labels]
    with competing_processes(args.contention):
        for i in range(WARMUP_IMAGES):
            for name, (m, _) in anytime.items():
                time_anytime(m, anytime_images[name][i : i + 1])
            for name, (m, _) in statics.items():
                time_static(m, static_images[name][i : i + 1])
        anytime_runs: dict[str, list[tuple[list[float], list[int]]]] = {name: [] for name in anytime}
        static_runs: dict[str, list[tuple[float, int]]] = {name: [] for name in statics}
        t0 = time.perf_counter()
        for i in range(len(labels)):
            for name, (m, _) in anytime.items():
                anytime_runs[name].append(time_anytime(m, anytime_images[name][i : i + 1]))
            for name, (m, _) in statics.items():
                static_runs[name].append(time_static(m, static_images[name][i : i + 1]))
            if (i + 1) % 500 == 0:
                print(f"  {i + 1}/{len(labels)} images, {time.perf_counter() - t0:.0f} s", flush=True)
    figures = accuracy_by_deadline(anytime_runs[subject], static_runs, labels)
    models = [_anytime_summary(name, c, anytime_runs[name], labels) for name, (_, c) in anytime.items()]
    also = {}
    for name in list(anytime)[1:]:
        accuracy, mean_exit = anytime_accuracy(anytime_runs[name], labels, DEADLINES_MS)
        also[name] = {"accuracy": accuracy, "mean_exit": mean_exit}
    for name, (_, c) in statics.items():
        runs = static_runs[name]
        correct = float(np.mean([p == y for (_, p), y in zip(runs, labels)]))
        models.append(_summary(name, [t for t, _ in runs], correct, c.mflops, c.params, c.training))
    data: dict[str, Any] = {
        **provenance(f"bench.{NAME}"),
        "quick": args.quick,
        "contention": args.contention,
        "images": len(labels),
        "torch_threads": torch.get_num_threads(),
        **figures,
        "also": also,
        "models": models,
    }
    data["verdicts"] = verdicts(figures)
    data["claim_holds"] = all(v["holds"] for v in data["verdicts"])
    publish(args, section(args.contention), data, markdown, plot)


if __name__ == "__main__":
    main()
