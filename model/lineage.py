"""A model card's training record across warm restarts.

The shipped model was trained in several runs, each starting from the previous run's exported
weights (``anytime train --init-from``), on different machines. A card that described only its last
run would hide most of how the weights came to be, so every export from a warm restart carries the
source card's runs forward and appends its own: ``history`` (one entry per run, oldest first),
``epochs_total`` and ``train_seconds_by_device``.
"""

from __future__ import annotations

import re

import torch

__all__ = ["device_key", "device_name", "extend_lineage", "run_summary"]

_RUN_KEYS = ("epochs", "lr", "batch_size", "schedule", "weight_decay", "cutout", "distill", "init_from")


def device_name(device: torch.device) -> str:
    """What trained the weights, as a person would name it ("NVIDIA H100 80GB HBM3", "cpu")."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


_GPU_MODEL = re.compile(r"\b([A-Z]{1,2}\d{1,4}[A-Z]?)\b")  # H100, A100, H200, L40S, T4


def device_key(name: str) -> str:
    """The key a device's training seconds add up under in ``train_seconds_by_device``: the GPU
    model ("h100") whatever the driver's full name ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"), so
    runs on the same kind of card add up; any other name in lower case ("cpu")."""
    match = _GPU_MODEL.search(name)
    return match.group(1).lower() if match else name.lower()


def run_summary(training: dict, device: str | None = None) -> dict:
    """One ``history`` entry from a card's ``training`` record (``epochs_done``, ``options`` ...)."""
    options = training.get("options", {})
    summary = {key: options[key] for key in _RUN_KEYS if options.get(key) not in (None, "", 0, 0.0)}
    summary["epochs"] = training.get("epochs_done", options.get("epochs"))
    summary["train_seconds"] = training.get("train_seconds")
    summary["device"] = device or training.get("device") or options.get("device", "unknown")
    return summary


def extend_lineage(source: dict, this_run: dict) -> dict:
    """The lineage keys for a warm restart's card: ``source`` is the starting weights' ``training``
    record, ``this_run`` this run's ``run_summary``. A source without a history was one run itself.

    The totals extend the source's own totals rather than re-adding its history, whose entries may
    lack a time (the shipped card's first CPU runs were timed together)."""
    first = run_summary(source)
    by_device = dict(
        source.get("train_seconds_by_device") or {device_key(first["device"]): first["train_seconds"] or 0.0}
    )
    device = device_key(str(this_run.get("device", "unknown")))
    by_device[device] = round(by_device.get(device, 0.0) + float(this_run.get("train_seconds") or 0.0), 1)
    return {
        "history": [*(source.get("history") or [first]), this_run],
        "epochs_total": int(source.get("epochs_total", first["epochs"] or 0)) + int(this_run.get("epochs") or 0),
        "train_seconds_by_device": by_device,
        "train_seconds_total": round(sum(by_device.values()), 1),
    }
