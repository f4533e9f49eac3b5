"""Budgeted batch classification with real early exit, beside the simulated protocol.

The paper's budgeted-batch figures are simulated: thresholds applied to precomputed softmaxes of
full passes. ``model.evaluate.evaluate`` also classifies with real early exit (samples that exit
leave the running batch) and times it. This benchmark checks that the two agree on accuracy and
MFLOPs, and that the wall time per image really falls with the average MFLOPs (Spearman's rank
correlation over the curve's points), using the thresholds stored in the model card.

The card's thresholds were fitted on this same validation split, so its points flatter the model.
A two-fold cross-fit shows by how much: thresholds fitted on one seeded half of the split are scored
on the other half, and the two halves' figures averaged (simulated, as the protocol's are).

    python -m bench.budgeted [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import (
    SHARED,
    add_arguments,
    figure_caption,
    provenance,
    provenance_markdown,
    publish,
    pyplot,
    save_figure,
)

NAME = "budgeted"
DATASET = SHARED / "datasets" / "cifar10" / "train"
QUICK_IMAGES = 500


def ranks(values: list[float]) -> np.ndarray:
    """1-based ranks, ties given their average rank (as Spearman's coefficient requires)."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(a.size)
    r[order] = np.arange(1, a.size + 1)
    _, tie_group = np.unique(a, return_inverse=True)
    return (np.bincount(tie_group, weights=r) / np.bincount(tie_group))[tie_group]


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho: the Pearson correlation of the ranks."""
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def cross_fitted(probs: torch.Tensor, labels: torch.Tensor, exit_mflops: list[float], seed: int = 0) -> list[dict]:
    """Each p's thresholds fitted on one half of the data and scored on the other, both ways, averaged."""
    from model.budget import fit_thresholds, p_values, simulate

    order = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))
    halves = (order[: labels.numel() // 2], order[labels.numel() // 2 :])
    points = []
    for p in p_values():
        scored = []
        for fit_on, score_on in (halves, halves[::-1]):
            thresholds = fit_thresholds(probs[:, fit_on], p)
            scored.append(simulate(probs[:, score_on], labels[score_on], exit_mflops, thresholds, p))
        points.append(
            {
                "p": p,
                "avg_mflops": round(sum(b.avg_mflops for b in scored) / 2, 4),
                "accuracy": round(sum(b.accuracy for b in scored) / 2, 5),
            }
        )
    return points


def analyse(result: dict[str, Any], card: Any) -> dict[str, Any]:
    """Real against simulated, against the card's figures, and wall time against MFLOPs."""
    points = result["budgeted"]
    card_points = {t.p: t for t in card.thresholds}
    for b in points:
        fitted = card_points.get(b["p"])
        b["card_val_accuracy"] = fitted.val_accuracy if fitted else None
        b["card_val_avg_mflops"] = fitted.val_avg_mflops if fitted else None
    mflops = [b["avg_mflops"] for b in points]
    wall = [b["ms_per_image"] for b in points]
    cheap, dear = min(points, key=lambda b: b["avg_mflops"]), max(points, key=lambda b: b["avg_mflops"])
    crossed = {c["p"]: c for c in result.get("cross_fitted", [])}
    optimism = [b["simulated_accuracy"] - crossed[b["p"]]["accuracy"] for b in points if b["p"] in crossed]
    return {
        "spearman_ms_vs_mflops": None if (rho := spearman(mflops, wall)) is None else round(rho, 4),
        "max_abs_accuracy_real_minus_simulated": round(
            max(abs(b["accuracy"] - b["simulated_accuracy"]) for b in points), 5
        ),
        "max_abs_mflops_real_minus_simulated": round(
            max(abs(b["avg_mflops"] - b["simulated_avg_mflops"]) for b in points), 4
        ),
        "cheapest_point": {"p": cheap["p"], "avg_mflops": cheap["avg_mflops"], "ms_per_image": cheap["ms_per_image"]},
        "dearest_point": {"p": dear["p"], "avg_mflops": dear["avg_mflops"], "ms_per_image": dear["ms_per_image"]},
        "mflops_ratio_cheapest_to_dearest": round(cheap["avg_mflops"] / dear["avg_mflops"], 4),
        "time_ratio_cheapest_to_dearest": round(cheap["ms_per_image"] / dear["ms_per_image"], 4),
        # same-data fitting's accuracy minus cross-fitted accuracy, over the points (positive: optimistic)
        "same_data_minus_cross_fitted_accuracy": {
            "mean": round(sum(optimism) / len(optimism), 5),
            "max": round(max(optimism), 5),
        }
        if optimism
        else None,
    }


def markdown(data: dict[str, Any], quick: bool) -> str:
    a, res = data["analysis"], data["result"]
    exits = " · ".join(f"exit {e['exit']}: {100 * e['accuracy']:.2f} % at {e['mflops']:.1f}" for e in res["exits"])
    crossed = {c["p"]: c for c in res["cross_fitted"]}
    rows = [
        "| p | avg MFLOPs (real) | accuracy (real) | ms per image | avg MFLOPs (simulated) | accuracy (simulated) "
        "| cross-fitted: avg MFLOPs, accuracy | share leaving at each exit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    stride = data["table_stride"]
    shown = "All points are" if stride == 1 else f"Every {stride}th point is"
    for b in res["budgeted"][::stride]:
        shares = " ".join(f"{s:.2f}" for s in b["exit_shares"])
        rows.append(
            f"| {b['p']:g} | {b['avg_mflops']:.2f} | {100 * b['accuracy']:.2f} % | {b['ms_per_image']:.4f} "
            f"| {b['simulated_avg_mflops']:.2f} | {100 * b['simulated_accuracy']:.2f} % "
            f"| {crossed[b['p']]['avg_mflops']:.2f}, {100 * crossed[b['p']]['accuracy']:.2f} % | {shares} |"
        )
    return "\n".join(
        [
            "## Budgeted batch: real early exit against the simulated protocol",
            "",
            provenance_markdown(data, quick),
            "",
            f"Default model, {res['images']} images of the validation split{data['subset_note']}, the card's "
            f"{len(res['budgeted'])} threshold sets, batches of {data['batch_size']}. Real = samples really leave "
            "the batch at their exit and are timed; simulated = the same thresholds applied to full passes' "
            f"softmaxes (the paper's protocol). Loading and decoding took {data['load_s']:g} s, the evaluation "
            f"{data['evaluate_s']:g} s.",
            "",
            f"Anytime (every sample to exit k), accuracy at MFLOPs: {exits}.",
            "",
            *rows,
            "",
            f"{shown} shown; all are in `docs/bench/{NAME}.json`. Real vs simulated: "
            f"largest difference {100 * a['max_abs_accuracy_real_minus_simulated']:.3f} points of accuracy and "
            f"{a['max_abs_mflops_real_minus_simulated']} MFLOPs. Wall time against average MFLOPs: Spearman ρ = "
            f"**{a['spearman_ms_vs_mflops']}**; the cheapest point costs "
            f"{100 * a['mflops_ratio_cheapest_to_dearest']:.1f} % "
            f"of the dearest's MFLOPs and takes {100 * a['time_ratio_cheapest_to_dearest']:.1f} % of its time.",
            "",
            "The card's thresholds were fitted on these same images, so the real and simulated columns are "
            "optimistic. Cross-fitted: each p's thresholds fitted on one seeded half of the images and scored on "
            "the other, both ways, averaged (simulated). Same-data accuracy minus cross-fitted accuracy: "
            f"{_points(a['same_data_minus_cross_fitted_accuracy'])}.",
            "",
            f"![budgeted curve](bench/{NAME}.png)",
        ]
    )


def _points(gap: dict[str, float] | None) -> str:
    if gap is None:
        return "not computed"
    return f"mean {100 * gap['mean']:+.2f} points, largest {100 * gap['max']:+.2f} points"


def plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    res = data["result"]
    points = sorted(res["budgeted"], key=lambda b: b["avg_mflops"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    left.plot(
        [e["mflops"] for e in res["exits"]], [100 * e["accuracy"] for e in res["exits"]], "o-", label="anytime (exit k)"
    )
    series = [  # (MFLOPs key, accuracy key, points, style, label)
        ("avg_mflops", "accuracy", points, ".-", "budgeted, real early exit"),
        ("simulated_avg_mflops", "simulated_accuracy", res["budgeted"], "x--", "budgeted, simulated"),
        ("avg_mflops", "accuracy", res["cross_fitted"], "+:", "budgeted, cross-fitted (other half)"),
    ]
    for cost, accuracy, curve, style, label in series:
        curve = sorted(curve, key=lambda b: b[cost])
        left.plot([b[cost] for b in curve], [100 * b[accuracy] for b in curve], style, ms=4, label=label)
    left.set(xlabel="MFLOPs per image", ylabel="accuracy (%)", title="accuracy against compute")
    left.legend(fontsize=8)
    right.plot([b["avg_mflops"] for b in points], [b["ms_per_image"] for b in points], "o", ms=4)
    right.set(
        xlabel="average MFLOPs per image (real)",
        ylabel="wall ms per image",
        title=f"wall time against compute (Spearman ρ = {data['analysis']['spearman_ms_vs_mflops']})",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
    save_figure(fig, path, figure_caption(data))


def main() -> None:
    from model.data import load_split
    from model.evaluate import evaluate, exit_probabilities
    from model.weights import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    args = parser.parse_args()
    data: dict[str, Any] = {**provenance(f"bench.{NAME}"), "quick": args.quick, "batch_size": 500, "table_stride": 4}
    model, card = load_model("default")
    t0 = time.perf_counter()
    val = load_split(DATASET, "val")
    data["subset_note"] = ""
    if args.quick:
        # The split's indices are sorted (grouped by class), so a prefix would be nearly all airplanes:
        # take a seeded random subset instead.
        val = val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:QUICK_IMAGES])
        # Every 4th threshold set: the 39 real early-exit passes would take minutes even on 500 images.
        card = card.model_copy(update={"thresholds": card.thresholds[::4]})
        data["subset_note"] = f" (a seeded random {QUICK_IMAGES}-image subset; every 4th threshold set)"
        data["table_stride"] = 1
    data["load_s"] = round(time.perf_counter() - t0, 1)
    print(f"evaluating on {len(val)} images ...", flush=True)
    t0 = time.perf_counter()
    probs = exit_probabilities(model, val, card.mean, card.std, data["batch_size"])
    data["result"] = evaluate(model, card, val, batch_size=data["batch_size"], probs=probs)
    data["evaluate_s"] = round(time.perf_counter() - t0, 1)
    data["result"]["cross_fitted"] = cross_fitted(probs, val.labels, card.exit_mflops)
    data["analysis"] = analyse(data["result"], card)
    print(f"  {data['analysis']}", flush=True)
    publish(args, NAME, data, markdown, plot)


if __name__ == "__main__":
    main()
