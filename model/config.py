"""MSDNet architecture settings as a frozen dataclass plus a table of named presets.

The official code threads an argparse namespace through every layer and branches on the dataset
name; here one immutable value describes the whole network, so a checkpoint's card can record it
and rebuild exactly the same model.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PRESETS", "MSDNetConfig", "get_config", "preset_names"]

Variant = Literal["cifar", "imagenet"]
StepMode = Literal["even", "lin_grow"]


@dataclass(frozen=True)
class MSDNetConfig:
    """Everything that determines an MSDNet's layers and weights' shapes.

    ``variant`` picks the stem (3x3 conv for 32x32 inputs, or 7x7/2 conv + max-pool for 224x224)
    and the exit-head width (128 channels for CIFAR, the feature width for ImageNet).
    """

    variant: Variant
    n_blocks: int
    step_mode: StepMode
    step: int
    base: int
    n_channels: int
    growth_rate: int
    gr_factor: tuple[int, ...]
    bn_factor: tuple[int, ...]
    num_classes: int
    bottleneck: bool = True
    reduction: float = 0.5

    def __post_init__(self) -> None:
        if len(self.gr_factor) != len(self.bn_factor):
            raise ValueError("gr_factor and bn_factor need one entry per scale")
        if self.n_blocks < 1 or self.step < 1 or self.base < 1:
            raise ValueError("n_blocks, step and base must be positive")
        if self.num_classes < 2:
            raise ValueError("num_classes must be at least 2")
        if self.step_mode not in ("even", "lin_grow"):
            raise ValueError(f"unknown step_mode {self.step_mode!r}")
        if self.variant not in ("cifar", "imagenet"):
            raise ValueError(f"unknown variant {self.variant!r}")

    @property
    def n_scales(self) -> int:
        return len(self.gr_factor)

    @property
    def input_size(self) -> int:
        return 32 if self.variant == "cifar" else 224

    @property
    def block_layers(self) -> tuple[int, ...]:
        """Number of MSDNet layers in each block (block 1 has ``base``)."""
        steps = [self.base]
        for i in range(1, self.n_blocks):
            steps.append(self.step if self.step_mode == "even" else self.step * i + 1)
        return tuple(steps)

    @property
    def total_layers(self) -> int:
        return sum(self.block_layers)

    @property
    def exit_layers(self) -> tuple[int, ...]:
        """1-based index of the layer each exit reads from."""
        return tuple(itertools.accumulate(self.block_layers))

    def out_scales(self, layer: int) -> int:
        """Scales kept after 1-based ``layer`` under the official "prune max" rule.

        Depth is cut into ``n_scales`` equal segments and segment i keeps the coarsest
        ``n_scales - i`` scales.
        """
        interval = math.ceil(self.total_layers / self.n_scales)
        return self.n_scales - (layer - 1) // interval

    def in_scales(self, layer: int) -> int:
        return self.n_scales if layer <= 1 else self.out_scales(layer - 1)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["gr_factor"] = list(self.gr_factor)
        data["bn_factor"] = list(self.bn_factor)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MSDNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MSDNet config keys: {sorted(unknown)}")
        values = dict(data)
        values["gr_factor"] = tuple(values["gr_factor"])
        values["bn_factor"] = tuple(values["bn_factor"])
        return cls(**values)


_CIFAR = dict(
    variant="cifar",
    step_mode="even",
    step=2,
    base=4,
    n_channels=16,
    growth_rate=6,
    gr_factor=(1, 2, 4),
    bn_factor=(1, 2, 4),
    num_classes=10,
)
_IMAGENET = dict(
    variant="imagenet",
    n_blocks=5,
    step_mode="even",
    n_channels=32,
    growth_rate=16,
    gr_factor=(1, 2, 4, 4),
    bn_factor=(1, 2, 4, 4),
    num_classes=1000,
)

PRESETS: dict[str, MSDNetConfig] = {
    "msdnet-cifar-anytime": MSDNetConfig(n_blocks=7, **_CIFAR),  # type: ignore[arg-type]
    "msdnet-cifar-anytime-10": MSDNetConfig(n_blocks=10, **_CIFAR),  # type: ignore[arg-type]
    "msdnet-cifar-budgeted": MSDNetConfig(
        n_blocks=5,
        **{**_CIFAR, "step_mode": "lin_grow", "step": 1, "base": 1},  # type: ignore[arg-type]
    ),
    "msdnet-imagenet-step4": MSDNetConfig(step=4, base=4, **_IMAGENET),  # type: ignore[arg-type]
    "msdnet-imagenet-step7": MSDNetConfig(step=7, base=7, **_IMAGENET),  # type: ignore[arg-type]
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_config(name: str, num_classes: int | None = None) -> MSDNetConfig:
    """Return the named preset, optionally with a different number of classes."""
    try:
        config = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}") from None
    if num_classes is not None:
        config = dataclasses.replace(config, num_classes=num_classes)
    return config
