"""Static baselines: the CIFAR ResNets of He et al. (2016), for the anytime-against-static benchmark.

The project's claim is that MSDNet under a deadline beats any static network of the same training
cost; these are the static networks it is measured against (``bench/anytime_vs_static.py``). They
train with the same code and recipe as MSDNet (``anytime train --preset resnet20``): ``forward``
returns a one-element list, so the joint loss, validation and checkpointing see a one-exit network.

Depth 6n+2: a 3x3 stem with 16 channels, three stages of n basic blocks at 16, 32 and 64 channels
(stride 2 between stages), global average pooling and a linear classifier. Shortcuts that change
shape are the paper's option A (subsample and zero-pad the channels: no parameters), so ResNet-20 has
0.27 M parameters and ResNet-56 0.85 M, as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from model.flops import counting_ops, module_ops

__all__ = ["RESNET_DEPTHS", "CifarResNet", "StaticCard", "load_static", "save_static"]

RESNET_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.stride, self.pad = stride, out_channels - in_channels

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet of depth 6n+2 whose ``forward`` returns ``[logits]`` (one exit)."""

    def __init__(self, depth: int, num_classes: int, input_size: int = 32) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110), not {depth}")
        self.depth, self.num_classes, self.input_size = depth, num_classes, input_size
        self.num_exits = 1
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        blocks, channels = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_BasicBlock(channels, width, 2 if stage and i == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.pool(self.blocks(self.stem(x))).flatten(1)
        return [self.classifier(features)]

    def mflops(self) -> float:
        """Multiply-adds for one image, in millions, by the same convention as MSDNet's counter."""
        ops = 0.0

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            nonlocal ops
            ops += module_ops(module, inputs, output)

        with counting_ops(self, hook), torch.inference_mode():
            self(torch.zeros(1, 3, self.input_size, self.input_size))
        return ops / 1e6


class StaticCard(BaseModel):
    """What a static baseline's weights need beside them: architecture, classes, normalisation, results."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str
    depth: int
    classes: list[str]
    input_size: int = 32
    mean: list[float]
    std: list[float]
    mflops: float
    params: int
    val_accuracy: float | None = None
    training: dict = {}


def save_static(model: CifarResNet, card: StaticCard, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(card.model_dump_json(indent=2) + "\n")
    return path


def load_static(path: str | Path) -> tuple[CifarResNet, StaticCard]:
    path = Path(path)
    card = StaticCard.model_validate_json(path.with_suffix(".json").read_text())
    model = CifarResNet(card.depth, len(card.classes), card.input_size)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), card
