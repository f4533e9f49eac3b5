"""Shared fixtures: tiny datasets written on the fly and paths into ../shared."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAR10_FOLDER = SHARED / "datasets" / "cifar10" / "train"
VIDEOS = SHARED / "videos"


def _blobs(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Easy synthetic images: each class is a distinct colour with noise (learnable in seconds)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    palette = rng.integers(0, 256, (classes, 3))
    images = palette[labels][:, :, None, None] + rng.normal(0, 25, (n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="session")
def cifar10_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A miniature CIFAR-10 python folder (5 training batches + test batch) of 3 classes."""
    root = tmp_path_factory.mktemp("cifar-10-batches-py")
    names = ["airplane", "automobile", "bird"]
    with (root / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": names}, f)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        images, labels = _blobs(40, 3, seed=i)
        with (root / name).open("wb") as f:
            pickle.dump(
                {
                    "data": images.reshape(40, -1),
                    "labels": labels.tolist(),
                    "filenames": [f"{j}.png" for j in range(40)],
                },
                f,
            )
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-subfolder dataset of 3 colour classes, 60 JPEGs each, some not 32x32."""
    root = tmp_path_factory.mktemp("folder")
    images, labels = _blobs(180, 3, seed=7)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / f"class_{label}"
        folder.mkdir(exist_ok=True)
        bgr = img.transpose(1, 2, 0)[:, :, ::-1]
        if i % 5 == 0:
            bgr = cv2.resize(bgr, (48, 40))
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), bgr)
    return root


@pytest.fixture(scope="session")
def shared_cifar10() -> Path:
    if not CIFAR10_FOLDER.is_dir():
        pytest.skip("../shared/datasets/cifar10 is not present")
    return CIFAR10_FOLDER


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session")
def tiny_classifier():
    """An untrained 5-exit MSDNet wrapped for the service: real model code, fast to build."""
    import torch

    from model.config import get_config
    from model.msdnet import MSDNet
    from model.weights import new_card
    from service.classifier import AnytimeClassifier

    torch.manual_seed(0)
    model = MSDNet(get_config("msdnet-cifar-budgeted", 10)).eval()
    card = new_card("msdnet-cifar-budgeted", model, CIFAR10_CLASSES, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    return AnytimeClassifier(model, card)


class FakeClock:
    """A monotonic clock the test moves by hand; ``sleep`` just advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
