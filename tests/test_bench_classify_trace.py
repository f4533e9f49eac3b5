"""The /classify trace splits each late answer between the engine and the hand-off, and its patches
leave the runtime as they found it."""

from __future__ import annotations

import pytest

from bench.classify_trace import summarise, traced_runtime
from service.runtime import Runtime


def _answer(received: float, margin_ms: float, overrun_ms: float, handoff_ms: float, exit_: int = 2) -> dict:
    deadline = received + (50 - margin_ms) / 1000
    finished = deadline + overrun_ms / 1000
    return {
        "received": received,
        "deadline": deadline,
        "finished": finished,
        "answered": finished + handoff_ms / 1000,
        "exit": exit_,
    }


def test_late_answers_are_blamed_on_the_part_that_overran() -> None:
    answers = [
        _answer(0.0, 2, -5, 1),  # on time
        _answer(1.0, 2, -1, 4),  # late by 1 ms: the hand-off outran the 2 ms margin
        _answer(2.0, 2, 3, 0.5),  # late by 1.5 ms: the engine finished past its own deadline
        _answer(3.0, 6, -1, 3, exit_=1),  # on time: a 6 ms margin covered a 3 ms hand-off
    ]
    summary = summarise(answers, 50, pauses=[120.0])
    assert summary["answers"] == 4 and summary["late"] == 2
    assert summary["late_with_handoff_over_margin"] == 1
    assert summary["late_with_engine_past_its_deadline"] == 1
    assert summary["deadline_met_share"] == 0.5 and summary["exit_mean"] == 1.75
    assert summary["margin_ms"]["max"] == pytest.approx(6.0)
    assert summary["full_collections"] == {"count": 1, "longest_ms": 120.0}
    with pytest.raises(RuntimeError, match="no /classify answer"):
        summarise([], 50, pauses=[])


@pytest.mark.parametrize("variant", ["measured", "fixed-2ms"])
def test_the_patches_are_undone(variant: str) -> None:
    import service.runtime as runtime_module

    def patched() -> tuple:
        return Runtime.classify, Runtime._record_handoff, Runtime.response_margin, runtime_module._freeze_heap

    before = patched()
    with traced_runtime(variant, []):
        assert Runtime.classify is not before[0]
        assert (Runtime.response_margin is before[2]) == (variant == "measured")
    assert patched() == before
