"""``anytime batch``: classify a folder of images under an average compute budget.

Picks the most accurate fitted threshold set whose validation cost fits the budget, then runs
real early exit over the folder: confident images stop at shallow exits, hard ones go deep.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from model.budget import classify_early_exit
from model.data import IMAGE_SUFFIXES, normalize, to_square_rgb
from model.weights import ModelCard, ThresholdSet, load_model

__all__ = ["BudgetTooSmallError", "choose_thresholds", "classify_folder"]


class BudgetTooSmallError(ValueError):
    """Even sending every image out at exit 1 costs more than the budget."""


def choose_thresholds(card: ModelCard, budget_mflops: float) -> ThresholdSet | None:
    """The most accurate fitted set whose validation cost fits the budget.

    Returns ``None`` when no fitted set fits but exit 1 alone does (everyone leaves at exit 1);
    raises :class:`BudgetTooSmallError` when not even exit 1 fits.
    """
    first = card.exits[0].mflops
    if budget_mflops < first:
        raise BudgetTooSmallError(
            f"budget {budget_mflops} MFLOPs is below exit 1's cost of {first:.2f} MFLOPs per image; "
            f"nothing can be classified for less"
        )
    fitting = [t for t in card.thresholds if t.val_avg_mflops <= budget_mflops]
    if not fitting:
        return None
    return max(fitting, key=lambda t: (t.val_accuracy, -t.val_avg_mflops))


def _image_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images found under {folder}")
    return paths


def classify_folder(folder: str | Path, budget_mflops: float, weights: str = "default", batch_size: int = 256) -> dict:
    model, card = load_model(weights)
    chosen = choose_thresholds(card, budget_mflops)
    num_exits = len(card.exits)
    # No fitted set fits but exit 1 does: send everyone out at exit 1.
    thresholds = tuple(chosen.thresholds) if chosen else (-1.0,) * (num_exits - 1)
    root = Path(folder)
    paths = _image_paths(root)
    results, skipped = [], []
    start = time.perf_counter()
    cost = 0.0
    for s in range(0, len(paths), batch_size):
        chunk, arrays = [], []
        for p in paths[s : s + batch_size]:
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if image is None:
                skipped.append(str(p))
                continue
            chunk.append(p)
            arrays.append(to_square_rgb(image, card.input_size))
        if not chunk:
            continue
        x = normalize(torch.from_numpy(np.stack(arrays)), tuple(card.mean), tuple(card.std))
        out = classify_early_exit(model, x, thresholds)
        for p, pred, conf, ex in zip(chunk, out.predictions.tolist(), out.confidences.tolist(), out.exits.tolist()):
            cost += card.exits[ex - 1].mflops
            results.append(
                {
                    "path": str(p.relative_to(root)),
                    "label": card.classes[pred],
                    "class_index": pred,
                    "confidence": round(conf, 5),
                    "exit": ex,
                }
            )
    wall = time.perf_counter() - start
    n = len(results)
    return {
        "images": results,
        "skipped": skipped,
        "totals": {
            "images": n,
            "avg_mflops": round(cost / n, 4) if n else 0.0,
            "budget_mflops": budget_mflops,
            "p": chosen.p if chosen else None,
            "wall_s": round(wall, 4),
        },
    }
