#!/usr/bin/env bash
# Eager against --compile training speed on one NVIDIA H100 (device tool, 2026-11-26, torch 2.11.0+cu130),
# from scratch, batch 512, each run alone on the card. The compiled run was stopped by its 165 s timeout
# before finishing its first batch's compilation (log: gpu-batch512-compile.log); eager: gpu-batch512-eager.log.
#   docs/training/gpu-batch512.command.sh DATA
set -u
cd "$(dirname "$0")/../.."  # the repository root
a=(--preset msdnet-cifar-anytime --data "$1" --batch-size 512 --lr 0.4 --schedule cosine --device cuda --no-bf16 --threads 8)
timeout 165 python3 -m service.cli train "${a[@]}" --out /tmp/c --epochs 4 --compile > gpu-batch512-compile.log 2>&1
timeout 55 python3 -m service.cli train "${a[@]}" --out /tmp/e --epochs 4 > gpu-batch512-eager.log 2>&1
