"""The budgeted-batch threshold protocol and real early exit."""

from __future__ import annotations

import math

import pytest
import torch

from model.budget import classify_early_exit, exit_assignment, fit_thresholds, p_values, simulate, target_shares
from model.config import get_config
from model.msdnet import MSDNet


def test_p_sweep_has_39_points() -> None:
    ps = p_values()
    assert len(ps) == 39 and ps[0] == 0.05 and ps[-1] == 1.95


@pytest.mark.parametrize("p", [0.3, 1.0, 1.6])
def test_fitted_thresholds_reproduce_target_shares(p: float) -> None:
    torch.manual_seed(0)
    exits, n = 5, 2000
    probs = torch.softmax(torch.randn(exits, n, 10) * 3, dim=2)  # continuous: no ties
    thresholds = fit_thresholds(probs, p)
    chosen = exit_assignment(probs, thresholds)
    counts = torch.bincount(chosen, minlength=exits).tolist()
    wanted = [math.floor(n * q) for q in target_shares(p, exits)]
    assert counts[:-1] == wanted[:-1]  # exactly floor(N * q_k) leave at each exit but the last
    assert sum(counts) == n


def test_an_exit_that_wants_more_samples_than_remain_takes_none() -> None:
    """As the official code does (its T_k keeps its 1e8 start): when ties at full confidence send more
    samples out early than the shares planned, a later exit that wants more than remain takes nobody,
    rather than everybody left."""
    n, exits, p = 1000, 7, 1.95
    confidence = torch.full((exits, n), 0.5)
    confidence[:, :600] = 1.0  # 60 % of samples are certain from exit 1 on: all leave there
    confidence[:, 600:] = torch.linspace(0.2, 0.9, n - 600)
    probs = torch.stack([confidence, 1 - confidence], dim=2)
    thresholds = fit_thresholds(probs, p)
    counts = torch.bincount(exit_assignment(probs, thresholds), minlength=exits).tolist()
    assert counts[0] == 600
    starved = [k for k in range(1, exits - 1) if math.floor(n * target_shares(p, exits)[k]) > n - sum(counts[:k])]
    assert starved and all(thresholds[k] == math.inf and counts[k] == 0 for k in starved)
    assert sum(counts) == n


def test_simulated_cost_is_the_share_weighted_exit_cost() -> None:
    torch.manual_seed(1)
    probs = torch.softmax(torch.randn(3, 100, 4), dim=2)
    labels = torch.randint(0, 4, (100,))
    everyone_first = simulate(probs, labels, [1.0, 2.0, 3.0], (-1.0, -1.0))
    assert everyone_first.avg_mflops == pytest.approx(1.0)
    assert everyone_first.accuracy == pytest.approx(float((probs[0].argmax(1) == labels).float().mean()))
    nobody_early = simulate(probs, labels, [1.0, 2.0, 3.0], (math.inf, math.inf))
    assert nobody_early.avg_mflops == pytest.approx(3.0)


@pytest.fixture(scope="module")
def trained_like_model() -> MSDNet:
    torch.manual_seed(0)
    return MSDNet(get_config("msdnet-cifar-budgeted", 10)).eval()


def test_real_early_exit_matches_the_simulated_protocol(trained_like_model: MSDNet) -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        probs = torch.stack([torch.softmax(z, 1) for z in trained_like_model(x)])
    thresholds = fit_thresholds(probs, 1.2)
    chosen = exit_assignment(probs, thresholds)
    expected = probs.argmax(2).gather(0, chosen.view(1, -1)).squeeze(0)
    real = classify_early_exit(trained_like_model, x, thresholds)
    assert torch.equal(real.exits - 1, chosen)
    assert torch.equal(real.predictions, expected)


def test_samples_that_exit_stop_computing(trained_like_model: MSDNet) -> None:
    seen_batch_sizes: list[int] = []
    hooks = [
        head.register_forward_hook(lambda m, i, o: seen_batch_sizes.append(o.shape[0]))
        for head in trained_like_model.exits
    ]
    try:
        classify_early_exit(trained_like_model, torch.randn(16, 3, 32, 32), (-1.0, math.inf, math.inf, math.inf))
    finally:
        for h in hooks:
            h.remove()
    assert seen_batch_sizes == [16]  # everyone left at exit 1: no deeper block ran
