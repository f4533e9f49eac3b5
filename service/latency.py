"""Per-block latency prediction from recent measurements (Clockwork's rule).

For each (block, batch size) the model keeps the last ``window`` timings and predicts a high
percentile of them. The engine consults it before starting a block and does not start one that
is predicted to end after its deadline. Unmeasured batch sizes borrow the nearest measured one,
scaled up linearly when larger (pessimistic, so an unknown size never overruns a tick).
"""

from __future__ import annotations

import math
import threading
from collections import deque

__all__ = ["LatencyModel"]


class LatencyModel:
    def __init__(self, window: int = 20, quantile: float = 0.99, default_s: float = 0.005) -> None:
        if not 0 < quantile <= 1:
            raise ValueError("quantile must be in (0, 1]")
        self.window = window
        self.quantile = quantile
        self.default_s = default_s  # used only before anything at all was measured for a block
        self._samples: dict[tuple[int, int], deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, block: int, batch_size: int, seconds: float) -> None:
        with self._lock:
            samples = self._samples.setdefault((block, batch_size), deque(maxlen=self.window))
            samples.append(seconds)

    def _percentile(self, samples: deque[float]) -> float:
        ordered = sorted(samples)
        # Nearest-rank percentile: with few samples this is the max, erring on the safe side.
        rank = min(len(ordered) - 1, max(0, math.ceil(self.quantile * len(ordered)) - 1))
        return ordered[rank]

    def predict(self, block: int, batch_size: int) -> float:
        """Predicted seconds for ``block`` (0-based) on a batch of ``batch_size``."""
        with self._lock:
            samples = self._samples.get((block, batch_size))
            if samples:
                return self._percentile(samples)
            known = [(b, s) for (blk, b), s in self._samples.items() if blk == block and s]
            if not known:
                return self.default_s
            nearest_size, nearest = min(known, key=lambda item: (abs(item[0] - batch_size), -item[0]))
            estimate = self._percentile(nearest)
        return estimate * max(1.0, batch_size / nearest_size)

    def predict_total(self, first_block: int, last_block: int, batch_size: int) -> float:
        """Predicted seconds for blocks ``first_block..last_block`` inclusive."""
        return sum(self.predict(b, batch_size) for b in range(first_block, last_block + 1))

    def known(self) -> dict[tuple[int, int], int]:
        """Number of samples held per (block, batch size), for tests and diagnostics."""
        with self._lock:
            return {k: len(v) for k, v in self._samples.items()}
