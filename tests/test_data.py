"""Dataset loading in both layouts, the seeded validation split and batch augmentation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from model.data import augment_batch, cutout_mask, load_split, train_val_indices


def test_validation_split_is_seeded_and_disjoint() -> None:
    train_a, val_a = train_val_indices(1000, 100, seed=0)
    train_b, val_b = train_val_indices(1000, 100, seed=0)
    assert torch.equal(val_a, val_b) and torch.equal(train_a, train_b)
    assert len(val_a) == 100 and len(train_a) == 900
    assert not set(val_a.tolist()) & set(train_a.tolist())
    _, val_c = train_val_indices(1000, 100, seed=1)
    assert not torch.equal(val_a, val_c)
    with pytest.raises(ValueError, match="validation size"):
        train_val_indices(10, 10)


def test_cifar_python_format(cifar10_python: Path) -> None:
    train = load_split(cifar10_python, "train", val_size=20)
    val = load_split(cifar10_python, "val", val_size=20)
    test = load_split(cifar10_python, "test")
    assert len(train) == 180 and len(val) == 20 and len(test) == 40
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == ("airplane", "automobile", "bird")


def test_image_folder_resizes_and_labels_by_sorted_folder(image_folder: Path) -> None:
    data = load_split(image_folder, "all")
    assert len(data) == 180
    assert data.images.shape[1:] == (3, 32, 32)
    assert data.classes == ("class_0", "class_1", "class_2")
    with pytest.raises(FileNotFoundError, match="no test split"):
        load_split(image_folder, "test")


def test_cifar_python_classes_are_checked_against_the_model(cifar10_python: Path) -> None:
    """A model must not be scored on classes it does not know (CIFAR-10 weights on CIFAR-100, say), and
    the same classes in another order are renumbered to the model's."""
    with pytest.raises(ValueError, match="classes the model does not know"):
        load_split(cifar10_python, "test", classes=("airplane", "automobile", "cat"))
    plain = load_split(cifar10_python, "test")
    reordered = load_split(cifar10_python, "test", classes=("bird", "airplane", "automobile"))
    assert reordered.classes == ("bird", "airplane", "automobile")
    names = [plain.classes[i] for i in plain.labels]
    assert [reordered.classes[i] for i in reordered.labels] == names
    with pytest.raises(ValueError, match="32x32"):
        load_split(cifar10_python, "test", size=224)


def test_hidden_folders_and_files_are_not_data(image_folder: Path, tmp_path: Path) -> None:
    """``.ipynb_checkpoints`` once became class 0, shifting every label; a macOS ``._x.jpg`` stopped the load."""
    root = tmp_path / "ds"
    shutil.copytree(image_folder, root)
    (root / ".ipynb_checkpoints").mkdir()
    (root / "class_0" / "._0000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    data = load_split(root, "all")
    assert data.classes == ("class_0", "class_1", "class_2") and len(data) == 180


def test_val_refuses_a_pool_other_than_the_one_the_split_was_carved_from(image_folder: Path, tmp_path: Path) -> None:
    """The split is a permutation of positions: one image more, and "val" is mostly other images."""
    val = load_split(image_folder, "val", val_size=20)
    assert val.pool is not None and val.pool[0] == 180
    assert load_split(image_folder, "val", val_size=20, expect_pool=val.pool).labels.equal(val.labels)
    root = tmp_path / "grown"
    shutil.copytree(image_folder, root)
    shutil.copy(root / "class_1" / "0001.jpg", root / "class_1" / "9999.jpg")
    with pytest.raises(ValueError, match="not the pool the model's validation split was carved from"):
        load_split(root, "val", val_size=20, expect_pool=val.pool)
    assert len(load_split(root, "all", expect_pool=val.pool)) == 181  # all and test carve nothing
    # The same class counts but other files at the same positions (another export): refused too.
    renamed = tmp_path / "renamed"
    shutil.copytree(image_folder, renamed)
    (renamed / "class_1" / "0001.jpg").rename(renamed / "class_1" / "zzzz.jpg")
    with pytest.raises(ValueError, match="not the pool"):
        load_split(renamed, "val", val_size=20, expect_pool=val.pool)
    # The same files anywhere on disk are the same pool.
    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    assert load_split(moved, "val", val_size=20, expect_pool=val.pool).labels.equal(val.labels)


def test_shared_cifar10_folder_gives_the_standard_label_order(shared_cifar10: Path) -> None:
    names = sorted(p.name for p in shared_cifar10.iterdir())
    assert names[0] == "airplane" and names[-1] == "truck" and len(names) == 10


def test_augmentation_crops_and_flips_whole_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).view(2, 3, 32, 32).to(torch.uint8)
    out = augment_batch(images, gen)
    assert out.shape == images.shape and out.dtype == torch.uint8
    # Every output is a shifted (maybe mirrored) window of the zero-padded input.
    different = sum(not torch.equal(out[i], images[i]) for i in range(2))
    assert different >= 1
    ones = torch.full((64, 3, 32, 32), 255, dtype=torch.uint8)
    crops = augment_batch(ones, gen)
    zero_rows = (crops == 0).flatten(1).any(1)
    assert zero_rows.any() and not zero_rows.all()  # some crops reach into the padding, not all


def test_cutout_hides_one_square_per_image_clipped_at_the_border() -> None:
    mask = cutout_mask(500, 32, 32, 16, torch.Generator().manual_seed(0))
    assert mask.shape == (500, 1, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    hidden = (mask == 0).flatten(1).sum(1)
    assert hidden.max() == 16 * 16  # a square wholly inside the image
    assert hidden.min() < 16 * 16 and hidden.min() > 0  # some reach past a border and are clipped
    for m in mask[:20, 0]:  # the zeros form one axis-aligned rectangle
        rows, cols = (m == 0).nonzero(as_tuple=True)
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    again = cutout_mask(500, 32, 32, 16, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)  # seeded: a resumed run draws the same holes
