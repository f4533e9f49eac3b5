"""Training on tiny data: the loss falls, a killed run resumes, the export is usable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.train import TrainOptions, input_size, joint_loss, lr_at, plan_epochs, train
from model.weights import load_model


def _opts(data: Path, out: Path, epochs: int, **kw) -> TrainOptions:
    return TrainOptions(
        preset="msdnet-cifar-budgeted",
        data=str(data),
        out=str(out),
        epochs=epochs,
        batch_size=32,
        lr=0.05,
        schedule="cosine",
        val_size=30,
        bf16=False,
        **kw,
    )


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_short_run_lowers_the_loss_and_resumes(cifar10_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_opts(cifar10_python, out, epochs=2))
    first = _records(out)
    assert [r["epoch"] for r in first] == [1, 2]
    assert first[1]["loss"] < first[0]["loss"]
    # A longer schedule with --resume continues from epoch 2, not from scratch.
    train(_opts(cifar10_python, out, epochs=3), resume=True)
    records = _records(out)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[2]["loss"] < records[0]["loss"]
    _model, card = load_model(out / "model.safetensors")
    assert card.training["epochs_done"] == 3
    assert len(card.thresholds) == 39 and all(e.val_accuracy is not None for e in card.exits)
    assert card.classes == ["airplane", "automobile", "bird"]


def test_resume_trusts_the_state_written_with_the_weights(cifar10_python: Path, tmp_path: Path) -> None:
    """A kill between the weights and a separate state file once made resume repeat an epoch on
    weights that already held it: the state now travels inside the checkpoint file."""
    out = tmp_path / "run"
    train(_opts(cifar10_python, out, epochs=2, limit=64))
    stale = json.loads((out / "checkpoint.json").read_text())
    stale["epoch"] = 1  # as if the kill came after the weights of epoch 2 and before this file
    (out / "checkpoint.json").write_text(json.dumps(stale))
    train(_opts(cifar10_python, out, epochs=3, limit=64), resume=True)
    assert [r["epoch"] for r in _records(out)] == [1, 2, 3]


def test_the_validation_pool_is_recorded_and_checked(cifar10_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    train(_opts(cifar10_python, out, epochs=1, limit=64))
    _model, card = load_model(out / "model.safetensors")
    assert card.validation["pool_size"] == 200 and len(card.validation["pool_fingerprint"]) == 16


def test_every_preset_trains_at_its_own_input_size() -> None:
    """ImageNet presets once got 32x32 images and failed in their first pooling layer."""
    assert input_size("msdnet-imagenet-step4") == 224
    assert input_size("msdnet-cifar-anytime") == 32 and input_size("resnet20") == 32


def test_cutout_trains_and_is_recorded_on_the_card(cifar10_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "cutout"
    train(_opts(cifar10_python, out, epochs=1, cutout=8, limit=64))
    _model, card = load_model(out / "model.safetensors")
    assert card.training["options"]["cutout"] == 8 and card.training["epochs_done"] == 1


def test_distillation_changes_only_the_early_exits() -> None:
    torch.manual_seed(0)
    logits = [torch.randn(8, 5, requires_grad=True) for _ in range(3)]
    labels = torch.randint(0, 5, (8,))
    base = TrainOptions(preset="x", data="", out="")
    plain = joint_loss(logits, labels, base)
    distilled = joint_loss(logits, labels, TrainOptions(preset="x", data="", out="", distill=0.5))
    assert not torch.isclose(plain, distilled)
    distilled.backward()
    assert all(z.grad is not None for z in logits)
    with pytest.raises(ValueError, match="exit weights"):
        joint_loss(logits, labels, TrainOptions(preset="x", data="", out="", exit_weights=(1.0, 1.0)))


def test_schedules() -> None:
    opts = TrainOptions(preset="x", data="", out="", epochs=10, lr=0.1, schedule="step")
    assert lr_at(opts, 0, 100) == pytest.approx(0.1)
    assert lr_at(opts, 5, 100) == pytest.approx(0.01)
    assert lr_at(opts, 7.5, 100) == pytest.approx(0.001)
    cos = TrainOptions(preset="x", data="", out="", epochs=10, lr=0.1, schedule="cosine")
    assert lr_at(cos, 0, 100) < lr_at(cos, 0.9, 100) <= 0.1
    assert lr_at(cos, 9.99, 100) < 0.001


def test_time_budget_plans_epochs_from_recent_epoch_times() -> None:
    fixed = TrainOptions(preset="x", data="", out="", epochs=7)
    assert plan_epochs(fixed, 1, 50.0, [50.0]) == 7  # no budget: the epoch count as given
    budget = TrainOptions(preset="x", data="", out="", epochs=7, time_budget_s=100.0)
    # After epoch 1 only its (slow, warm-up) time is known: 10 s left room for one more.
    assert plan_epochs(budget, 1, 50.0, [50.0]) == 2
    # Later the first epoch is ignored: the last two took 10 s, 60 s remain, so 6 more.
    assert plan_epochs(budget, 3, 40.0, [20.0, 10.0, 10.0]) == 9
    # Out of time: stop where it stands, never plan fewer epochs than are done.
    assert plan_epochs(budget, 9, 120.0, [20.0] + [12.5] * 8) == 9


@pytest.mark.slow
def test_time_budget_ends_the_run_and_is_recorded(cifar10_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "budget"
    # A budget spent by the first epoch: the run ends there, whatever --epochs said, and the
    # checkpoint records the planned length so that --resume continues the same schedule.
    train(_opts(cifar10_python, out, epochs=50, time_budget_s=0.01))
    state = json.loads((out / "checkpoint.json").read_text())
    assert [r["epoch"] for r in _records(out)] == [1]
    assert state["options"]["epochs"] == 1 and state["options"]["time_budget_s"] == 0.01
    assert len(state["epoch_seconds"]) == 1 and state["train_seconds"] >= 0
    train(_opts(cifar10_python, out, epochs=50, time_budget_s=0.01), resume=True)
    assert [r["epoch"] for r in _records(out)] == [1]  # nothing left of the budget


def test_a_warm_restart_carries_the_training_history_forward(cifar10_python: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    train(_opts(cifar10_python, first, epochs=1, limit=64))
    train(_opts(cifar10_python, second, epochs=2, limit=64, init_from=str(first / "model.safetensors")))
    _model, card = load_model(second / "model.safetensors")
    runs = card.training["history"]
    assert [r["epochs"] for r in runs] == [1, 2] and runs[1]["init_from"] == str(first / "model.safetensors")
    assert card.training["epochs_total"] == 3 and card.training["epochs_done"] == 2
    assert card.training["train_seconds_by_device"]["cpu"] == pytest.approx(
        sum(r["train_seconds"] for r in runs), abs=0.2
    )


def test_training_seconds_add_up_per_kind_of_device_whatever_the_driver_calls_it() -> None:
    from model.lineage import device_key, extend_lineage

    assert [device_key(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200", "cpu")] == [
        "h100",
        "h100",
        "h200",
        "cpu",
    ]
    assert device_key("Tesla T4") == "t4" and device_key("NVIDIA GeForce RTX 4090") == "nvidia geforce rtx 4090"
    source = {"epochs_done": 10, "train_seconds_by_device": {"cpu": 100.0, "h100": 10.0}, "epochs_total": 30}
    lineage = extend_lineage(source, {"epochs": 5, "train_seconds": 5.0, "device": "NVIDIA H100 80GB HBM3"})
    assert lineage["train_seconds_by_device"] == {"cpu": 100.0, "h100": 15.0}
    assert lineage["epochs_total"] == 35 and lineage["train_seconds_total"] == 115.0
