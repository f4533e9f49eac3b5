"""The inference-paths benchmark times real alternatives: each computes the same logits as eager."""

from __future__ import annotations

import torch

from bench.inference_paths import all_exits, channels_last, time_paths, torchscript


def test_alternative_paths_compute_what_eager_computes(tiny_classifier) -> None:
    eager = tiny_classifier.model
    models = {
        "eager": eager,
        "channels_last": channels_last(eager),
        "torchscript": torchscript(eager, torch.randn(1, 3, 32, 32)),
    }
    with torch.inference_mode():
        result = time_paths(models, batch=3, reps=2, warmup=1)  # traced at batch 1, run at batch 3
        x = torch.randn(2, 3, 32, 32)
        assert torch.allclose(all_exits(models["torchscript"], x)(), all_exits(eager, x)(), rtol=1e-4, atol=1e-4)
    assert set(result["median_ms"]) == {"eager", "channels_last", "torchscript"}
    assert all(diff <= 1e-3 for diff in result["max_abs_diff_vs_eager"].values())  # logits of tens
    assert eager.blocks[0][0].__class__.__name__ != "RecursiveScriptModule"  # the served model is untouched
