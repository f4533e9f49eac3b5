"""MSDNet with true exit-by-exit inference, its cost model, weights and training tools.

The service imports ``config``, ``layers``, ``msdnet``, ``flops``, ``weights`` and ``budget``;
``data``, ``train`` and ``evaluate`` are the training side and are never needed to serve.
"""

from model.config import MSDNetConfig, get_config, preset_names
from model.msdnet import AnytimeStepper, ExitOutput, MSDNet

__all__ = ["AnytimeStepper", "ExitOutput", "MSDNet", "MSDNetConfig", "get_config", "preset_names"]
