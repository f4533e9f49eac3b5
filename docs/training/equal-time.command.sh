#!/usr/bin/env bash
# Equal-time training for the anytime-against-static benchmark (bench/anytime_vs_static.py):
# an MSDNet (the default model's preset, from scratch) and two static baselines, ResNet-20 and ResNet-56, with one recipe
# (SGD Nesterov, batch 128, lr 0.1 cosine, weight decay 5e-4, random crop + flip, float32/TF32),
# each given the same seconds of training (--time-budget fits the cosine schedule's epoch count to them).
# The three run side by side on one device, so each sees the same machine for the same wall time.
#
#   docs/training/equal-time.command.sh DATA OUTROOT BUDGET_SECONDS [DEVICE]
#
# Run on 2026-11-26 on one NVIDIA H200 (device tool), DATA = ../shared/datasets/cifar10/train
# (unpacked there), BUDGET_SECONDS = 400. Logs: equal-time.*.log; metrics: equal-time.*.metrics.jsonl;
# the weights (float16 copies): bench/weights/*-equal-time.safetensors.
set -u
cd "$(dirname "$0")/../.."  # the repository root
data=$1 root=$2 budget=$3 device=${4:-cuda}
python=${PYTHON:-python3}
recipe=(--data "$data" --schedule cosine --batch-size 128 --lr 0.1 --weight-decay 5e-4 --epochs 60
        --time-budget "$budget" --device "$device" --no-bf16 --threads 4 --resume)
mkdir -p "$root"
date -u
for preset in msdnet-cifar-anytime resnet20 resnet56; do
  # the hard stop leaves room for start-up and the last epoch's export
  timeout $((${budget%.*} + 120)) "$python" -m service.cli train --preset "$preset" --out "$root/$preset" \
    "${recipe[@]}" > "$root/$preset.log" 2>&1 &
done
wait
date -u
for preset in msdnet-cifar-anytime resnet20 resnet56; do tail -n 2 "$root/$preset.log"; done
