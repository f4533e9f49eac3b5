"""The exit-times benchmark times every exit of the served model, in order."""

from __future__ import annotations

import torch

from bench.exit_times import markdown, time_exits


def test_times_every_exit_in_order_and_renders_a_row_per_batch(tiny_classifier) -> None:
    model = tiny_classifier.model
    rows = [time_exits(model, torch.randn(batch, 3, 32, 32), reps=3, warm=1) for batch in (1, 2)]
    for row in rows:
        assert len(row["ms_to_exit"]) == model.num_exits and row["ms_full_pass"] > 0
        # each repetition reaches exit k+1 after exit k, so the medians keep that order
        assert row["ms_to_exit"] == sorted(row["ms_to_exit"])
    data = {
        "machine": {
            "cpu": "test",
            "cores_usable": 2,
            "ram_gib": 1,
            "torch": "x",
            "torch_threads": 1,
            "load_avg_1m_at_start": 0.0,
        },
        "command": "python -m bench.exit_times",
        "date": "today",
        "quick": True,
        "device_arg": "cpu",
        "device_name": "CPU",
        "timings": rows,
    }
    page = markdown(data, quick=True)
    assert "| 1 | " in page and "| 2 | " in page and "not a measurement" in page
