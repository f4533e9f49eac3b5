"""Training: joint loss over all exits, SGD with Nesterov momentum, resumable every epoch.

Everything a run needs to continue after a kill lives in ``OUT/checkpoint.safetensors`` (model,
momentum buffers, the augmentation RNG) and ``OUT/checkpoint.json`` (epoch, options). After every
epoch the run also exports ``OUT/model.safetensors`` with its card (validation accuracy per exit,
fitted budgeted-batch thresholds), so the latest weights are always usable.

The same loop trains the static baselines (``--preset resnet20`` ...; ``model/resnet.py``) with the
same recipe, for the anytime-against-static benchmark.

Beyond the paper's recipe, ``--distill ALPHA`` distils the last exit into the earlier ones
(IMTA, Li et al. 2019): exit k < K learns from (1-ALPHA) * CE + ALPHA * T^2 * KL(last || k); and
``--cutout SIZE`` hides a random square of every training image (DeVries & Taylor 2017).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from model.budget import fit_curve
from model.config import get_config
from model.data import ImageSet, augment_batch, channel_stats, cutout_mask, iterate_batches, load_split, normalize
from model.evaluate import exit_probabilities
from model.lineage import device_name, extend_lineage, run_summary
from model.msdnet import MSDNet
from model.resnet import RESNET_DEPTHS, CifarResNet, StaticCard, save_static
from model.weights import ExitInfo, ThresholdSet, new_card, save_model

__all__ = ["TrainOptions", "build_model", "train"]


@dataclass(frozen=True)
class TrainOptions:
    preset: str
    data: str
    out: str
    epochs: int = 300
    batch_size: int = 64
    lr: float = 0.1
    schedule: str = "step"  # "step" (x0.1 at 50 % and 75 %) or "cosine" (with a 1-epoch warm-up)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    exit_weights: tuple[float, ...] = ()  # empty: uniform, as in the paper
    distill: float = 0.0
    distill_temperature: float = 3.0
    cutout: int = 0  # >0: Cutout with a square of this side (16 is the original's for CIFAR-10)
    bf16: bool = True
    device: str = "cpu"  # "cpu", "cuda", "cuda:1" or "auto" (CUDA when present)
    compile: bool = False  # torch.compile the training step's forward (and so its backward)
    time_budget_s: float = 0.0  # >0: fit the number of epochs to this much training time (see plan_epochs)
    threads: int = 0  # 0: leave torch's default
    seed: int = 0
    limit: int = 0  # train on a seeded random N of the training images (smoke tests)
    init_from: str = ""  # exported weights to start from (a warm restart); fresh optimizer and schedule
    val_size: int = 5000
    extra: dict = field(default_factory=dict)


def lr_at(opts: TrainOptions, progress: float, steps_per_epoch: int) -> float:
    """Learning rate at ``progress`` epochs into the run (fractional)."""
    if opts.schedule == "cosine":
        warmup = min(1.0, opts.epochs / 10)
        if progress < warmup:
            return opts.lr * (progress + 1 / steps_per_epoch) / warmup
        return 0.5 * opts.lr * (1 + math.cos(math.pi * (progress - warmup) / (opts.epochs - warmup)))
    if opts.schedule == "step":
        return opts.lr * (0.1 ** (int(progress >= 0.5 * opts.epochs) + int(progress >= 0.75 * opts.epochs)))
    raise ValueError(f"unknown schedule {opts.schedule!r}; use step or cosine")


def plan_epochs(opts: TrainOptions, done: int, seconds_spent: float, epoch_seconds: list[float]) -> int:
    """How many epochs fit the time budget, re-estimated after every epoch.

    Equal-time comparisons (anytime against static networks) need each model trained for the same
    seconds, not the same epochs. The cosine schedule needs its length in advance, so the length is
    re-planned from the recent epoch time: early on the learning rate barely depends on it
    (cos(pi * small) ~ 1), and by the end the estimate has settled, so the run anneals to ~0 right
    at the budget. The first epoch is ignored once there are others (warm-up, cuDNN autotuning).
    """
    if opts.time_budget_s <= 0:
        return opts.epochs
    recent = epoch_seconds[1:][-2:] or epoch_seconds[-1:]
    per_epoch = max(sum(recent) / len(recent), 1e-3)
    return max(done, done + int((opts.time_budget_s - seconds_spent) / per_epoch))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is present; anything else is passed to torch as is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def joint_loss(logits: list[Tensor], labels: Tensor, opts: TrainOptions) -> Tensor:
    weights = opts.exit_weights or (1.0,) * len(logits)
    if len(weights) != len(logits):
        raise ValueError(f"{len(weights)} exit weights for {len(logits)} exits")
    logits = [z.float() for z in logits]
    teacher = None
    if opts.distill > 0:
        teacher = F.softmax(logits[-1].detach() / opts.distill_temperature, dim=1)
    total = logits[0].new_zeros(())
    for k, (z, w) in enumerate(zip(logits, weights)):
        ce = F.cross_entropy(z, labels)
        if teacher is not None and k < len(logits) - 1:
            t = opts.distill_temperature
            kd = F.kl_div(F.log_softmax(z / t, dim=1), teacher, reduction="batchmean") * t * t
            ce = (1 - opts.distill) * ce + opts.distill * kd
        total = total + w * ce
    return total


class _Progress:
    """One self-overwriting status line on stderr: loss and running accuracy per exit."""

    def __init__(self, total: int, epoch: int, epochs: int) -> None:
        self.total, self.epoch, self.epochs = total, epoch, epochs
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0

    def due(self, done: int) -> bool:
        """Whether a line is owed now; asking first spares a GPU run a host sync every step."""
        return done >= self.total or time.monotonic() - self.last_print >= (0.5 if self.tty else 30.0)

    def update(self, done: int, loss: float, accs: list[float]) -> None:
        now = time.monotonic()
        self.last_print = now
        rate = done / max(now - self.start, 1e-9)
        acc = " ".join(f"{a * 100:.0f}" for a in accs)
        line = f"epoch {self.epoch}/{self.epochs} {done}/{self.total} loss {loss:.3f} acc% [{acc}] {rate:.0f} img/s"
        sys.stderr.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _save_checkpoint(
    out: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, gen: torch.Generator, state: dict
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        buf = optim.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"optim.{i}"] = buf.cpu().contiguous()
    tensors["rng.augment"] = gen.get_state()
    tmp = out / "checkpoint.safetensors.tmp"
    # The state (epoch, timings) travels in the weights file's own metadata: one atomic rename
    # writes both, so a kill can never leave weights of epoch k beside the state of epoch k - 1.
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
    tmp.replace(out / "checkpoint.safetensors")  # atomic: a kill never leaves half a checkpoint
    (out / "checkpoint.json").write_text(json.dumps(state, indent=2) + "\n")  # for people; resume reads the above


def _load_checkpoint(out: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, gen: torch.Generator) -> dict:
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as f:  # one read: tensors and state
        embedded = (f.metadata() or {}).get("state")
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(model.parameters()):
        if f"optim.{i}" in tensors:
            optim.state[p]["momentum_buffer"] = tensors[f"optim.{i}"].to(p.device)
    gen.set_state(tensors["rng.augment"])
    if embedded is not None:
        return json.loads(embedded)
    return json.loads((out / "checkpoint.json").read_text())  # a checkpoint from before the state moved in


def _init_from(model: MSDNet, weights: str, preset: str, classes: list[str]) -> dict:
    """Start from trained weights: a second cosine cycle on a converged model (SGDR-style warm restart)
    buys accuracy without throwing away the CPU hours already spent."""
    from model.weights import load_model

    source, card = load_model(weights)
    if card.preset != preset or list(card.classes) != list(classes):
        raise ValueError(
            f"--init-from {weights} is a {card.preset} model for {len(card.classes)} classes; "
            f"this run trains {preset} for {len(classes)} classes ({classes[:3]}...)"
        )
    model.load_state_dict(source.state_dict())
    done = card.training.get("epochs_done")
    print(json.dumps({"initialised_from": str(weights), "epochs_done_there": done}), flush=True)
    return card.training


def build_model(preset: str, num_classes: int) -> MSDNet | CifarResNet:
    """An MSDNet preset, or a static CIFAR ResNet baseline (``resnet20``, ``resnet56``, ...)."""
    if preset in RESNET_DEPTHS:
        return CifarResNet(RESNET_DEPTHS[preset], num_classes)
    try:
        return MSDNet(get_config(preset, num_classes=num_classes))
    except KeyError as exc:
        raise KeyError(f"{exc.args[0]}; static baselines: {', '.join(RESNET_DEPTHS)}") from None


def input_size(preset: str) -> int:
    """The side of the square images a preset takes: 32 for the CIFAR ones, 224 for ImageNet's."""
    return 32 if preset in RESNET_DEPTHS else get_config(preset, num_classes=10).input_size


def validate(model: MSDNet | CifarResNet, val: ImageSet, mean: tuple, std: tuple) -> tuple[Tensor, list[float]]:
    probs = exit_probabilities(model, val, mean, std)
    accs = [float((p.argmax(1) == val.labels).float().mean()) for p in probs]
    return probs, accs


def train(opts: TrainOptions, resume: bool = False) -> Path:
    """Run (or continue) training; returns the exported weights path."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    torch.manual_seed(opts.seed)
    size = input_size(opts.preset)
    train_set = load_split(opts.data, "train", size=size, val_size=opts.val_size)
    val_set = load_split(opts.data, "val", size=size, val_size=opts.val_size, classes=train_set.classes)
    if opts.limit:
        pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(opts.seed))
        train_set = train_set.subset(pick[: opts.limit].sort().values)
    mean, std = channel_stats(train_set.images)
    model = build_model(opts.preset, len(train_set.classes))
    inherited: dict | None = None  # the starting weights' training record, carried into every export
    if opts.init_from:
        if not isinstance(model, MSDNet):
            raise ValueError("--init-from takes MSDNet weights; static baselines start from scratch")
        inherited = _init_from(model, opts.init_from, opts.preset, train_set.classes)
    model = model.to(device, memory_format=torch.channels_last)
    optim = torch.optim.SGD(
        model.parameters(), lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay, nesterov=True
    )
    gen = torch.Generator().manual_seed(opts.seed)  # augmentation stays on the CPU: same draws on any device
    start_epoch, total_seconds, epoch_seconds = 0, 0.0, []  # all epochs' wall time, across resumes
    if resume and (out / "checkpoint.safetensors").exists():
        state = _load_checkpoint(out, model, optim, gen)
        start_epoch, total_seconds = state["epoch"], state.get("train_seconds", 0.0)
        epoch_seconds = state.get("epoch_seconds", [])
        opts = replace(opts, epochs=state["options"].get("epochs", opts.epochs)) if opts.time_budget_s else opts
        print(json.dumps({"resumed_from_epoch": start_epoch}), flush=True)
    # MSDNet is ~2,000 small operators per step: in eager mode a GPU waits on Python dispatching
    # them (measured on an H200: ~2,400-2,700 images/s, against ~12,600 for ResNet-20). Compiling fuses
    # them; the eager module keeps the parameters, so validation, export and checkpoints are unchanged.
    forward = torch.compile(model) if opts.compile else model
    steps = math.ceil(len(train_set) / opts.batch_size)
    metrics_file = (out / "metrics.jsonl").open("a")
    epoch = start_epoch
    while epoch < opts.epochs:
        model.train()
        bar = _Progress(len(train_set), epoch + 1, opts.epochs)
        seen = 0
        loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
        correct = torch.zeros(model.num_exits, device=device, dtype=torch.long)
        t0 = time.monotonic()
        for step, (images, labels) in enumerate(
            iterate_batches(train_set, opts.batch_size, shuffle=True, generator=gen)
        ):
            lr = lr_at(opts, epoch + step / steps, steps)
            for group in optim.param_groups:
                group["lr"] = lr
            images = augment_batch(images, gen, pad=max(1, size // 8))  # CIFAR's 4 pixels, scaled
            mask = cutout_mask(len(images), *images.shape[2:], opts.cutout, gen) if opts.cutout else None
            if device.type == "cuda":  # pinned: the copy overlaps the GPU's work instead of draining it
                images, labels = images.pin_memory(), labels.pin_memory()
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            x = normalize(images, mean, std)
            if mask is not None:
                x = x * mask.to(device, non_blocking=True)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
                logits = forward(x)
            loss = joint_loss(logits, labels, opts)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            seen += labels.numel()
            loss_sum += loss.detach() * labels.numel()
            correct += torch.stack([(z.argmax(1) == labels).sum() for z in logits])
            if bar.due(seen):
                bar.update(seen, float(loss_sum) / seen, (correct.double() / seen).tolist())
        train_seconds = time.monotonic() - t0
        probs, val_acc = validate(model, val_set, mean, std)
        accuracy = (correct.double() / seen).tolist()
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "loss": round(float(loss_sum) / seen, 5),
            "train_accuracy": [round(a, 5) for a in accuracy],
            "val_accuracy": [round(a, 5) for a in val_acc],
            "images_per_s": round(seen / train_seconds, 1),
            "epoch_seconds": round(time.monotonic() - t0, 1),
        }
        total_seconds += record["epoch_seconds"]
        epoch_seconds.append(record["epoch_seconds"])
        print(json.dumps(record), flush=True)
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        epoch += 1
        opts = replace(opts, epochs=plan_epochs(opts, epoch, total_seconds, epoch_seconds))
        host_model = model if device.type == "cpu" else copy.deepcopy(model).cpu()
        if isinstance(host_model, CifarResNet):
            _export_static(out, host_model, opts, train_set.classes, mean, std, val_acc[0], epoch, total_seconds)
        else:
            trained = {"epochs_done": epoch, "train_seconds": round(total_seconds, 1), "options": asdict(opts)}
            if inherited is not None:
                trained |= extend_lineage(inherited, run_summary(trained, device_name(device)))
            _export(out, host_model, opts, train_set, val_set, mean, std, probs, val_acc, trained)
        model.train()
        state = {
            "epoch": epoch,
            "train_seconds": round(total_seconds, 1),
            "epoch_seconds": epoch_seconds,
            "options": asdict(opts),
        }
        _save_checkpoint(out, model, optim, gen, state)
    metrics_file.close()
    return out / "model.safetensors"


def _export(
    out: Path,
    model: MSDNet,
    opts: TrainOptions,
    train_set: ImageSet,
    val_set: ImageSet,
    mean: tuple,
    std: tuple,
    probs: Tensor,
    val_acc: list[float],
    trained: dict,
) -> None:
    card = new_card(opts.preset, model, train_set.classes, mean, std)
    curve = fit_curve(probs, val_set.labels, card.exit_mflops)
    card = card.model_copy(
        update={
            "exits": [ExitInfo(**{**e.model_dump(), "val_accuracy": round(a, 5)}) for e, a in zip(card.exits, val_acc)],
            "thresholds": [
                ThresholdSet(
                    p=pt.p,
                    thresholds=[min(t, 1e9) for t in pt.thresholds],
                    val_avg_mflops=round(pt.avg_mflops, 4),
                    val_accuracy=round(pt.accuracy, 5),
                )
                for pt in curve
            ],
            "validation": {
                "size": len(val_set),
                "seed": 0,
                "source": "held out from the training split",
                **({"pool_size": val_set.pool[0], "pool_fingerprint": val_set.pool[1]} if val_set.pool else {}),
            },
            # train_seconds: wall time of the epochs, validation included
            "training": {**trained, "options": {k: v for k, v in asdict(opts).items() if k not in ("data", "out")}},
        }
    )
    model.eval()
    save_model(model, card, out / "model.safetensors")


def _export_static(
    out: Path,
    model: CifarResNet,
    opts: TrainOptions,
    classes: list[str],
    mean: tuple,
    std: tuple,
    acc: float,
    epoch: int,
    seconds: float,
) -> None:
    card = StaticCard(
        preset=opts.preset,
        depth=model.depth,
        classes=list(classes),
        mean=list(mean),
        std=list(std),
        mflops=round(model.mflops(), 4),
        params=sum(p.numel() for p in model.parameters()),
        val_accuracy=round(acc, 5),
        training={
            "epochs_done": epoch,
            "train_seconds": round(seconds, 1),
            "options": {k: v for k, v in asdict(opts).items() if k not in ("data", "out")},
        },
    )
    model.eval()
    save_static(model, card, out / "model.safetensors")
