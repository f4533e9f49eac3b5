"""The model-side subcommands of ``anytime``: info, train, evaluate, batch.

Heavy imports (torch, OpenCV) happen inside each command so ``anytime --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["add_commands"]


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a batch of 0 would fail deep inside with a bare error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (``nan`` would pass every comparison and mean nothing)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, not {text}")
    return value


def add_commands(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="architecture, parameters and per-exit cost of a preset or weights")
    src = info.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="a named architecture (see --list)")
    src.add_argument("--weights", help="a .safetensors file with its card, or 'default'")
    src.add_argument("--list", action="store_true", help="list the presets")
    info.add_argument("--classes", type=int, help="number of classes (preset only)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=cmd_info)

    tr = sub.add_parser("train", help="train a preset on a dataset (resumable)")
    tr.add_argument("--preset", default="msdnet-cifar-anytime")
    tr.add_argument("--data", required=True, help="CIFAR python folder or image-folder dataset")
    tr.add_argument("--out", required=True, help="folder for checkpoints, metrics and the exported model")
    tr.add_argument("--epochs", type=int, default=300)
    tr.add_argument("--batch-size", type=positive_int, default=64)
    tr.add_argument("--lr", type=float, default=0.1)
    tr.add_argument("--schedule", choices=["step", "cosine"], default="step")
    tr.add_argument("--weight-decay", type=float, default=1e-4)
    tr.add_argument("--exit-weights", default="", help="comma-separated loss weight per exit (default uniform)")
    tr.add_argument("--distill", type=float, default=0.0, help="weight of last-exit distillation, 0 to 1")
    tr.add_argument("--distill-temperature", type=float, default=3.0)
    tr.add_argument("--cutout", type=int, default=0, metavar="SIZE", help="Cutout: hide a random SIZE x SIZE square")
    tr.add_argument("--no-bf16", action="store_true", help="train in float32 (bfloat16 autocast is the default)")
    tr.add_argument("--device", default="cpu", help="cpu, cuda or auto (CUDA when present)")
    tr.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="fit the epoch count to this much training time (equal-time comparisons); --epochs is the first guess",
    )
    tr.add_argument(
        "--compile", action="store_true", help="torch.compile the training forward (fewer, fused kernels on a GPU)"
    )
    tr.add_argument("--threads", type=int, default=0)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--limit", type=int, default=0, help="train on a seeded random subset of N images")
    tr.add_argument("--val-size", type=int, default=5000)
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    tr.add_argument("--init-from", default="", help="start from these exported weights (warm restart)")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="per-exit accuracy and the budgeted-batch curve")
    ev.add_argument("--weights", default="default")
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", choices=["val", "test", "train", "all"], default="val")
    ev.add_argument("--limit", type=int, default=0, help="evaluate the first N images only")
    ev.add_argument("--batch-size", type=positive_int, default=500)
    ev.add_argument("--plot", help="write a PNG of both curves here")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    bt = sub.add_parser("batch", help="classify a folder of images under an average compute budget")
    bt.add_argument("folder")
    bt.add_argument(
        "--budget-mflops", type=positive_float, required=True, help="average multiply-adds per image, millions"
    )
    bt.add_argument("--weights", default="default")
    bt.add_argument("--batch-size", type=positive_int, default=256)
    bt.add_argument("--json", action="store_true")
    bt.set_defaults(func=cmd_batch)


def cmd_info(args: argparse.Namespace) -> int:
    from model.config import get_config, preset_names
    from model.flops import exit_costs
    from model.msdnet import MSDNet
    from model.weights import load_model

    if args.list:
        print("\n".join(preset_names()))
        return 0
    if args.preset:
        model = MSDNet(get_config(args.preset, args.classes))
        name = args.preset
        costs = [(c.exit, c.mflops, c.params) for c in exit_costs(model)]
        accs: list = [None] * len(costs)
    else:
        model, card = load_model(args.weights)
        name = card.preset
        costs = [(e.exit, e.mflops, e.params) for e in card.exits]
        accs = [e.val_accuracy for e in card.exits]
    params = sum(p.numel() for p in model.parameters())
    report = {
        "preset": name,
        "params": params,
        "exits": [{"exit": e, "mflops": round(f, 2), "params": p} for e, f, p in costs],
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{name}: {model.config.num_classes} classes, {params / 1e6:.2f} M params, {len(costs)} exits")
    for (e, f, p), acc in zip(costs, accs):
        extra = f"  val acc {acc * 100:.2f} %" if acc is not None else ""
        print(f"  exit {e:2d}: {f:9.2f} MFLOPs  {p / 1e6:6.2f} M params{extra}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from model.train import TrainOptions, train

    opts = TrainOptions(
        preset=args.preset,
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        exit_weights=tuple(float(w) for w in args.exit_weights.split(",") if w),
        distill=args.distill,
        distill_temperature=args.distill_temperature,
        cutout=args.cutout,
        bf16=not args.no_bf16,
        device=args.device,
        compile=args.compile,
        time_budget_s=args.time_budget,
        threads=args.threads,
        seed=args.seed,
        limit=args.limit,
        val_size=args.val_size,
        init_from=args.init_from,
    )
    path = train(opts, resume=args.resume)
    print(f"exported {path}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from model.data import load_split
    from model.evaluate import evaluate, plot_curves
    from model.weights import load_model

    model, card = load_model(args.weights)
    data = load_split(
        args.data,
        args.split,
        size=card.input_size,
        classes=tuple(card.classes),
        val_size=card.validation.get("size", 5000),
        val_seed=card.validation.get("seed", 0),
        expect_pool=card.validation_pool,
    )
    if args.limit:
        data = data.subset(torch.arange(min(args.limit, len(data))))
    result = evaluate(model, card, data, args.batch_size)
    result = {"weights": str(args.weights), "data": str(args.data), "split": args.split, **result}
    if args.plot:
        plot_curves(result, args.plot, title=f"{card.preset} on {Path(args.data).name} ({args.split})")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{len(data)} images, split {args.split}")
    for e in result["exits"]:
        print(f"  exit {e['exit']}: {e['mflops']:7.2f} MFLOPs  {e['accuracy'] * 100:6.2f} %")
    print("  budgeted (real early exit):")
    for b in result["budgeted"]:
        print(
            f"    p={b['p']:.2f}  {b['avg_mflops']:6.2f} MFLOPs  {b['accuracy'] * 100:6.2f} %  "
            f"{b['ms_per_image']:.3f} ms/image"
        )
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from model.batch import BudgetTooSmallError, classify_folder

    try:
        report = classify_folder(args.folder, args.budget_mflops, weights=args.weights, batch_size=args.batch_size)
    except BudgetTooSmallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
        return 0
    for item in report["images"]:
        print(f"{item['path']}\t{item['label']}\t{item['confidence']:.3f}\texit {item['exit']}")
    for path in report["skipped"]:
        print(f"skipped {path}: not a decodable image", file=sys.stderr)
    t = report["totals"]
    skipped = f", {len(report['skipped'])} skipped" if report["skipped"] else ""
    print(
        f"{t['images']} images{skipped}, {t['avg_mflops']:.2f} MFLOPs per image on average "
        f"(budget {t['budget_mflops']}, thresholds p={t['p']}), {t['wall_s']:.2f} s"
    )
    return 0
