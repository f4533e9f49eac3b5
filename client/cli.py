"""The client-side subcommands of ``anytime``: ``classify`` (images, one by one or as a budgeted batch)
and ``watch`` (a live camera).

Only the light client package is imported, inside each command, so these work on a machine that has
neither torch nor the service installed. The server address and token come from ``--url``/``--token``,
else ``ANYTIME_URL``/``ANYTIME_TOKEN``, read when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from client.messages import BatchClassifyResponse, CameraPrediction, ClassifyResponse

__all__ = ["add_commands"]

DEFAULT_URL = "http://127.0.0.1:8000"  # = client.http.DEFAULT_URL, not imported so that --help stays instant


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cl = sub.add_parser("classify", help="classify images on a running service, under a deadline or a budget")
    cl.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG or WebP files")
    cl.add_argument(
        "--deadline-ms", type=float, help="answer each image by this deadline (default 50; with a budget 10000)"
    )
    cl.add_argument("--exit", type=int, help="run exactly to exit K instead of as deep as the deadline allows")
    cl.add_argument(
        "--budget-mflops",
        type=float,
        help="send the images as one budgeted batch (POST /classify/batch): average multiply-adds per image",
    )
    _add_connection_args(cl)
    cl.add_argument("--json", action="store_true", help="print the service's JSON answer")
    cl.set_defaults(func=cmd_classify)

    wa = sub.add_parser("watch", help="print a camera's live predictions, one line per tick")
    wa.add_argument("camera", help="camera id (see GET /cameras)")
    _add_connection_args(wa)
    wa.add_argument("--json", action="store_true", help="one JSON message per line")
    wa.add_argument("--count", type=int, help="stop after N messages")
    wa.set_defaults(func=cmd_watch)


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"service address (default: $ANYTIME_URL or {DEFAULT_URL})")
    parser.add_argument("--token", help="bearer token (default: $ANYTIME_TOKEN)")


def _given(value: float | None, default: float) -> float:
    """The flag's value if given, even 0 (which the server refuses with a clear 422), else the default."""
    return default if value is None else value


def _url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("ANYTIME_URL") or DEFAULT_URL)


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("ANYTIME_TOKEN") or None


def _fail(command: str, exc: Exception, code: int = 1) -> int:
    print(f"anytime {command}: error: {exc}", file=sys.stderr)
    return code


def format_classify(r: ClassifyResponse) -> str:
    met = "met" if r.deadline_met else "missed"
    return (
        f"{r.label}  {r.confidence:.3f}  exit {r.exit}/{r.exits_total}  {r.elapsed_ms:.1f} ms  "
        f"deadline {met} ({r.deadline_ms:g} ms)"
    )


def format_prediction(m: CameraPrediction) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(m.published_at)) + f".{int(m.published_at % 1 * 1000):03d}"
    seq = "-" if m.frame_seq is None else str(m.frame_seq)
    label = "-" if m.label is None else m.label
    conf = "  -  " if m.confidence is None else f"{m.confidence:.3f}"
    return f"{stamp}  frame {seq:>6}  {label:<12}  {conf}  exit {m.exit}/{m.exits_total}  {m.camera_state}"


def format_batch(r: BatchClassifyResponse, names: list[str]) -> list[str]:
    lines = [f"{names[i.index]}\t{i.label}\t{i.confidence:.3f}\texit {i.exit}/{r.exits_total}" for i in r.images]
    p = "exit 1 for all" if r.p is None else f"thresholds p={r.p:g}"
    cut = f", {r.cut_by_deadline} cut by the deadline" if r.cut_by_deadline else ""
    lines.append(
        f"{len(r.images)} images, {r.avg_mflops:.2f} MFLOPs per image on average (budget {r.budget_mflops:g}, "
        f"{p}){cut}, {r.elapsed_ms:.0f} ms"
    )
    return lines


def cmd_classify(args: argparse.Namespace) -> int:
    from client.errors import AnytimeError
    from client.http import AnytimeClient

    if args.budget_mflops is not None and args.exit is not None:
        return _fail("classify", ValueError("--exit and --budget-mflops do not go together"), code=2)
    try:
        with AnytimeClient(_url(args), token=_token(args)) as client:
            if args.budget_mflops is not None:
                deadline_ms = _given(args.deadline_ms, 10000)
                batch = client.classify_batch(args.images, args.budget_mflops, deadline_ms=deadline_ms)
                print(batch.model_dump_json() if args.json else "\n".join(format_batch(batch, args.images)))
                return 0
            for image in args.images:
                result = client.classify(image, deadline_ms=_given(args.deadline_ms, 50.0), exit=args.exit)
                prefix = f"{image}\t" if len(args.images) > 1 and not args.json else ""
                print(result.model_dump_json() if args.json else prefix + format_classify(result))
    except AnytimeError as exc:
        return _fail("classify", exc)
    except OSError as exc:  # an image file: a usage error, like the dispatcher's FileNotFoundError
        return _fail("classify", exc, code=2)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from client.errors import AnytimeError

    if args.count is not None and args.count < 1:
        return _fail("watch", ValueError("--count must be at least 1"), code=2)
    seen = 0
    try:
        from client.ws import subscribe_sync  # inside the try: Ctrl-C during a slow first import is still clean

        with subscribe_sync(args.camera, base_url=_url(args), token=_token(args)) as stream:
            for message in stream:
                print(message.model_dump_json() if args.json else format_prediction(message), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how one stops watching, not an error
    except AnytimeError as exc:
        return _fail("watch", exc)
    return 0
