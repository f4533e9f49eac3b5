"""The anytime-against-static benchmark's scoring: deepest exit in time, static answers only in time."""

from __future__ import annotations

from bench.anytime_vs_static import _verdict, accuracy_by_deadline, verdicts


def test_scoring_by_deadline() -> None:
    labels = [1, 2]
    # Image 0: exit 1 (wrong) at 3 ms, exit 2 (right) at 8 ms. Image 1: exit 1 (right) at 1 ms, exit 2 (wrong) at 4 ms.
    anytime = [([0.003, 0.008], [0, 1]), ([0.001, 0.004], [2, 0])]
    static = {"fast": [(0.0015, 1), (0.0015, 0)], "slow": [(0.012, 1), (0.012, 2)]}
    figures = accuracy_by_deadline(anytime, static, labels, deadlines_ms=(2, 5, 10, 20))
    # At 5 ms image 0 has only its wrong exit 1 and image 1 its wrong exit 2.
    assert figures["msdnet"] == [0.5, 0.0, 0.5, 0.5]
    assert figures["msdnet_mean_exit"] == [0.5, 1.5, 2.0, 2.0]
    assert figures["static"] == {"fast": [0.5, 0.5, 0.5, 0.5], "slow": [0.0, 0.0, 0.0, 1.0]}
    holds = [v["holds"] for v in verdicts(figures)]
    assert holds == [True, False, True, False]


def test_a_deadline_nobody_meets_is_not_counted_as_a_win() -> None:
    figures = accuracy_by_deadline([([0.003], [1])], {"fast": [(0.0025, 1)]}, [1], deadlines_ms=(1, 5))
    rows = verdicts(figures)
    assert [r["vacuous"] for r in rows] == [True, False]
    assert _verdict(rows[0]) == "no model answers" and _verdict(rows[1]) == "holds"
