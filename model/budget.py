"""Budgeted batch classification: the paper's threshold protocol, simulated and for real.

Fitting (on the validation set): for p in 0.05 ... 1.95, the target share of samples leaving at
exit k is q_k = p^k / sum_j p^j. Walking the exits in order, T_k is the confidence of the
floor(N*q_k)-th most confident sample that has not exited yet; all with confidence >= T_k exit.
The last exit takes everyone left.

``simulate`` applies thresholds to precomputed softmaxes, as the official code does.
``classify_early_exit`` really stops computing for the samples that exit: the rest of the batch
goes on through the next block as a smaller batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from model.msdnet import MSDNet

__all__ = ["BudgetPoint", "EarlyExitResult", "classify_early_exit", "fit_thresholds", "p_values", "simulate"]


def p_values() -> list[float]:
    """The 39 values of p the protocol sweeps: 0.05, 0.10, ..., 1.95."""
    return [round(0.05 * i, 2) for i in range(1, 40)]


@dataclass(frozen=True)
class BudgetPoint:
    p: float
    thresholds: tuple[float, ...]  # one per exit but the last
    exit_shares: tuple[float, ...]  # share of samples leaving at each exit
    avg_mflops: float
    accuracy: float


def target_shares(p: float, num_exits: int) -> list[float]:
    weights = [p**k for k in range(1, num_exits + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def fit_thresholds(probs: Tensor, p: float) -> tuple[float, ...]:
    """Thresholds for one p from per-exit softmaxes ``probs`` (exits, N, classes)."""
    num_exits, n = probs.shape[0], probs.shape[1]
    confidence = probs.max(dim=2).values
    exited = torch.zeros(n, dtype=torch.bool)
    thresholds = []
    for k, share in enumerate(target_shares(p, num_exits)[:-1]):
        wanted = math.floor(n * share)
        remaining = confidence[k][~exited].sort(descending=True).values
        # Fewer wanted than one, or more than remain: nobody leaves here (as in the official code,
        # whose T_k keeps its 1e8 start when the count is never reached).
        t = float(remaining[wanted - 1]) if 1 <= wanted <= remaining.numel() else math.inf
        thresholds.append(t)
        exited |= confidence[k] >= t
    return tuple(thresholds)


def exit_assignment(probs: Tensor, thresholds: tuple[float, ...]) -> Tensor:
    """0-based exit each sample takes: the first whose confidence reaches its threshold."""
    confidence = probs.max(dim=2).values  # (exits, N)
    num_exits = probs.shape[0]
    limits = torch.tensor([*thresholds, -math.inf], dtype=confidence.dtype).view(-1, 1)
    passes = confidence >= limits
    passes[num_exits - 1] = True
    return passes.float().argmax(dim=0)  # first True


def simulate(
    probs: Tensor, labels: Tensor, exit_mflops: list[float], thresholds: tuple[float, ...], p: float = 0.0
) -> BudgetPoint:
    """Accuracy and average cost of thresholds applied to precomputed softmaxes."""
    chosen = exit_assignment(probs, thresholds)
    n = labels.numel()
    preds = probs.argmax(dim=2).gather(0, chosen.view(1, -1)).squeeze(0)
    counts = torch.bincount(chosen, minlength=probs.shape[0]).float()
    shares = (counts / n).tolist()
    cost = sum(s * f for s, f in zip(shares, exit_mflops))
    return BudgetPoint(
        p=p,
        thresholds=thresholds,
        exit_shares=tuple(shares),
        avg_mflops=cost,
        accuracy=float((preds == labels).float().mean()),
    )


def fit_curve(probs: Tensor, labels: Tensor, exit_mflops: list[float]) -> list[BudgetPoint]:
    """The 39-point budgeted curve fitted and evaluated on the same (validation) data."""
    return [simulate(probs, labels, exit_mflops, fit_thresholds(probs, p), p) for p in p_values()]


@dataclass(frozen=True)
class EarlyExitResult:
    predictions: Tensor  # class index per sample
    confidences: Tensor
    exits: Tensor  # 1-based exit per sample


def classify_early_exit(model: MSDNet, images: Tensor, thresholds: tuple[float, ...] | list[float]) -> EarlyExitResult:
    """Classify a normalised batch, letting each sample stop at its first confident exit.

    Samples that exit are dropped from the running batch, so deeper blocks only compute for
    the hard ones: the saving is real, not simulated.
    """
    n = images.shape[0]
    predictions = torch.empty(n, dtype=torch.long)
    confidences = torch.empty(n)
    exits = torch.empty(n, dtype=torch.long)
    stepper = model.stepper(images)
    while not stepper.finished and stepper.batch_size > 0:
        out = stepper.advance()
        assert out is not None
        conf, pred = torch.softmax(out.logits.float(), dim=1).cpu().max(dim=1)  # bookkeeping on the CPU
        last = out.exit == stepper.num_exits
        leaving = torch.ones_like(conf, dtype=torch.bool) if last else conf >= thresholds[out.exit - 1]
        ids = out.sample_ids[leaving]
        predictions[ids] = pred[leaving]
        confidences[ids] = conf[leaving]
        exits[ids] = out.exit
        if not last:
            stepper.keep(torch.nonzero(~leaving).flatten())
    return EarlyExitResult(predictions, confidences, exits)
