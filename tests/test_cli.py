"""The model-side ``anytime`` commands: info, evaluate, batch."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.train import TrainOptions, train
from model.weights import load_card
from service.cli import main


@pytest.fixture(scope="module")
def tiny_weights(cifar10_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-run")
    opts = TrainOptions(
        preset="msdnet-cifar-budgeted",
        data=str(cifar10_python),
        out=str(out),
        epochs=1,
        batch_size=32,
        lr=0.05,
        schedule="cosine",
        val_size=40,
        bf16=False,
    )
    return train(opts)


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_info_preset_matches_the_papers_table(capsys: pytest.CaptureFixture[str]) -> None:
    report = _run_json(capsys, "info", "--preset", "msdnet-cifar-anytime", "--classes", "100", "--json")
    assert report["preset"] == "msdnet-cifar-anytime"
    assert [e["mflops"] for e in report["exits"]] == pytest.approx(
        [15.14, 25.51, 37.10, 46.33, 57.34, 66.96, 75.94], rel=0.01
    )
    assert report["params"] == pytest.approx(3.07e6, rel=0.01)
    assert report["exits"][-1]["params"] == report["params"]
    imagenet = _run_json(capsys, "info", "--preset", "msdnet-imagenet-step4", "--json")
    assert [e["mflops"] for e in imagenet["exits"]] == pytest.approx([340, 685, 1008, 1254, 1361], rel=0.01)
    assert imagenet["params"] == pytest.approx(23.96e6, rel=0.01)


def test_info_weights_and_unknown_preset(capsys: pytest.CaptureFixture[str], tiny_weights: Path) -> None:
    report = _run_json(capsys, "info", "--weights", str(tiny_weights), "--json")
    assert report["preset"] == "msdnet-cifar-budgeted" and len(report["exits"]) == 5
    assert main(["info", "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_evaluate_reports_both_curves(
    capsys: pytest.CaptureFixture[str], tiny_weights: Path, cifar10_python: Path, tmp_path: Path
) -> None:
    plot = tmp_path / "curve.png"
    result = _run_json(
        capsys,
        "evaluate",
        "--weights",
        str(tiny_weights),
        "--data",
        str(cifar10_python),
        "--split",
        "test",
        "--json",
        "--plot",
        str(plot),
    )
    assert result["images"] == 40
    assert [set(e) >= {"exit", "mflops", "accuracy"} for e in result["exits"]] == [True] * 5
    assert len(result["budgeted"]) == 39
    for point in result["budgeted"]:
        assert set(point) >= {"p", "avg_mflops", "accuracy", "ms_per_image"}
        assert point["avg_mflops"] <= result["exits"][-1]["mflops"] + 1e-6
    assert cv2.imread(str(plot)) is not None


def test_batch_classifies_a_folder_under_a_budget(
    capsys: pytest.CaptureFixture[str], tiny_weights: Path, image_folder: Path
) -> None:
    report = _run_json(
        capsys, "batch", str(image_folder), "--weights", str(tiny_weights), "--budget-mflops", "30", "--json"
    )
    assert report["totals"]["images"] == 180
    # The chosen thresholds are the most accurate set whose validation cost fits the budget.
    card = load_card(tiny_weights)
    fitting = [t for t in card.thresholds if t.val_avg_mflops <= 30]
    chosen = next(t for t in card.thresholds if t.p == report["totals"]["p"])
    assert chosen.val_avg_mflops <= 30 and chosen.val_accuracy == max(t.val_accuracy for t in fitting)
    assert {"path", "label", "confidence", "exit"} <= set(report["images"][0])
    assert main(["batch", str(image_folder), "--weights", str(tiny_weights), "--budget-mflops", "1"]) == 2
    assert "below exit 1's cost" in capsys.readouterr().err


def test_batch_skips_undecodable_files(capsys: pytest.CaptureFixture[str], tiny_weights: Path, tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    report = _run_json(
        capsys, "batch", str(tmp_path), "--weights", str(tiny_weights), "--budget-mflops", "100", "--json"
    )
    assert report["totals"]["images"] == 1 and report["skipped"] == [str(tmp_path / "broken.jpg")]
    # The text report names what it skipped too, instead of dropping it silently.
    assert main(["batch", str(tmp_path), "--weights", str(tiny_weights), "--budget-mflops", "100"]) == 0
    out, err = capsys.readouterr()
    assert "ok.png" in out and "1 images, 1 skipped" in out
    assert f"skipped {tmp_path / 'broken.jpg'}: not a decodable image" in err
