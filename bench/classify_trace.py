"""Where late ``/classify`` answers lose their time: one cell of closed-loop load, each answer traced.

Every answer is split into the engine's part (when the engine finished the job against the deadline it
planned for, ``received + deadline - margin``) and the hand-off (engine thread to the request's
coroutine), and full garbage collections are timed while the load runs. Variants are alternated, each
round in a fresh service, so they share the host's hour:

* ``measured``: the service as it is (the margin is the measured hand-off's p99, the heap frozen);
* ``fixed-2ms``: a fixed 2 ms margin, and no collection and freeze after start-up, as the service was
  before 2026-11-27.

    python -m bench.classify_trace [--quick] [--rounds 2] [--concurrency 8] [--deadline-ms 50]
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import gc
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.classify import run_cell, validation_images
from bench.common import (
    ServerThread,
    add_arguments,
    figure_caption,
    provenance,
    provenance_markdown,
    publish,
    pyplot,
    save_figure,
    spread,
    use_service_threads,
)

NAME = "classify_trace"
VARIANTS = ("measured", "fixed-2ms")
WARMUP_S = 2.0
_received: contextvars.ContextVar[float] = contextvars.ContextVar("received")


@contextlib.contextmanager
def traced_runtime(variant: str, answers: list[dict[str, float]]) -> Iterator[None]:
    """While inside, the runtime records every answer into ``answers`` (and acts as ``variant``)."""
    import service.runtime as runtime_module
    from service.runtime import Runtime

    saved = [(Runtime, "classify", Runtime.classify), (Runtime, "_record_handoff", Runtime._record_handoff)]
    classify, record = Runtime.classify, Runtime._record_handoff

    async def classify_traced(self: Any, image: Any, deadline_ms: float, received_at: float, **kwargs: Any) -> Any:
        _received.set(received_at)
        return await classify(self, image, deadline_ms, received_at, **kwargs)

    def record_traced(self: Any, job: Any, answered_at: float) -> None:
        answers.append(
            {
                "received": _received.get(),
                "deadline": job.deadline,
                "finished": job.finished_at,
                "answered": answered_at,
                "exit": job.exits_done,
            }
        )
        record(self, job, answered_at)

    Runtime.classify, Runtime._record_handoff = classify_traced, record_traced
    if variant == "fixed-2ms":
        saved += [
            (Runtime, "response_margin", Runtime.response_margin),
            (runtime_module, "_freeze_heap", runtime_module._freeze_heap),
        ]
        Runtime.response_margin = lambda self, deadline_ms: 0.002
        runtime_module._freeze_heap = lambda: None  # (and _thaw_heap, finding nothing frozen, unfreezes nothing)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _full_collections() -> tuple[list[float], Any]:
    """Durations (ms) of generation-2 collections from now on, and the callback to remove later."""
    pauses: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pauses.append((time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(on_gc)
    return pauses, on_gc


def summarise(answers: list[dict[str, float]], deadline_ms: float, pauses: list[float]) -> dict[str, Any]:
    if not answers:
        raise RuntimeError("no /classify answer was traced: see the service's log above")
    ms = {
        key: np.array([a[b] - a[c] for a in answers]) * 1000
        for key, b, c in (
            ("elapsed", "answered", "received"),
            ("handoff", "answered", "finished"),
            ("overrun", "finished", "deadline"),
        )
    }
    margin = np.array([a["received"] - a["deadline"] for a in answers]) * 1000 + deadline_ms
    late = ms["elapsed"] > deadline_ms
    return {
        "answers": len(answers),
        "elapsed_ms": spread(ms["elapsed"].tolist()),
        "deadline_met_share": round(float(1 - late.mean()), 4),
        "exit_mean": round(float(np.mean([a["exit"] for a in answers])), 3),
        "margin_ms": spread(margin.tolist()),
        "handoff_ms": {**spread(ms["handoff"].tolist()), "p90": round(float(np.percentile(ms["handoff"], 90)), 3)},
        "engine_overrun_ms": spread(ms["overrun"].tolist()),
        "late": int(late.sum()),
        "late_with_handoff_over_margin": int((late & (ms["handoff"] > margin)).sum()),
        "late_with_engine_past_its_deadline": int((late & (ms["overrun"] > 0)).sum()),
        "full_collections": {"count": len(pauses), "longest_ms": round(max(pauses, default=0.0), 1)},
    }


def run(variant: str, images_file: str, deadline_ms: float, concurrency: int, duration: float) -> dict[str, Any]:
    from service.app import create_app
    from service.config import load_settings

    answers: list[dict[str, float]] = []
    with traced_runtime(variant, answers), ServerThread(create_app(load_settings())) as server:
        pauses, callback = _full_collections()
        try:
            cell = run_cell(server.url, images_file, deadline_ms, concurrency, duration, warmup=WARMUP_S)
        finally:
            gc.callbacks.remove(callback)
    # The client leaves its warm-up out of its records; so does the trace (the margin is still learning).
    start = min((a["received"] for a in answers), default=0.0) + WARMUP_S
    statuses = [record[0] for record in cell["records"]]
    return {
        **summarise([a for a in answers if a["received"] >= start], deadline_ms, pauses),
        "status_503": statuses.count(503),
        "other_errors": sum(1 for status in statuses if status not in (200, 503)),
    }


def markdown(data: dict[str, Any], quick: bool) -> str:
    rows = [
        "| round | variant | answers | 503 | elapsed p50 / p99 / max (ms) | on time | mean exit | margin p50 (ms) "
        "| hand-off p50 / p90 / p99 (ms) | engine past its deadline, p99 (ms) | late: all / hand-off over margin "
        "/ engine past its deadline | full collections (count, longest ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["runs"]:
        e, h, gcs = r["elapsed_ms"], r["handoff_ms"], r["full_collections"]
        rows.append(
            f"| {r['round']} | {r['variant']} | {r['answers']} | {r['status_503']} "
            f"| {e['p50']} / {e['p99']} / {e['max']} "
            f"| {r['deadline_met_share']} | {r['exit_mean']} | {r['margin_ms']['p50']} "
            f"| {h['p50']} / {h['p90']} / {h['p99']} | {r['engine_overrun_ms']['p99']} "
            f"| {r['late']} / {r['late_with_handoff_over_margin']} / {r['late_with_engine_past_its_deadline']} "
            f"| {gcs['count']}, {gcs['longest_ms']} |"
        )
    caveat = " **Quick run: indicative only.**" if quick else ""
    return "\n".join(
        [
            "## Where late /classify answers lose their time",
            "",
            provenance_markdown(data, quick),
            "",
            f"Deadline {data['deadline_ms']:g} ms, {data['concurrency']} closed-loop workers, {data['duration_s']:g} s "
            "per run, each run a fresh service with its default synthetic camera; variants alternated. Every "
            "answer is traced: the engine's finish against the deadline it planned for (the request's deadline "
            "less the margin) and the hand-off from the engine thread to the request's coroutine. `measured` is "
            "the service as it is (margin = p99 of recent hand-offs, 2 to 20 ms, see `Runtime.response_margin`; "
            "heap frozen at start-up); "
            "`fixed-2ms` is the service before 2026-11-27 (2 ms margin, no collection and freeze after "
            "start-up)." + caveat,
            "",
            *rows,
            "",
            f"![hand-off and elapsed time](bench/{NAME}.png)",
        ]
    )


def plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for variant, marker in zip(VARIANTS, "os"):  # (a variant not run draws nothing)
        runs = [r for r in data["runs"] if r["variant"] == variant]
        ax.plot(
            [r["exit_mean"] for r in runs],
            [r["elapsed_ms"]["p99"] for r in runs],
            marker,
            label=variant,
            ms=8,
        )
    ax.axhline(data["deadline_ms"], color="grey", lw=0.8, ls="--", label="deadline")
    ax.set(xlabel="mean exit of the answers", ylabel="elapsed p99 (ms)", title="each run: depth against the tail")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, figure_caption(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every variant, alternated")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--deadline-ms", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    rounds, duration, limit = (1, 3.0, 300) if args.quick else (args.rounds, args.duration, None)
    use_service_threads()
    data: dict[str, Any] = {
        **provenance(f"bench.{NAME}"),
        "quick": args.quick,
        "deadline_ms": args.deadline_ms,
        "concurrency": args.concurrency,
        "duration_s": duration,
    }
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        images_file = str(Path(tmp) / "images.json")
        Path(images_file).write_text(json.dumps(validation_images(limit)))
        for round_ in range(1, rounds + 1):
            for variant in variants:
                print(f"round {round_}, {variant} ...", flush=True)
                result = run(variant, images_file, args.deadline_ms, args.concurrency, duration)
                runs.append({"round": round_, "variant": variant, **result})
                print(f"  {runs[-1]}", flush=True)
    data["runs"] = runs
    publish(args, NAME, data, markdown, plot)


if __name__ == "__main__":
    main()
