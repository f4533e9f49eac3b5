#!/usr/bin/env bash
# Seventh stage, tried on this project's 2-core CPU (2026-11-26): a gentle warm restart of the shipped
# 127-epoch model with Cutout 16, after the GPU comparison (restart-gpu3.*) found Cutout worth 1.0 to
# 1.6 points at exits 4 to 7 at equal epochs. Batch 128, lr 0.05, cosine, bfloat16 autocast, the epoch
# count fitted to a 6,600 s budget. Shipped only if it beats the current default on the validation split.
set -u
cd "$(dirname "$0")/../.."  # the repository root
nice -n 10 anytime train --preset msdnet-cifar-anytime --data ../shared/datasets/cifar10/train \
  --out runs/cpu-cutout --init-from model/weights/msdnet-cifar10.safetensors --schedule cosine \
  --batch-size 128 --lr 0.05 --weight-decay 5e-4 --cutout 16 --epochs 20 --time-budget 6600 --threads 2 "$@"
