"""Evaluation in the paper's two settings: anytime (accuracy per exit) and budgeted batch.

The budgeted curve uses the thresholds fitted on the validation split (stored in the model card)
and applies them with real early exit, timing each point, so the reported wall time per image is
what a user would see, not a simulation.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor

from model.budget import classify_early_exit, simulate
from model.data import ImageSet, normalize
from model.msdnet import MSDNet
from model.weights import ModelCard

__all__ = ["evaluate", "exit_probabilities", "plot_curves"]


def exit_probabilities(
    model: MSDNet, data: ImageSet, mean: tuple | list, std: tuple | list, batch_size: int = 500
) -> Tensor:
    """Softmax of every exit for every sample: (exits, N, classes)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            x = normalize(data.images[start : start + batch_size].to(device), tuple(mean), tuple(std))
            chunks.append(torch.stack([torch.softmax(z.float(), dim=1) for z in model(x)]).cpu())
    model.train(was_training)
    return torch.cat(chunks, dim=1)


def evaluate(
    model: MSDNet, card: ModelCard, data: ImageSet, batch_size: int = 500, probs: Tensor | None = None
) -> dict:
    """Per-exit accuracy and the budgeted curve (real early exit, timed) on ``data``.

    ``probs``: ``exit_probabilities`` of this model on ``data``, for a caller that needs them too
    (one full pass over the data instead of two)."""
    if probs is None:
        probs = exit_probabilities(model, data, card.mean, card.std, batch_size)
    labels = data.labels
    exits = [
        {"exit": e.exit, "mflops": e.mflops, "accuracy": round(float((p.argmax(1) == labels).float().mean()), 5)}
        for e, p in zip(card.exits, probs)
    ]
    budgeted = []
    images = normalize(data.images, tuple(card.mean), tuple(card.std))
    for point in card.thresholds:
        thresholds = tuple(point.thresholds)
        simulated = simulate(probs, labels, card.exit_mflops, thresholds, point.p)
        start = time.perf_counter()
        predictions, exit_counts = [], torch.zeros(len(card.exits))
        for s in range(0, len(data), batch_size):
            result = classify_early_exit(model, images[s : s + batch_size], thresholds)
            predictions.append(result.predictions)
            exit_counts += torch.bincount(result.exits - 1, minlength=len(card.exits)).float()
        elapsed = time.perf_counter() - start
        shares = exit_counts / len(data)
        budgeted.append(
            {
                "p": point.p,
                "avg_mflops": round(float(sum(s * f for s, f in zip(shares.tolist(), card.exit_mflops))), 4),
                "accuracy": round(float((torch.cat(predictions) == labels).float().mean()), 5),
                "ms_per_image": round(elapsed * 1000 / len(data), 4),
                "simulated_accuracy": round(simulated.accuracy, 5),
                "simulated_avg_mflops": round(simulated.avg_mflops, 4),
                "exit_shares": [round(s, 5) for s in shares.tolist()],
            }
        )
    return {"images": len(data), "exits": exits, "budgeted": budgeted}


def plot_curves(result: dict, path: str | Path, title: str = "") -> Path:
    """Accuracy against MFLOPs: the anytime exits and the budgeted-batch curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(
        [e["mflops"] for e in result["exits"]],
        [100 * e["accuracy"] for e in result["exits"]],
        "o-",
        label="anytime (exit k)",
    )
    if result["budgeted"]:
        pts = sorted(result["budgeted"], key=lambda b: b["avg_mflops"])
        ax.plot(
            [b["avg_mflops"] for b in pts],
            [100 * b["accuracy"] for b in pts],
            ".-",
            label="budgeted batch (real early exit)",
        )
    ax.set_xlabel("MFLOPs (multiply-adds) per image")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
