"""``POST /classify`` under closed-loop load: latency against the deadline, exit depth and accuracy.

A real uvicorn server runs the default model with its default synthetic camera ticking (as in
production), and N workers in another process POST held-out CIFAR-10 JPEGs back to back with
``deadline_ms=D``. Latency is taken twice: ``elapsed_ms`` as the server reports it (receipt to
answer) and the client's round trip. Images come from the seeded validation split, so accuracy is
measured on images the model was not trained on.

    python -m bench.classify [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.clients import BACKOFF_AFTER_503_S, Client
from bench.common import (
    SHARED,
    ServerThread,
    add_arguments,
    cpu_seconds,
    figure_caption,
    provenance,
    provenance_markdown,
    publish,
    pyplot,
    save_figure,
    spread,
    use_service_threads,
)

NAME = "classify"
DATASET = SHARED / "datasets" / "cifar10" / "train"
FLOOR = {"deadline_ms": 50, "concurrency": (1, 8), "max_p99_elapsed_ms": 55.0}


def validation_images(limit: int | None) -> list[tuple[str, int]]:
    """(path, label) of the held-out images: the validation split of model.data.load_split, shuffled."""
    from model.data import IMAGE_SUFFIXES, train_val_indices

    classes = sorted(p.name for p in DATASET.iterdir() if p.is_dir())
    items = [
        (str(path), label)
        for label, name in enumerate(classes)
        for path in sorted((DATASET / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    _, val = train_val_indices(len(items))
    # The split's indices are sorted, i.e. grouped by class: shuffle (seeded) so that any prefix,
    # and the workers' round robin, mixes the classes.
    order = np.random.default_rng(0).permutation(val.numpy())
    chosen = [items[i] for i in order.tolist()]
    return chosen[:limit] if limit else chosen


def summarise(records: list[list[Any]], deadline_ms: float, duration: float, exits_total: int) -> dict[str, Any]:
    """Figures of one cell from the client's raw records [status, client_ms, elapsed_ms, exit, correct]."""
    ok = [r for r in records if r[0] == 200]
    elapsed = [r[2] for r in ok]
    exits = np.bincount([r[3] for r in ok], minlength=exits_total + 1)[1:].tolist() if ok else []
    return {
        "requests": len(records),
        "ok": len(ok),
        "status_503": sum(1 for r in records if r[0] == 503),
        "errors": sum(1 for r in records if r[0] not in (200, 503)),
        "answers_per_s": round(len(ok) / duration, 1),
        "elapsed_ms": spread(elapsed),
        "client_round_trip_ms": spread(r[1] for r in ok),
        "deadline_met_share": round(sum(e <= deadline_ms for e in elapsed) / len(ok), 4) if ok else None,
        "client_deadline_met_share": round(sum(r[1] <= deadline_ms for r in ok) / len(ok), 4) if ok else None,
        "exit_mean": round(float(np.mean([r[3] for r in ok])), 3) if ok else None,
        "exit_counts": exits,
        "accuracy": round(sum(bool(r[4]) for r in ok) / len(ok), 4) if ok else None,
    }


def run_cell(url: str, images_file: str, deadline: float, concurrency: int, duration: float, warmup: float) -> dict:
    client = Client(
        "classify",
        url=url,
        images_file=images_file,
        deadline_ms=deadline,
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
    )
    client.wait_ready()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    out = client.result(timeout=duration + warmup + 120)
    cpu_percent = round(100 * (cpu_seconds() - cpu0) / (time.monotonic() - t0), 1)
    return {
        "records": out["records"],
        "client_cpu_percent": round(100 * out["cpu_s"] / duration, 1),
        "cpu": cpu_percent,
    }


def markdown(data: dict[str, Any], quick: bool) -> str:
    n = data["exits_total"]
    rows = [
        "| deadline (ms) | workers | answers | 503 | errors | answers/s | server elapsed p50 / p99 / max (ms) "
        f"| client round trip p50 / p99 (ms) | deadlines met (server / client) | mean exit | answers per exit 1…{n} "
        "| accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in data["results"]:
        e, rt = c["elapsed_ms"], c["client_round_trip_ms"]
        rows.append(
            f"| {c['deadline_ms']:g} | {c['concurrency']} | {c['ok']} | {c['status_503']} | {c['errors']} "
            f"| {c['answers_per_s']} | {e['p50']} / {e['p99']} / {e['max']} | {rt['p50']} / {rt['p99']} "
            f"| {c['deadline_met_share']} / {c['client_deadline_met_share']} | {c['exit_mean']} "
            f"| {' '.join(map(str, c['exit_counts']))} | {c['accuracy']} |"
        )
    verdicts = []
    for check in data["floor"]:
        verdict = "PASS" if check["pass"] else "FAIL"
        verdicts.append(f"concurrency {check['concurrency']}: **{verdict}** (p99 {check['p99_elapsed_ms']} ms)")
    caveat = f" — **{data['duration_s']:g} s per cell: indicative only**" if quick else ""
    return "\n".join(
        [
            "## POST /classify: latency against the deadline under closed-loop load",
            "",
            provenance_markdown(data, quick),
            "",
            f"Default model, one synthetic camera ticking at 10 Hz meanwhile, {data['duration_s']:g} s per cell after "
            f"{data['warmup_s']:g} s of warm-up, {data['images']} held-out CIFAR-10 JPEGs (validation split) POSTed "
            "back to back by N workers (httpx, one process apart from the server). A worker refused with 503 pauses "
            f"{BACKOFF_AFTER_503_S * 1000:g} ms. Server elapsed = `elapsed_ms` of the answer (receipt to answer, "
            "decoding included); client round trip adds HTTP and the client's own event loop.",
            "",
            *rows,
            "",
            f"**Floor** (issue): deadline {FLOOR['deadline_ms']} ms, server elapsed p99 ≤ "
            f"{FLOOR['max_p99_elapsed_ms']:g} ms — " + "; ".join(verdicts) + caveat + ".",
            "",
            f"![latency and exit depth](bench/{NAME}.png)",
        ]
    )


def plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for deadline in sorted({c["deadline_ms"] for c in data["results"]}):
        cells = sorted((c for c in data["results"] if c["deadline_ms"] == deadline), key=lambda c: c["concurrency"])
        n = [c["concurrency"] for c in cells]
        line = left.plot(n, [c["elapsed_ms"]["p99"] for c in cells], "o-", label=f"p99, deadline {deadline:g} ms")[0]
        left.axhline(deadline, color=line.get_color(), lw=0.8, ls="--")
        right.plot(n, [c["exit_mean"] for c in cells], "o-", label=f"deadline {deadline:g} ms")
    left.set(
        xlabel="concurrent workers", ylabel="server elapsed p99 (ms)", xscale="log", title="latency (dashed: deadline)"
    )
    right.set(xlabel="concurrent workers", ylabel="mean exit", xscale="log", title="exit depth of the answers")
    right.set_ylim(0, data["exits_total"] + 0.5)
    ticks = sorted({c["concurrency"] for c in data["results"]})
    for ax in (left, right):
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path, figure_caption(data))


def main() -> None:
    from service.app import create_app
    from service.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    args = parser.parse_args()
    if args.quick:
        cells, duration, warmup, limit = [(50, 1), (50, 8)], 3.0, 0.5, 500
    else:
        cells = [(d, c) for d in (20, 50, 100) for c in (1, 4, 16, 32)] + [(50, 8)]
        duration, warmup, limit = 30.0, 2.0, None
    use_service_threads()
    images = validation_images(limit)
    data: dict[str, Any] = {
        **provenance(f"bench.{NAME}"),
        "quick": args.quick,
        "duration_s": duration,
        "warmup_s": warmup,
        "images": len(images),
    }
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        images_file = str(Path(tmp) / "images.json")
        Path(images_file).write_text(json.dumps(images))
        app = create_app(load_settings())
        with ServerThread(app) as server:
            exits_total = data["exits_total"] = app.state.runtime.classifier.exits_total
            for deadline, concurrency in cells:
                print(f"deadline {deadline} ms x {concurrency} workers, {duration:g} s ...", flush=True)
                cell = run_cell(server.url, images_file, deadline, concurrency, duration, warmup)
                summary = summarise(cell["records"], deadline, duration, exits_total)
                results.append(
                    {
                        "deadline_ms": deadline,
                        "concurrency": concurrency,
                        **summary,
                        "service_cpu_percent": cell["cpu"],
                        "client_cpu_percent": cell["client_cpu_percent"],
                    }
                )
                print(f"  {results[-1]}", flush=True)
                time.sleep(1.0)  # let queues drain before the next cell
    data["results"] = results
    data["floor"] = [
        {
            "concurrency": c["concurrency"],
            "p99_elapsed_ms": c["elapsed_ms"]["p99"],
            "pass": c["elapsed_ms"]["p99"] is not None and c["elapsed_ms"]["p99"] <= FLOOR["max_p99_elapsed_ms"],
        }
        for c in results
        if c["deadline_ms"] == FLOOR["deadline_ms"] and c["concurrency"] in FLOOR["concurrency"]
    ]
    publish(args, NAME, data, markdown, plot)


if __name__ == "__main__":
    main()
