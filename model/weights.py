"""Weights in safetensors (never pickle) beside a JSON model card that says everything a user of
the weights needs: architecture, classes, preprocessing, per-exit cost and accuracy, and the
fitted budgeted-batch thresholds.

``model.safetensors`` pairs with ``model.json``. Loading rebuilds the network from the card and
refuses, naming the difference, when the tensors do not fit it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from model.config import MSDNetConfig
from model.flops import exit_costs
from model.msdnet import MSDNet

__all__ = [
    "DEFAULT_WEIGHTS",
    "CardMismatchError",
    "ExitInfo",
    "ModelCard",
    "ThresholdSet",
    "card_path",
    "load_model",
    "new_card",
    "resolve_weights",
    "save_model",
]

CARD_FORMAT = "anytime-msdnet/1"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "msdnet-cifar10.safetensors"


class CardMismatchError(ValueError):
    """The weights file does not fit the architecture its card describes."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExitInfo(_Frozen):
    exit: int
    mflops: float = Field(description="cumulative multiply-adds to reach this exit, millions")
    params: int = Field(description="cumulative parameters up to this exit")
    val_accuracy: float | None = None


class ThresholdSet(_Frozen):
    """Confidence thresholds for one point p of the budgeted-batch protocol."""

    p: float
    thresholds: list[float] = Field(description="one per exit but the last")
    val_avg_mflops: float
    val_accuracy: float


class ModelCard(_Frozen):
    format: str = CARD_FORMAT
    preset: str
    config: dict
    classes: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    exits: list[ExitInfo]
    validation: dict = Field(default_factory=dict, description="how the validation split was carved")
    thresholds: list[ThresholdSet] = Field(default_factory=list)
    training: dict = Field(default_factory=dict)

    @property
    def msdnet_config(self) -> MSDNetConfig:
        return MSDNetConfig.from_dict(self.config)

    @property
    def validation_pool(self) -> tuple[int, str] | None:
        """(size, fingerprint) of the images the validation split was carved from, where the card
        records it (``load_split(expect_pool=...)`` refuses any other pool for train and val)."""
        v = self.validation
        if "pool_size" in v and "pool_fingerprint" in v:
            return int(v["pool_size"]), str(v["pool_fingerprint"])
        return None

    @property
    def exit_mflops(self) -> list[float]:
        return [e.mflops for e in self.exits]


def new_card(
    preset: str,
    model: MSDNet,
    classes: list[str] | tuple[str, ...],
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
) -> ModelCard:
    """A card for an untrained (or just-trained) model; accuracies and thresholds come later."""
    if len(classes) != model.config.num_classes:
        raise ValueError(f"{len(classes)} class names for a {model.config.num_classes}-class model")
    return ModelCard(
        preset=preset,
        config=model.config.to_dict(),
        classes=list(classes),
        input_size=model.config.input_size,
        mean=list(mean),
        std=list(std),
        exits=[ExitInfo(exit=c.exit, mflops=round(c.mflops, 4), params=c.params) for c in exit_costs(model)],
    )


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def resolve_weights(weights: str | Path) -> Path:
    """``"default"`` means the CIFAR-10 model shipped inside the package."""
    return DEFAULT_WEIGHTS if str(weights) == "default" else Path(weights)


def save_model(model: MSDNet, card: ModelCard, weights: str | Path) -> Path:
    path = Path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": CARD_FORMAT, "preset": card.preset})
    card_path(path).write_text(card.model_dump_json(indent=2) + "\n")
    return path


def load_card(weights: str | Path) -> ModelCard:
    path = card_path(resolve_weights(weights))
    if not path.exists():
        raise FileNotFoundError(f"model card {path} not found beside the weights")
    return ModelCard.model_validate_json(path.read_text())


def load_model(weights: str | Path = "default", device: str | torch.device = "cpu") -> tuple[MSDNet, ModelCard]:
    """Rebuild the model its card describes and load the tensors, checking that they agree."""
    path = resolve_weights(weights)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} not found")
    card = load_card(path)
    try:
        config = card.msdnet_config
    except (TypeError, ValueError, KeyError) as exc:  # a key missing from, or unknown to, the config
        raise CardMismatchError(f"card {card_path(path).name} has an unusable config: {exc}") from exc
    if len(card.classes) != config.num_classes:
        raise CardMismatchError(f"card lists {len(card.classes)} classes but its config says {config.num_classes}")
    model = MSDNet(config)
    tensors = load_file(str(path))
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"{len(missing)} tensors missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
    for key in sorted(set(expected) & set(tensors)):
        if tuple(expected[key].shape) != tuple(tensors[key].shape):
            problems.append(
                f"{key} has shape {tuple(tensors[key].shape)}, card's architecture needs {tuple(expected[key].shape)}"
            )
            break
    if problems:
        raise CardMismatchError(
            f"{path.name} does not fit its card (preset {card.preset}, {config.num_classes} classes): "
            + "; ".join(problems)
        )
    if len(card.exits) != model.num_exits:
        raise CardMismatchError(f"card lists {len(card.exits)} exits, the architecture has {model.num_exits}")
    short = [t.p for t in card.thresholds if len(t.thresholds) != model.num_exits - 1]
    if short:  # budgeted batch would index past them once an image reached the missing exit
        raise CardMismatchError(
            f"card's threshold sets for p={short[:3]} do not hold one threshold per exit but the last "
            f"({model.num_exits - 1})"
        )
    model.load_state_dict(tensors)
    model.eval()
    return model.to(device), card
