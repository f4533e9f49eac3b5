"""The MSDNet model and its exit-by-exit stepper.

``MSDNet.forward`` returns every exit's logits at once (what training needs). ``MSDNet.stepper``
returns an :class:`AnytimeStepper` that computes one block only when asked for the next exit, can
be interrupted between any two layers and resumed later, and can drop the samples that already
exited so the rest of the batch goes on cheaper. That is what makes anytime prediction and
budgeted batch classification real rather than simulated from full passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.config import MSDNetConfig
from model.layers import ExitHead, FirstLayer, MSDLayer, Transition

__all__ = ["AnytimeStepper", "ExitOutput", "MSDNet"]

CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class ExitOutput:
    """The logits of one exit for the samples still running (``sample_ids`` index the batch)."""

    exit: int  # 1-based
    logits: Tensor
    sample_ids: Tensor


class MSDNet(nn.Module):
    """Multi-Scale Dense Network (Huang et al., ICLR 2018) with one classifier per block."""

    def __init__(self, config: MSDNetConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Sequential] = []
        heads: list[ExitHead] = []
        width = config.n_channels
        layer = 0
        for n_layers in config.block_layers:
            stages: list[nn.Module] = [FirstLayer(config)] if layer == 0 else []
            for _ in range(n_layers):
                layer += 1
                in_scales, out_scales = config.in_scales(layer), config.out_scales(layer)
                stages.append(MSDLayer(config, width, in_scales, out_scales))
                width += config.growth_rate
                if in_scales > out_scales and config.reduction > 0:
                    reduced = math.floor(config.reduction * width)
                    stages.append(Transition(config, width, reduced, out_scales))
                    width = reduced
            blocks.append(nn.Sequential(*stages))
            heads.append(ExitHead(config, width * config.gr_factor[-1]))
        self.blocks = nn.ModuleList(blocks)
        self.exits = nn.ModuleList(heads)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init over the output fan, as the paper's Lua code does. (The official PyTorch port
        # meant to do the same but only reached top-level modules, so most convs kept the default.)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def forward(self, images: Tensor) -> list[Tensor]:
        """All exits' logits, shallowest first (for training and full evaluation)."""
        features = [images]
        logits = []
        for block, head in zip(self.blocks, self.exits):
            features = block(features)
            logits.append(head(features))
        return logits

    def stepper(self, images: Tensor) -> AnytimeStepper:
        """Start exit-by-exit inference on a batch; nothing is computed until asked."""
        return AnytimeStepper(self, images)

    def iter_exits(self, images: Tensor, should_stop: CancelCheck | None = None) -> Iterator[ExitOutput]:
        """Yield exit 1, exit 2, ... computing each block only when the caller asks for it.

        Stops early (without yielding) when ``should_stop`` returns true between two layers.
        """
        stepper = self.stepper(images)
        while not stepper.finished:
            out = stepper.advance(should_stop)
            if out is None:
                return
            yield out


class AnytimeStepper:
    """Advances one batch through an MSDNet one exit at a time.

    State between calls is the per-scale feature list after the last completed stage, so an
    interrupted block resumes where it stopped instead of starting over. Runs under
    ``torch.inference_mode``: it is an inference tool, training uses ``MSDNet.forward``.
    """

    def __init__(self, model: MSDNet, images: Tensor) -> None:
        self._model = model
        self._features: list[Tensor] = [images]
        self._block = 0  # next exit to produce, 0-based
        self._stage = 0  # next stage inside that block; len(block) means "head next"
        self.sample_ids = torch.arange(images.shape[0])

    @property
    def exits_done(self) -> int:
        return self._block

    @property
    def num_exits(self) -> int:
        return self._model.num_exits

    @property
    def finished(self) -> bool:
        return self._block >= self._model.num_exits

    @property
    def batch_size(self) -> int:
        return int(self.sample_ids.numel())

    @property
    def in_progress(self) -> bool:
        """True when a block was interrupted part-way (some of its layers are already paid for)."""
        return self._stage > 0

    def advance(self, should_stop: CancelCheck | None = None) -> ExitOutput | None:
        """Compute the next exit. Returns None, keeping the work done so far, if ``should_stop``
        says so before any layer or before the exit head."""
        if self.finished:
            raise RuntimeError("all exits have been computed")
        if self.batch_size == 0:
            raise RuntimeError("no samples left in the batch")
        block = self._model.blocks[self._block]
        with torch.inference_mode():
            while self._stage < len(block):
                if should_stop is not None and should_stop():
                    return None
                self._features = block[self._stage](self._features)
                self._stage += 1
            if should_stop is not None and should_stop():
                return None
            logits = self._model.exits[self._block](self._features)
        self._block += 1
        self._stage = 0
        return ExitOutput(exit=self._block, logits=logits, sample_ids=self.sample_ids)

    def keep(self, rows: Tensor) -> None:
        """Continue with only these rows of the current batch (positions, not sample ids).

        ``rows`` may live on any device: the feature maps are on the model's (a GPU, say) while
        ``sample_ids`` stay on the CPU, and callers build row lists from CPU-side bookkeeping."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        self._features = [f.index_select(0, rows.to(f.device)) for f in self._features]
        self.sample_ids = self.sample_ids.index_select(0, rows.to(self.sample_ids.device))
