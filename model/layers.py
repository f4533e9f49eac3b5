"""MSDNet building blocks, shaped as the official code shapes them.

Every stage of the network maps a list of per-scale feature maps (finest first) to a new list,
so a block is just a sequence of stages and inference can stop between any two of them.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from model.config import MSDNetConfig

__all__ = ["ExitHead", "FirstLayer", "MSDLayer", "Transition"]


class _ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, *, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class _ConvBranch(nn.Sequential):
    """[1x1 bottleneck] -> 3x3 conv, each followed by BN and ReLU.

    The bottleneck is capped at the input width, as in the official code (``min(nIn, bn*nOut)``).
    """

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, bottleneck: bool, bn_width: int) -> None:
        layers: list[nn.Module] = []
        inner = in_ch
        if bottleneck:
            inner = min(in_ch, bn_width * out_ch)
            layers += list(_ConvBNReLU(in_ch, inner, kernel_size=1))
        layers += list(_ConvBNReLU(inner, out_ch, kernel_size=3, stride=stride))
        super().__init__(*layers)


class _ScaleUnit(nn.Module):
    """One scale of one layer: concat(x_s, [strided conv of x_{s-1}], conv of x_s).

    On the finest kept scale there is no finer input, so the regular conv adds the whole growth;
    on coarser scales the strided and the regular conv each add half of it.
    """

    def __init__(
        self, same_ch: int, finer_ch: int | None, growth: int, *, bottleneck: bool, bn_same: int, bn_finer: int
    ) -> None:
        super().__init__()
        self.has_finer = finer_ch is not None
        if finer_ch is None:
            self.conv_down = None
            self.conv_normal = _ConvBranch(same_ch, growth, stride=1, bottleneck=bottleneck, bn_width=bn_same)
        else:
            half = growth // 2
            self.conv_down = _ConvBranch(finer_ch, half, stride=2, bottleneck=bottleneck, bn_width=bn_finer)
            self.conv_normal = _ConvBranch(same_ch, half, stride=1, bottleneck=bottleneck, bn_width=bn_same)

    def forward(self, same: Tensor, finer: Tensor | None) -> Tensor:
        if self.conv_down is None:
            return torch.cat([same, self.conv_normal(same)], dim=1)
        assert finer is not None
        return torch.cat([same, self.conv_down(finer), self.conv_normal(same)], dim=1)


class FirstLayer(nn.Module):
    """Seeds every scale from the image: scale s+1 is a strided 3x3 conv of scale s."""

    def __init__(self, config: MSDNetConfig) -> None:
        super().__init__()
        widths = [config.n_channels * g for g in config.gr_factor]
        stem: nn.Module
        if config.variant == "cifar":
            stem = _ConvBNReLU(3, widths[0], kernel_size=3)
        else:
            # The ImageNet stem is the only conv with a bias, as in the official code.
            stem = nn.Sequential(
                nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        scales = [stem]
        for prev, width in itertools.pairwise(widths):
            scales.append(_ConvBNReLU(prev, width, kernel_size=3, stride=2))
        self.scales = nn.ModuleList(scales)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        x = features[0]
        out = []
        for conv in self.scales:
            x = conv(x)
            out.append(x)
        return out


class MSDLayer(nn.Module):
    """One layer of the scales x layers grid; may drop the finest scale(s) it receives.

    ``width`` is the per-unit channel count before the ``gr_factor`` multiplier, as in the paper.
    """

    def __init__(self, config: MSDNetConfig, width: int, in_scales: int, out_scales: int) -> None:
        super().__init__()
        self.in_scales = in_scales
        self.out_scales = out_scales
        n = config.n_scales
        offset = n - out_scales  # index of the finest scale this layer outputs
        gr, bn = config.gr_factor, config.bn_factor
        units = []
        for s in range(offset, n):
            # A finer input exists unless s is the finest scale the layer received.
            has_finer = s > n - in_scales
            units.append(
                _ScaleUnit(
                    width * gr[s],
                    width * gr[s - 1] if has_finer else None,
                    config.growth_rate * gr[s],
                    bottleneck=config.bottleneck,
                    bn_same=bn[s],
                    bn_finer=bn[s - 1] if has_finer else 1,
                )
            )
        self.units = nn.ModuleList(units)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        dropped = self.in_scales - self.out_scales
        out = []
        for i, unit in enumerate(self.units):
            j = i + dropped  # position of this scale in the input list
            out.append(unit(features[j], features[j - 1] if unit.has_finer else None))
        return out


class Transition(nn.Module):
    """1x1 conv per kept scale that shrinks the width after a scale is dropped."""

    def __init__(self, config: MSDNetConfig, in_width: int, out_width: int, out_scales: int) -> None:
        super().__init__()
        offset = config.n_scales - out_scales
        self.convs = nn.ModuleList(
            _ConvBNReLU(in_width * g, out_width * g, kernel_size=1) for g in config.gr_factor[offset:]
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [conv(x) for conv, x in zip(self.convs, features)]


class ExitHead(nn.Module):
    """Classifier on the coarsest scale: two strided 3x3 convs, 2x2 average pool, linear."""

    def __init__(self, config: MSDNetConfig, in_ch: int) -> None:
        super().__init__()
        inner = 128 if config.variant == "cifar" else in_ch
        self.features = nn.Sequential(
            _ConvBNReLU(in_ch, inner, kernel_size=3, stride=2),
            _ConvBNReLU(inner, inner, kernel_size=3, stride=2),
            nn.AvgPool2d(kernel_size=2),
        )
        self.linear = nn.Linear(inner, config.num_classes)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.linear(torch.flatten(self.features(features[-1]), 1))
