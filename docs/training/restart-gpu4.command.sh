#!/usr/bin/env bash
# Seventh stage: a longer Cutout cycle, three arms side by side on one GPU (device tool, 2026-11-26).
# All start from the shipped 127-epoch weights with --cutout 16, batch 512, cosine, weight decay 5e-4,
# float32/TF32, each fitted to BUDGET seconds; they differ in one thing each:
#   lr0.4          lr 0.4 (the restart-gpu3 Cutout arm, longer)
#   lr0.2          lr 0.2 (a gentler restart: the plain lr 0.2 twin kept exit 1 higher)
#   lr0.4-distill  lr 0.4 plus last-exit distillation (--distill 0.5 --distill-temperature 3)
# Every arm writes its model, card, metrics and log to ROOT/ARM/; the checkpoints are deleted at the
# end so that at most 8 files are left for the device tool to bring back.
#
#   docs/training/restart-gpu4.command.sh DATA INIT_WEIGHTS ROOT BUDGET_SECONDS
# Environment: PYTHON (default python3), DEVICE (default cuda), THREADS (default 5), EXTRA (more
# `train` flags, e.g. a smoke run's `--limit 256 --val-size 100`).
set -u
cd "$(dirname "$0")/../.."  # the repository root
data=$1 init=$2 root=$3 budget=$4
python=${PYTHON:-python3}
declare -A arm_flags=(
  [lr0.4]="--lr 0.4"
  [lr0.2]="--lr 0.2"
  [lr0.4-distill]="--lr 0.4 --distill 0.5 --distill-temperature 3"
)
date -u
for arm in "${!arm_flags[@]}"; do
  mkdir -p "$root/$arm"
  # shellcheck disable=SC2086  # the flag strings are lists of flags
  timeout $((${budget%.*} + 120)) "$python" -m service.cli train --preset msdnet-cifar-anytime \
    --data "$data" --out "$root/$arm" --init-from "$init" --schedule cosine --batch-size 512 \
    ${arm_flags[$arm]} --weight-decay 5e-4 --cutout 16 --epochs 70 --time-budget "$budget" \
    --device "${DEVICE:-cuda}" --no-bf16 --threads "${THREADS:-5}" ${EXTRA:-} > "$root/$arm/train.log" 2>&1 &
done
wait
date -u
for arm in "${!arm_flags[@]}"; do
  rm -f "$root/$arm"/checkpoint.*
  echo "== $arm"; tail -n 1 "$root/$arm/metrics.jsonl"
done
