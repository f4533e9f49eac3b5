"""The weights shipped in the package: they load with their card and really classify CIFAR-10."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.data import load_split
from model.evaluate import exit_probabilities
from model.weights import DEFAULT_WEIGHTS, load_model

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights in model/weights/")


def test_card_is_complete() -> None:
    _, card = load_model("default")
    assert card.preset == "msdnet-cifar-anytime" and len(card.classes) == 10 and card.input_size == 32
    assert all(e.val_accuracy is not None for e in card.exits)
    assert len(card.thresholds) == 39
    assert card.validation["size"] == 5000
    assert DEFAULT_WEIGHTS.stat().st_size < 15e6


def test_classifies_held_out_cifar10_images_well_above_chance(shared_cifar10: Path) -> None:
    model, card = load_model("default")
    # The card names the pool its validation split was carved from: ../shared's is that pool, so "val"
    # here is the held-out split, not images the model trained on.
    assert card.validation_pool is not None
    val = load_split(shared_cifar10, "val", classes=tuple(card.classes), expect_pool=card.validation_pool)
    sample = val.subset(torch.arange(0, len(val), 16))  # ~300 images the model never trained on
    probs = exit_probabilities(model, sample, card.mean, card.std)
    accuracy = [(p.argmax(1) == sample.labels).float().mean().item() for p in probs]
    assert len(sample) >= 300
    assert min(accuracy) > 0.5, accuracy  # chance is 0.1
    assert accuracy[-1] >= accuracy[0] - 0.05  # deeper exits are not worse
