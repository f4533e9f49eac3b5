"""The soak benchmark's analysis and report: counters from Prometheus text, RSS growth, table, plot.

Kept apart from ``bench.soak`` (which runs the server and the load) so that the report can be read,
and re-rendered from ``docs/bench/soak.json``, without the machinery that produced it.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.common import figure_caption, provenance_markdown, pyplot, save_figure

NAME = "soak"


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` in Prometheus text (0 when absent: counters start absent)."""
    total = 0.0
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            if key.partition("{")[0] == name:
                total += float(value)
    return total


def growth_percent(times: list[float], rss: list[float], window_s: float) -> tuple[float, float, float]:
    """(first window's median, last window's median, growth in %) of the samples taken at ``times``."""
    first = [m for t, m in zip(times, rss) if t <= times[0] + window_s]
    last = [m for t, m in zip(times, rss) if t >= times[-1] - window_s]
    a, b = statistics.median(first), statistics.median(last)
    return a, b, (b - a) / a * 100


def markdown(data: dict[str, Any], quick: bool) -> str:
    c, ws = data["classify"], data["websockets"]
    verdict = "PASS" if data["floor_met"] else "FAIL"
    lines = [
        "## Soak: memory, ticks and errors under steady load",
        "",
        provenance_markdown(data, quick),
        "",
        f"`anytime serve` (default model, {data['cameras']} synthetic cameras at {data['tick_hz']:g} Hz) "
        f"as a subprocess for {data['minutes']:g} min after a {data['warmup_s']:g} s warm-up, with one "
        f"websocket subscriber per camera and {c['workers']} closed-loop `POST /classify` workers "
        f"(deadline {c['deadline_ms']:g} ms, CIFAR-10 JPEGs). RSS of the server process sampled every "
        f"{data['sample_interval_s']:g} s; growth is the last {data['rss_window_s']:g} s median against "
        f"the first {data['rss_window_s']:g} s median. "
        + (
            f"The server ran with {data['server_torch_threads']} torch thread(s) (the header's count is the "
            "load generator's)."
            if "server_torch_threads" in data
            else "The header's thread count is the load generator's; the server ran with its default "
            "`torch_threads` (one less than the cores, at most 4)."
        ),
        "",
        "| RSS first / last window (MiB) | RSS growth | missed ticks | ticks published | ws messages missing "
        "| /classify requests (per s) | errors by code | 5xx (not 503) | deadline met | shutdown |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {data['rss_first_window_mb']:.1f} / {data['rss_last_window_mb']:.1f} "
        f"| {data['rss_growth_percent']:+.2f} % | {data['missed_ticks']:.0f} | {data['ticks_published']:.0f} "
        f"| {sum(s['ticks_missing'] for s in ws.values())} | {c['requests']} ({c['requests_per_s']}) "
        f"| {c['errors'] or 'none'} | {c['server_errors_5xx_not_503']} | {c['deadline_met_fraction']} "
        f"| {data['shutdown_s']:.2f} s, {'clean' if data['clean_exit'] else 'NOT clean'} "
        f"(exit code {data['exit_code']}) |",
        "",
        f"**Floor**: RSS growth under {data['floor_growth_percent']:g} %: **{verdict}** "
        f"({data['rss_growth_percent']:+.2f} %)"
        + (" — **a quick run's windows are seconds long: indicative only**." if quick else "."),
        "",
        f"![server RSS over the soak](bench/{NAME}.png)",
    ]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    """The server's RSS over the run, with the two windows compared and the growth floor."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=110)
    t, rss, window = data["rss_t_s"], data["rss_mb"], data["rss_window_s"]
    ax.plot(t, rss, ".-", lw=1, label="server RSS")
    ax.axvspan(t[0], t[0] + window, alpha=0.12, color="tab:green", label="first window")
    ax.axvspan(t[-1] - window, t[-1], alpha=0.12, color="tab:orange", label="last window")
    limit = data["rss_first_window_mb"] * (1 + data["floor_growth_percent"] / 100)
    ax.axhline(limit, ls="--", color="tab:red", lw=1, label=f"floor: +{data['floor_growth_percent']:g} %")
    ax.set(xlabel="seconds after warm-up", ylabel="RSS (MiB)", ylim=(min(rss) * 0.97, limit * 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path, figure_caption(data))
