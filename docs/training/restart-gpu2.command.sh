#!/usr/bin/env bash
# Fifth stage of the shipped model (issue #3, the 90 % floor): a long warm restart on one GPU (device tool,
# 2026-11-26). Two variants run side by side on the same card from the same 54-epoch weights
# (runs/cifar10-restart3, itself a CPU restart of the 41-epoch default); the better one on the
# validation split is shipped. Batch 512: eager MSDNet is dispatch-bound on a GPU (~2,000 small
# operators per step), so four times the batch costs about the same time per step and buys ~4x the
# epochs in the same seconds. Plain joint loss, float32/TF32, epoch count fitted to BUDGET seconds.
#
#   docs/training/restart-gpu2.command.sh DATA INIT_WEIGHTS OUTROOT BUDGET_SECONDS
set -u
cd "$(dirname "$0")/../.."  # the repository root
data=$1 init=$2 root=$3 budget=$4
python=${PYTHON:-python3}
mkdir -p "$root"
date -u
for lr in 0.2 0.4; do
  timeout $((${budget%.*} + 100)) "$python" -m service.cli train --preset msdnet-cifar-anytime --data "$data" \
    --out "$root/lr$lr" --init-from "$init" --schedule cosine --batch-size 512 --lr "$lr" --weight-decay 5e-4 \
    --epochs 60 --time-budget "$budget" --device cuda --no-bf16 --threads 6 > "$root/lr$lr.log" 2>&1 &
done
wait
date -u
for lr in 0.2 0.4; do tail -n 2 "$root/lr$lr.log"; done
