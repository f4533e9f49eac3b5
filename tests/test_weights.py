"""safetensors + card round trip and clear errors for mismatches (the shipped weights: test_shipped_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.config import get_config
from model.msdnet import MSDNet
from model.weights import CardMismatchError, load_model, new_card, save_model


def _save(tmp_path: Path, preset: str = "msdnet-cifar-budgeted", classes: int = 3) -> Path:
    torch.manual_seed(0)
    model = MSDNet(get_config(preset, classes)).eval()
    card = new_card(preset, model, [f"c{i}" for i in range(classes)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return save_model(model, card, tmp_path / "m.safetensors")


def test_round_trip_keeps_weights_and_card(tmp_path: Path) -> None:
    path = _save(tmp_path)
    model, card = load_model(path)
    torch.manual_seed(0)
    reference = MSDNet(get_config("msdnet-cifar-budgeted", 3)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model(x), reference(x)):
            torch.testing.assert_close(a, b)
    assert card.classes == ["c0", "c1", "c2"] and card.input_size == 32
    assert [e.exit for e in card.exits] == [1, 2, 3, 4, 5]
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def test_card_that_does_not_fit_the_weights_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["config"]["num_classes"] = 4
    card["classes"] = ["a", "b", "c", "d"]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(
        CardMismatchError, match=r"exits.0.linear.bias has shape \(3,\), card.s architecture needs \(4,\)"
    ):
        load_model(path)


def test_card_for_another_architecture_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["config"] = get_config("msdnet-cifar-anytime", 3).to_dict()
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CardMismatchError, match="does not fit its card"):
        load_model(path)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file"):
        load_model(tmp_path / "nope.safetensors")
    path = _save(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="model card"):
        load_model(path)


def test_a_card_with_a_config_key_missing_is_a_mismatch_not_a_traceback(tmp_path: Path) -> None:
    path = _save(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    del card["config"]["growth_rate"]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CardMismatchError, match="unusable config"):
        load_model(path)


def test_threshold_sets_must_hold_one_threshold_per_exit_but_the_last(tmp_path: Path) -> None:
    """A short set loaded once, then budgeted batch failed with an IndexError at the missing exit."""
    path = _save(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["thresholds"] = [{"p": 1.0, "thresholds": [0.9, 0.8], "val_avg_mflops": 5.0, "val_accuracy": 0.5}]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CardMismatchError, match=r"p=\[1.0\].*one threshold per exit but the last \(4\)"):
        load_model(path)
