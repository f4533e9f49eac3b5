"""What every benchmark shares: where it ran, how it was invoked, percentiles, the results page, a real server.

Numbers without the machine, the command and the date they came from cannot be compared or reproduced,
so every JSON file and every table carries all three. Each benchmark owns one marked section of
``docs/benchmarks.md`` and rewrites only that, so benchmarks can be rerun one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DOCS",
    "REPO",
    "SHARED",
    "ServerThread",
    "add_arguments",
    "command_line",
    "cpu_seconds",
    "machine",
    "percentile",
    "provenance",
    "provenance_markdown",
    "pyplot",
    "quick_label",
    "spread",
    "update_section",
    "utc_now",
    "write_json",
]

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SHARED = REPO.parent / "shared"
BENCHMARKS_MD = DOCS / "benchmarks.md"

_INTRO = """# Benchmarks

Measurements of the anytime service and its MSDNet model, produced by the scripts in `bench/`
(see [bench/README.md](../bench/README.md)). Every table names the machine, the command and the date it
came from; the raw figures are in `docs/bench/*.json` beside the plots. Each benchmark rewrites only its
own section of this page, so rerunning one leaves the others as they were. A `--quick` run only proves
that a script works end to end: its figures are not measurements.
"""
SECTIONS = (
    "anytime_vs_static",
    "anytime_vs_static_contended",
    "scheduler",
    "classify",
    "classify_trace",
    "overheads",
    "budgeted",
    "soak",
    "inference_paths",
    "exit_times",
)


# --- provenance ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def machine() -> dict[str, Any]:
    """The hardware and software the figures depend on, plus the load at start (a busy machine shows)."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": _ram_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def command_line(module: str) -> str:
    """The exact command, thread-count environment included, as one would retype it."""
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ]
    return shlex.join([*env, "python", "-m", module, *sys.argv[1:]])


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def use_service_threads() -> int:
    """Give this process the torch thread count ``anytime serve`` would pick, before provenance is taken.

    The service sets it at start-up for the whole process; a benchmark that runs the service in a
    thread must report that count, not torch's default."""
    import torch

    from service.app import default_torch_threads

    torch.set_num_threads(default_torch_threads())
    return torch.get_num_threads()


def provenance(module: str) -> dict[str, Any]:
    return {"machine": machine(), "command": command_line(module), "date": utc_now()}


def provenance_markdown(meta: dict[str, Any], quick: bool) -> str:
    m = meta["machine"]
    lines = [
        f"*Machine:* {m['cpu']}, {m['cores_usable']} cores usable, {m['ram_gib']} GiB RAM, torch {m['torch']} "
        f"(intra-op threads: {m['torch_threads']}), load average {m['load_avg_1m_at_start']} at start.  ",
        f"*Command:* `{meta['command']}`  ",
        f"*Date:* {meta['date']}",
    ]
    if quick:
        lines.insert(0, f"> **{quick_label(meta)}** It only shows that the script works end to end.\n")
    return "\n".join(lines)


def quick_label(meta: dict[str, Any]) -> str:
    """The warning a quick run's table and plot carry; it names the load when the machine was busy."""
    m = meta["machine"]
    if m["load_avg_1m_at_start"] >= 0.5 * m["cores_usable"]:
        where = (
            f"under load (load average {m['load_avg_1m_at_start']} on {m['cores_usable']} cores, e.g. a training job)"
        )
        return f"Quick smoke run {where} — not a measurement."
    return "Quick smoke run — not a measurement."


# --- statistics ------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), or None for no values rather than a fake zero."""
    array = np.asarray(list(values), dtype=float)
    return float(np.percentile(array, q)) if array.size else None


def spread(values: Iterable[float], digits: int = 3) -> dict[str, float | None]:
    """p50, p99 and max of a sample: the tail is what a deadline promise is about."""
    array = list(values)

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "p50": rounded(percentile(array, 50)),
        "p99": rounded(percentile(array, 99)),
        "max": rounded(max(array) if array else None),
    }


def cpu_seconds() -> float:
    """CPU time of this process (all threads, torch's included), user plus system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- output ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--quick", action="store_true", help="a few seconds, to prove the script works")
    parser.add_argument("--out", type=Path, default=DOCS / "bench" / f"{name}.json", help="raw figures (JSON)")
    parser.add_argument("--md", type=Path, default=BENCHMARKS_MD, help="results page whose section to update")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def publish(
    args: argparse.Namespace,
    name: str,
    data: dict[str, Any],
    markdown: Callable[[dict[str, Any], bool], str],
    plot: Callable[[dict[str, Any], Path], None],
) -> None:
    """Write a benchmark's results: raw JSON, the plot beside it, and its section of the results page."""
    write_json(args.out, data)
    plot(data, args.out.with_suffix(".png"))
    update_section(args.md, name, markdown(data, args.quick))
    print(f"wrote {args.out}, {args.out.with_suffix('.png')} and {args.md}")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display on a server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_caption(data: dict[str, Any]) -> str:
    """The small title a plot carries: the command that made it, and the quick-mode warning."""
    return data["command"] + (f"\n{quick_label(data)}" if data["quick"] else "")


def save_figure(fig: Any, path: Path, caption: str | None = None) -> None:
    """Lay a figure out, write it and free it (pyplot keeps every open figure alive otherwise)."""
    if caption is not None:
        fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def update_section(md_path: Path, name: str, markdown: str) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``, creating what is missing."""
    md_path = Path(md_path)
    if md_path.exists():
        text = md_path.read_text()
    else:
        empty = [f"{a}\n_Not run yet._\n{b}" for a, b in map(_markers, SECTIONS)]
        text = _INTRO + "\n" + "\n\n".join(empty) + "\n"
    start, end = _markers(name)
    block = f"{start}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text, count=1) if pattern.search(text) else text.rstrip() + f"\n\n{block}\n"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)


# --- a real server ---------------------------------------------------------------------------------


class ServerThread:
    """Serve an app with a real uvicorn server on a free loopback port, in a background thread.

    The benchmark process holds the app, so it can reach ``app.state.runtime`` while real clients
    (other processes) talk to it over TCP exactly as they would in production.
    """

    def __init__(self, app: Any, ready_timeout: float = 120.0) -> None:
        import uvicorn

        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
            ws_ping_interval=20,
            ws_ping_timeout=20,
        )
        self.server = uvicorn.Server(config)
        self._ready_timeout = ready_timeout
        self._thread = threading.Thread(target=self._run, name="bench-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.server.run(sockets=[self._sock])

    def __enter__(self) -> ServerThread:
        import httpx

        self._thread.start()
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline and self._thread.is_alive():
            with contextlib.suppress(httpx.HTTPError):
                if self.server.started and httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("the service did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(20)
        with contextlib.suppress(OSError):
            self._sock.close()
