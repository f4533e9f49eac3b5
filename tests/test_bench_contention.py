"""The benchmarks' competing processes really run, and are always reaped."""

from __future__ import annotations

import pytest

from bench.contention import competing_processes


def test_competing_processes_run_for_the_block_and_are_reaped() -> None:
    with competing_processes(2, settle_s=3.0) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)  # alive, burning
    assert all(p.returncode is not None for p in procs)


def test_competing_processes_are_reaped_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError, match="the benchmark failed"), competing_processes(1, settle_s=0.5) as procs:
        raise RuntimeError("the benchmark failed")
    assert procs[0].returncode is not None


def test_no_competing_processes() -> None:
    with competing_processes(0) as procs:
        assert procs == []
