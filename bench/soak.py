"""Soak: the service under steady load for minutes, watching its memory, its ticks and its errors.

Leaks in a long-running service show as slowly growing resident memory, and a slow degradation as
missed ticks or failing requests long after start-up; short benchmarks see neither. This runs
``anytime serve`` as a subprocess with 4 synthetic cameras and the default (shipped) model, keeps
one websocket subscriber per camera and 2 closed-loop ``POST /classify`` workers (deadline 50 ms,
real CIFAR-10 JPEGs) busy, and samples the server process's resident set size from
``/proc/PID/status`` (the server's own memory only: the load runs in this process). Growth is
the median of the last minute's samples against the first minute's, after a short warm-up
(model caches, allocator arenas) that is recorded but not compared. The floor: under 5 %.

    python -m bench.soak                 # 10 minutes (the lead's full run)
    python -m bench.soak --minutes 60    # longer
    OMP_NUM_THREADS=1 python -m bench.soak --quick   # 30 s smoke run: proves the script works, measures nothing
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    REPO,
    SHARED,
    add_arguments,
    provenance,
    publish,
    spread,
)
from bench.soak_report import NAME, growth_percent, markdown, metric, plot
from service.app import default_torch_threads

DATASET = SHARED / "datasets" / "cifar10" / "train"
FLOOR_GROWTH_PERCENT = 5.0
CAMERAS = 4
TICK_HZ = 10.0
# After a 503 a closed-loop worker pauses instead of spinning on refusals (as bench.clients does).
BACKOFF_AFTER_503_S = 0.05


# --- the server under test, as a separate process ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config_yaml(cameras: int) -> str:
    lines = [f"tick_hz: {TICK_HZ}", "weights: default", "cameras:"]
    lines += [f"  - {{id: cam{i}, source: synthetic}}" for i in range(cameras)]
    return "\n".join(lines) + "\n"


def _serve_command(config: Path, port: int) -> list[str]:
    """``anytime serve`` from this interpreter's environment (the console script, else the module)."""
    script = Path(sys.executable).parent / "anytime"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
    return [*head, "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB, from /proc (what the kernel charges it, shared pages included)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class ServerProcess:
    """``anytime serve`` in its own process group, its output kept in a log file for post-mortems."""

    def __init__(self, command: list[str], url: str, log_path: Path) -> None:
        self.command, self.url, self.log_path = command, url, log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise RuntimeError(f"the server was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> tuple[float, int | None]:
        """SIGTERM, as a process manager would; (seconds it took to exit, exit code). Killed if it hangs."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                return time.monotonic() - started, None
        self._log.close()
        return time.monotonic() - started, self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# --- load --------------------------------------------------------------------------------------------


def load_images(count: int, seed: int = 0) -> list[bytes]:
    """A seeded sample of the CIFAR-10 JPEGs, read into memory once (disk reads are not the service's)."""
    paths = sorted(DATASET.glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no JPEGs under {DATASET}")
    return [p.read_bytes() for p in random.Random(seed).sample(paths, min(count, len(paths)))]


class ClassifyLoad:
    """``workers`` threads POSTing images back to back; every answer's status, latency and exit is kept."""

    def __init__(self, url: str, images: list[bytes], workers: int, deadline_ms: float) -> None:
        self.url, self.images, self.deadline_ms = url, images, deadline_ms
        self.records: list[tuple[int, float, float | None, int | None, bool | None]] = []
        self.transport_errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(workers)]

    def _work(self, index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self._stop.is_set():
                data = self.images[rng.randrange(len(self.images))]
                started = time.monotonic()
                try:
                    r = client.post(
                        "/classify",
                        params={"deadline_ms": self.deadline_ms},
                        content=data,
                        headers={"content-type": "image/jpeg"},
                    )
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.transport_errors[type(exc).__name__] += 1
                    time.sleep(0.1)
                    continue
                client_ms = (time.monotonic() - started) * 1000
                body = r.json() if r.status_code == 200 else {}
                with self._lock:
                    self.records.append(
                        (r.status_code, client_ms, body.get("elapsed_ms"), body.get("exit"), body.get("deadline_met"))
                    )
                if r.status_code == 503:
                    time.sleep(BACKOFF_AFTER_503_S)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def reset(self) -> None:
        """Forget the warm-up's requests."""
        with self._lock:
            self.records.clear()
            self.transport_errors.clear()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(35)

    def summary(self, seconds: float) -> dict[str, Any]:
        with self._lock:
            records = list(self.records)
        codes = Counter(str(status) for status, *_ in records)
        ok = [r for r in records if r[0] == 200]
        errors = {code: n for code, n in codes.items() if code != "200"}
        return {
            "workers": len(self._threads),
            "deadline_ms": self.deadline_ms,
            "images": len(self.images),
            "requests": len(records),
            "requests_per_s": round(len(records) / seconds, 2) if seconds else None,
            "ok": len(ok),
            "errors": errors,  # by status code; 503 is the documented overload answer, anything else is a fault
            "server_errors_5xx_not_503": sum(n for code, n in errors.items() if code.startswith("5") and code != "503"),
            "transport_errors": dict(self.transport_errors),
            "elapsed_ms": spread([r[2] for r in ok]),
            "client_ms": spread([r[1] for r in ok]),
            "deadline_met_fraction": round(sum(bool(r[4]) for r in ok) / len(ok), 4) if ok else None,
            "exits": dict(sorted(Counter(r[3] for r in ok).items())),
        }


class Subscribers:
    """One websocket subscriber per camera, each in a thread, counting messages and lost tick numbers."""

    def __init__(self, url: str, cameras: list[str]) -> None:
        self.url = url.replace("http://", "ws://", 1)
        self.stats = {camera: {"messages": 0, "ticks_missing": 0, "disconnects": 0} for camera in cameras}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(c,), daemon=True) for c in cameras]

    def _read(self, camera: str) -> None:
        from websockets.sync.client import connect

        stats, last_tick = self.stats[camera], None
        while not self._stop.is_set():
            try:
                with connect(f"{self.url}/ws/cameras/{camera}", open_timeout=10, max_queue=None) as ws:
                    while not self._stop.is_set():
                        try:
                            text = ws.recv(timeout=1.0)
                        except TimeoutError:
                            continue
                        tick = json.loads(text)["tick"]
                        if last_tick is not None and tick > last_tick:
                            stats["ticks_missing"] += tick - last_tick - 1
                        last_tick = tick
                        stats["messages"] += 1
            except Exception:  # the server dropped us: count it, reconnect, go on
                if not self._stop.is_set():
                    stats["disconnects"] += 1
                    time.sleep(0.5)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def reset(self) -> None:
        """Forget the warm-up's counts (the per-camera threads only ever add to these)."""
        for stats in self.stats.values():
            for key in stats:
                stats[key] = 0

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


# --- main --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, NAME)
    parser.add_argument("--minutes", type=float, default=10.0, help="measured duration (default 10)")
    parser.add_argument("--cameras", type=int, default=CAMERAS)
    parser.add_argument("--workers", type=int, default=2, help="closed-loop /classify workers")
    parser.add_argument("--deadline-ms", type=float, default=50.0)
    parser.add_argument("--sample-s", type=float, help="RSS sampling interval (default 5 s, 1 s with --quick)")
    parser.add_argument("--warmup-s", type=float, help="load before sampling (default 30 s, 5 s with --quick)")
    args = parser.parse_args()

    seconds = 30.0 if args.quick else args.minutes * 60
    interval = args.sample_s or (1.0 if args.quick else 5.0)
    warmup = args.warmup_s if args.warmup_s is not None else (5.0 if args.quick else 30.0)
    window = min(60.0, seconds / 3)  # "the first and the last minute"; a third of a shorter run
    meta = provenance(f"bench.{NAME}")
    images = load_images(500 if args.quick else 5000)
    cameras = [f"cam{i}" for i in range(args.cameras)]

    with tempfile.TemporaryDirectory(prefix="anytime-soak-") as tmp:
        config, port = Path(tmp) / "soak.yaml", _free_port()
        config.write_text(_config_yaml(args.cameras))
        url = f"http://127.0.0.1:{port}"
        command = _serve_command(config, port)
        print(f"soak: starting {' '.join(command)}", flush=True)
        server = ServerProcess(command, url, Path(tmp) / "server.log")
        try:
            server.wait_ready(timeout=180)
            load = ClassifyLoad(url, images, args.workers, args.deadline_ms)
            subscribers = Subscribers(url, cameras)
            load.start()
            subscribers.start()
            warmup_rss: list[float] = []
            warm_end = time.monotonic() + warmup
            while time.monotonic() < warm_end:
                warmup_rss.append(round(rss_mb(server.proc.pid), 2))
                time.sleep(min(interval, max(0.0, warm_end - time.monotonic())))

            before = httpx.get(url + "/metrics", timeout=10).text
            load.reset()
            subscribers.reset()
            started = time.monotonic()
            times: list[float] = []
            rss: list[float] = []
            while (elapsed := time.monotonic() - started) <= seconds:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"the server died during the soak:\n{server.log_tail()}")
                times.append(round(elapsed, 2))
                rss.append(round(rss_mb(server.proc.pid), 2))
                if len(rss) % max(1, int(60 / interval)) == 0:
                    print(f"soak: {elapsed / 60:5.1f} min  RSS {rss[-1]:.1f} MiB", flush=True)
                time.sleep(max(0.0, started + len(times) * interval - time.monotonic()))
            measured = time.monotonic() - started
            after = httpx.get(url + "/metrics", timeout=10).text
            load.stop()
            subscribers.stop()
            classify = load.summary(measured)
        finally:
            shutdown_s, exit_code = server.stop()
            log_tail = server.log_tail()
        # uvicorn re-raises the SIGTERM it handled once shutdown is complete, so -15 is a clean exit too.
        clean_exit = exit_code in (0, -signal.SIGTERM)
        if not clean_exit:
            print(f"soak: the server did not exit cleanly (code {exit_code}); its log ends with:\n{log_tail}")

    first, last, growth = growth_percent(times, rss, window)
    data: dict[str, Any] = {
        **meta,
        "quick": args.quick,
        "minutes": round(seconds / 60, 2),
        "cameras": args.cameras,
        "tick_hz": TICK_HZ,
        "server_command": shlex.join(["anytime", *command[command.index("serve") :]]).replace(str(config), "soak.yaml"),
        "server_config": _config_yaml(args.cameras),
        "warmup_s": warmup,
        "sample_interval_s": interval,
        "rss_window_s": window,
        "rss_warmup_mb": warmup_rss,
        "rss_t_s": times,
        "rss_mb": rss,
        "rss_first_window_mb": round(first, 2),
        "rss_last_window_mb": round(last, 2),
        "rss_growth_percent": round(growth, 3),
        "floor_growth_percent": FLOOR_GROWTH_PERCENT,
        "floor_met": growth < FLOOR_GROWTH_PERCENT,
        "missed_ticks": metric(after, "anytime_missed_ticks_total") - metric(before, "anytime_missed_ticks_total"),
        "ticks_published": metric(after, "anytime_ticks_total") - metric(before, "anytime_ticks_total"),
        "ws_dropped_messages": metric(after, "anytime_ws_dropped_messages_total")
        - metric(before, "anytime_ws_dropped_messages_total"),
        "websockets": subscribers.stats,
        "classify": classify,
        "server_torch_threads": default_torch_threads(),  # what the server picks: its config sets none
        "shutdown_s": round(shutdown_s, 2),
        "exit_code": exit_code,
        "clean_exit": clean_exit,
    }
    publish(args, NAME, data, markdown, plot)
    print(
        f"soak: RSS {first:.1f} -> {last:.1f} MiB ({growth:+.2f} %, floor < {FLOOR_GROWTH_PERCENT:g} %: "
        f"{'PASS' if data['floor_met'] else 'FAIL'}), missed ticks {data['missed_ticks']:.0f}, "
        f"/classify {classify['requests']} requests, errors {classify['errors'] or 'none'}, "
        f"shutdown {shutdown_s:.2f} s (exit code {exit_code}); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
