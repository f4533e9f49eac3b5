"""Per-exit cost (multiply-adds and parameters) by the official MSDNet counter's convention.

The official counter walks one forward pass of a single image and charges every leaf module as it
runs: a Conv2d costs C_in*C_out*k_h*k_w*H_out*W_out/groups (one multiply-add = 1, bias free),
a ReLU one op per element, a pooling layer k^2 per output element, a Linear in*out + out, and
BatchNorm nothing. ``torch.utils.flop_counter.FlopCounterMode`` counts differently: it reports
FLOPs as 2 per multiply-add, counts only matrix-like ops (conv, matmul) and ignores elementwise
ops, pooling and the Linear bias. We count with forward hooks so the figures match the paper's
tables, and the tests cross-check the conv/linear part against ``FlopCounterMode`` / 2.

Cost to reach exit k is cumulative: every block and every earlier exit head, because an anytime
caller really pays for those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.msdnet import MSDNet

__all__ = ["ExitCost", "counting_ops", "exit_costs", "module_ops"]


@dataclass(frozen=True)
class ExitCost:
    exit: int
    mflops: float  # cumulative multiply-adds, millions
    params: int  # cumulative parameters of everything run so far


def module_ops(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> float:
    """Multiply-adds one leaf module charged for one call (the static baselines count the same way)."""
    if isinstance(module, nn.Conv2d):
        h_out, w_out = output.shape[-2:]
        k_h, k_w = module.kernel_size
        return module.in_channels * module.out_channels * k_h * k_w * h_out * w_out / module.groups
    if isinstance(module, nn.ReLU):
        return float(output[0].numel())
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return float(output[0].numel() * k * k)
    if isinstance(module, nn.Linear):
        return float(module.in_features * module.out_features + module.out_features)
    return 0.0


@contextmanager
def counting_ops(model: nn.Module, hook: Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]) -> Iterator[None]:
    """Call ``hook`` after every leaf module runs, with the model in eval mode; restores both on exit."""
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def exit_costs(model: MSDNet) -> list[ExitCost]:
    """Cumulative multiply-adds and parameters up to each exit, for one image."""
    size = model.config.input_size
    ops = 0.0
    seen: set[int] = set()
    params = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal ops, params
        ops += module_ops(module, inputs, output)
        if id(module) not in seen:
            seen.add(id(module))
            params += sum(p.numel() for p in module.parameters(recurse=False))

    with counting_ops(model, hook):
        costs = []
        param = next(model.parameters())
        image = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
        for out in model.iter_exits(image):
            costs.append(ExitCost(exit=out.exit, mflops=ops / 1e6, params=params))
        return costs
