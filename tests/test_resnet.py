"""The static baselines: the paper's sizes, trained and exported by the same loop as MSDNet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.resnet import CifarResNet, load_static
from model.train import TrainOptions, build_model, train


@pytest.mark.parametrize(("depth", "millions"), [(20, 0.27), (56, 0.85)])
def test_resnet_sizes_match_the_paper(depth: int, millions: float) -> None:
    # He et al. 2016, table 6: 0.27 M and 0.85 M parameters (option-A shortcuts, 10 classes).
    model = CifarResNet(depth, 10)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.005)
    out = model(torch.randn(3, 3, 32, 32))
    assert len(out) == 1 and out[0].shape == (3, 10)


def test_resnet_cost_is_counted_like_msdnet() -> None:
    # Convolutions alone: 40.6 M multiply-adds for ResNet-20, 125.5 M for ResNet-56 (commonly quoted
    # 41 M / 126 M); ReLUs, pooling and the classifier add well under 1 %.
    assert 40.6 < CifarResNet(20, 10).mflops() < 41.2
    assert 125.5 < CifarResNet(56, 10).mflops() < 126.6


def test_unknown_depth_and_preset_are_refused() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21, 10)
    with pytest.raises(KeyError, match="resnet20"):
        build_model("resnet-twenty", 10)


@pytest.mark.slow
def test_a_static_baseline_trains_and_exports(cifar10_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "resnet"
    opts = TrainOptions(
        preset="resnet20", data=str(cifar10_python), out=str(out), epochs=2, batch_size=32, lr=0.05,
        schedule="cosine", val_size=30, bf16=False,
    )  # fmt: skip
    train(opts)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[1]["loss"] < records[0]["loss"] and len(records[0]["val_accuracy"]) == 1
    model, card = load_static(out / "model.safetensors")
    assert card.preset == "resnet20" and card.training["epochs_done"] == 2
    assert card.val_accuracy == records[1]["val_accuracy"][0]
    assert card.training["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in records), abs=0.2)
    assert card.classes == ["airplane", "automobile", "bird"]
    assert model(torch.zeros(1, 3, 32, 32))[0].shape == (1, 3)


def test_batchnorm_folding_keeps_a_resnets_outputs() -> None:
    import copy

    from model.fuse import fold_batchnorm

    torch.manual_seed(0)
    model = CifarResNet(20, 10)
    for m in model.modules():  # non-trivial statistics, so a wrong fold would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        torch.testing.assert_close(folded(x)[0], model(x)[0], atol=1e-5, rtol=1e-4)
