"""Per-block latency prediction from recent measurements (Clockwork's rule, made self-healing).

For each (block, batch size) the model keeps the last ``window`` timings with the time they were
taken, and predicts a high percentile of the recent ones. The engine consults it before starting a
block and does not start one predicted to end after its deadline.

A pure "p99 of the last N runs" has a trap: a block that is predicted too slow never runs again,
so its one bad sample is never replaced and the block stays skipped forever. Samples therefore
age: once every sample is older than ``horizon_s``, the prediction falls back to their median, so a
single outlier stops counting, the block runs again and fresh measurements take over.

Unmeasured batch sizes borrow the nearest measured one, scaled up linearly when larger
(pessimistic, so an unknown size never overruns a tick).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LatencyModel", "RecentSeconds"]


class RecentSeconds:
    """The last ``window`` durations, each with when it was taken, and a high percentile of the
    recent ones. Not locked: its owner serialises access."""

    def __init__(self, window: int, quantile: float, horizon_s: float, clock: Callable[[], float]) -> None:
        if not 0 < quantile <= 1:
            raise ValueError("quantile must be in (0, 1]")
        self.quantile = quantile
        self.horizon_s = horizon_s
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)  # (taken_at, seconds)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, seconds: float) -> None:
        self._samples.append((self.clock(), seconds))

    def recent(self) -> int:
        """How many samples are younger than ``horizon_s``."""
        cutoff = self.clock() - self.horizon_s
        return sum(1 for t, _ in self._samples if t >= cutoff)

    def estimate(self) -> float | None:
        """The ``quantile`` of the samples younger than ``horizon_s``; their median once all are older
        (so one outlier stops counting); None before the first sample."""
        if not self._samples:
            return None
        cutoff = self.clock() - self.horizon_s
        recent = sorted(s for t, s in self._samples if t >= cutoff)
        if not recent:
            return statistics.median(s for _, s in self._samples)
        # Nearest-rank percentile: with few samples this is the max, erring on the safe side.
        return recent[min(len(recent) - 1, max(0, math.ceil(self.quantile * len(recent)) - 1))]


class LatencyModel:
    def __init__(
        self,
        window: int = 20,
        quantile: float = 0.99,
        default_s: float = 0.005,
        horizon_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < quantile <= 1:
            raise ValueError("quantile must be in (0, 1]")
        self.window = window
        self.quantile = quantile
        self.default_s = default_s  # used only before anything at all was measured for a block
        self.horizon_s = horizon_s
        self.clock = clock
        self._timings: dict[tuple[int, int], RecentSeconds] = {}
        self._lock = threading.Lock()

    def record(self, block: int, batch_size: int, seconds: float) -> None:
        with self._lock:
            timings = self._timings.get((block, batch_size))
            if timings is None:
                timings = self._timings[(block, batch_size)] = RecentSeconds(
                    self.window, self.quantile, self.horizon_s, self.clock
                )
            timings.add(seconds)

    def predict(self, block: int, batch_size: int) -> float:
        """Predicted seconds for ``block`` (0-based) on a batch of ``batch_size``."""
        with self._lock:
            timings = self._timings.get((block, batch_size))
            if timings:
                return timings.estimate()  # type: ignore[return-value]  # (not empty)
            known = [(b, t) for (blk, b), t in self._timings.items() if blk == block and t]
            if not known:
                return self.default_s
            nearest_size, nearest = min(known, key=lambda item: (abs(item[0] - batch_size), -item[0]))
            estimate = nearest.estimate() or self.default_s
        return estimate * max(1.0, batch_size / nearest_size)

    def predict_total(self, first_block: int, last_block: int, batch_size: int) -> float:
        """Predicted seconds for blocks ``first_block..last_block`` inclusive."""
        return sum(self.predict(b, batch_size) for b in range(first_block, last_block + 1))

    def known(self) -> dict[tuple[int, int], int]:
        """Number of samples held per (block, batch size), for tests and diagnostics."""
        with self._lock:
            return {k: len(v) for k, v in self._timings.items()}
