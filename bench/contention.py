"""Competing CPU work for benchmarks that ask how a model copes with a busy machine.

An anytime network's case rests on time that is not known in advance: a machine shared with other
work gives each request a different slice of the CPU. ``competing_processes(n)`` starts ``n`` separate
Python processes that multiply matrices with one torch thread each until the block ends, so the
operating system time-slices the benchmark against them, as it would against any neighbour.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

__all__ = ["BURNER", "competing_processes"]

# One thread of dense float32 matrix products: steady cache and memory traffic, like a neighbour's
# inference or video decoding, not just an idle spin.
BURNER = "import torch\ntorch.set_num_threads(1)\na = torch.randn(256, 256)\nwhile True:\n    a = torch.tanh(a @ a)\n"


@contextlib.contextmanager
def competing_processes(count: int, settle_s: float = 2.0) -> Iterator[list[subprocess.Popen]]:
    """Run ``count`` burner processes for the duration of the block (none for 0); always reaped."""
    procs = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(count)]
    try:
        if procs:
            time.sleep(settle_s)  # let them import torch and reach their loop
            dead = [p.returncode for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a competing process exited at once (exit codes {dead})")
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=10)
