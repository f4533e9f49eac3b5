"""The budgeted benchmark's cross-fit: thresholds fitted on one half, scored on the other."""

from __future__ import annotations

import torch

from bench.budgeted import cross_fitted


def test_cross_fit_scores_thresholds_on_data_they_were_not_fitted_on() -> None:
    gen = torch.Generator().manual_seed(0)
    n, exits, classes = 400, 3, 5
    probs = torch.softmax(3 * torch.randn(exits, n, classes, generator=gen), dim=2)
    labels = probs[-1].argmax(1)  # the last exit is always right, the earlier ones by chance
    mflops = [10.0, 20.0, 30.0]
    points = cross_fitted(probs, labels, mflops)
    assert [c["p"] for c in points][:2] == [0.05, 0.1] and len(points) == 39
    assert all(10.0 <= c["avg_mflops"] <= 30.0 and 0.0 <= c["accuracy"] <= 1.0 for c in points)
    # p = 0.05 sends ~95 % out at exit 1 on the fitted half, and about as many on the other half
    assert points[0]["avg_mflops"] < 12.0
    # p = 1.95 sends most samples deep: more compute and more accuracy than p = 0.05
    assert points[-1]["avg_mflops"] > points[0]["avg_mflops"] + 5
    assert points[-1]["accuracy"] > points[0]["accuracy"]
