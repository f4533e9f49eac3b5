"""MSDNet with true exit-by-exit inference, its cost model, weights and training tools.

The service imports ``config``, ``layers``, ``msdnet``, ``flops``, ``weights`` and ``budget``;
``data``, ``train`` and ``evaluate`` are the training side and are never needed to serve.
Names load on first use so that ``anytime --help`` and the client commands do not pay for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.config import MSDNetConfig, get_config, preset_names
    from model.msdnet import AnytimeStepper, ExitOutput, MSDNet

__all__ = ["AnytimeStepper", "ExitOutput", "MSDNet", "MSDNetConfig", "get_config", "preset_names"]

_HOME = {
    "MSDNetConfig": "model.config",
    "get_config": "model.config",
    "preset_names": "model.config",
    "AnytimeStepper": "model.msdnet",
    "ExitOutput": "model.msdnet",
    "MSDNet": "model.msdnet",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
