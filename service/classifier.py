"""The loaded model plus what turns frames into tensors and logits into predictions.

Keeps the engine free of preprocessing and label bookkeeping, and gives tests one seam to swap
in a small untrained model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.data import normalize, to_square_rgb
from model.fuse import fold_batchnorm
from model.msdnet import MSDNet
from model.weights import ModelCard, load_model

__all__ = ["AnytimeClassifier", "ExitResult", "TopClassResult", "pick_device"]


@dataclass(frozen=True)
class TopClassResult:
    class_index: int
    label: str
    confidence: float


@dataclass(frozen=True)
class ExitResult:
    """One sample's prediction at one exit."""

    exit: int
    exits_total: int
    class_index: int
    label: str
    confidence: float
    top5: tuple[TopClassResult, ...]
    mflops: float  # cumulative cost to reach this exit


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


class AnytimeClassifier:
    def __init__(self, model: MSDNet, card: ModelCard, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.card = card
        self.exits_total = model.num_exits
        self.exit_mflops = card.exit_mflops
        self.classes = card.classes
        self._mean = tuple(card.mean)
        self._std = tuple(card.std)

    @classmethod
    def load(cls, weights: str, device: str = "auto") -> AnytimeClassifier:
        dev = pick_device(device)
        model, card = load_model(weights, dev)
        return cls(fold_batchnorm(model), card, dev)  # inference only: a fifth faster at batch 1

    def preprocess(self, images: list[np.ndarray]) -> Tensor:
        """BGR uint8 frames of any size -> one normalised batch (centre crop, resize)."""
        size = self.card.input_size
        batch = torch.from_numpy(np.stack([to_square_rgb(img, size) for img in images]))
        return normalize(batch, self._mean, self._std).to(self.device)

    def results(self, exit_number: int, logits: Tensor) -> list[ExitResult]:
        probs = torch.softmax(logits.float(), dim=1).cpu()
        k = min(5, probs.shape[1])
        conf, idx = probs.topk(k, dim=1)
        out = []
        for row_conf, row_idx in zip(conf.tolist(), idx.tolist()):
            top = tuple(
                TopClassResult(class_index=i, label=self.classes[i], confidence=round(c, 5))
                for c, i in zip(row_conf, row_idx)
            )
            out.append(
                ExitResult(
                    exit=exit_number,
                    exits_total=self.exits_total,
                    class_index=top[0].class_index,
                    label=top[0].label,
                    confidence=top[0].confidence,
                    top5=top,
                    mflops=self.exit_mflops[exit_number - 1],
                )
            )
        return out
