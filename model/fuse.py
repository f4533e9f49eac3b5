"""Fold each BatchNorm into the convolution before it, for inference.

At batch 1 on a CPU, MSDNet's cost is dominated by the number of small operators, not by its
multiply-adds: folding the 128 BatchNorms of the CIFAR model into their convolutions removes a fifth
of the operators and about a fifth of the latency (measured: 23.2 -> 18.5 ms for a full pass, one
thread, under load), with outputs equal to 1e-5. The folded model is for inference only: its
state dict no longer matches the weights file, and training it would be wrong (BatchNorm statistics
are frozen into the weights).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold BatchNorms into their convolutions, in place; returns ``model``.

    Two shapes are recognised: a Conv2d followed by a BatchNorm2d inside an ``nn.Sequential``
    (MSDNet's layers), and the ``convN``/``bnN`` attribute pairs of a torchvision-style residual block
    (the static baselines), whose forward applies ``bnN`` directly to ``convN``'s output; the folded
    ``bnN`` becomes an identity.
    """
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            i = 0
            while i < len(module) - 1:
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    del module[i + 1]
                i += 1
        for name, conv in list(module.named_children()):
            bn_name = "bn" + name.removeprefix("conv")
            bn = getattr(module, bn_name, None)
            if name.startswith("conv") and isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return model
