#!/usr/bin/env bash
# Sixth stage of the shipped model: Cutout against plain augmentation (device tool, 2026-11-26).
# Two runs side by side on one GPU, from the same 127-epoch shipped weights, identical but for
# --cutout 16 (DeVries & Taylor 2017: a random 16x16 square hidden in every training image). The
# 127-epoch model over-fits (99.5 % training against 90.2 % validation accuracy at the last exit), so
# the question is whether stronger augmentation turns another cycle into accuracy. Batch 512, lr 0.4
# (the linear scaling of 0.1 at 128), plain joint loss, float32/TF32, epoch count fitted to BUDGET s.
#
#   docs/training/restart-gpu3.command.sh DATA INIT_WEIGHTS OUTROOT BUDGET_SECONDS
# Environment: PYTHON (default python3), DEVICE (default cuda), EXTRA (more `train` flags, e.g. a smoke
# run's `--limit 256 --val-size 100`).
#
# Ran as: DATA=/tmp/data/train (the tarred ../shared folder), INIT_WEIGHTS=model/weights/msdnet-cifar10.safetensors,
# OUTROOT=$OUT/r3, BUDGET_SECONDS=400; then the checkpoints were deleted. The device tool returns at most
# 8 files per command and this left 10, so the Cutout run's model and card did not come back (logs and
# metrics did: restart-gpu3.cutout*.{log,metrics.jsonl}). The Cutout arm was rerun alone in the time left:
#   python3 -m service.cli train --preset msdnet-cifar-anytime --data /tmp/data/train --out $OUT/c16 \
#     --init-from model/weights/msdnet-cifar10.safetensors --schedule cosine --batch-size 512 --lr 0.4 \
#     --weight-decay 5e-4 --cutout 16 --epochs 55 --time-budget 275 --device cuda --no-bf16 --threads 12
# (restart-gpu3.cutout16-alone.*). Results: docs/model.md, "Cutout against plain augmentation".
set -u
cd "$(dirname "$0")/../.."  # the repository root
data=$1 init=$2 root=$3 budget=$4
python=${PYTHON:-python3}
mkdir -p "$root"
date -u
for cutout in 0 16; do
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  timeout $((${budget%.*} + 100)) "$python" -m service.cli train --preset msdnet-cifar-anytime --data "$data" \
    --out "$root/cutout$cutout" --init-from "$init" --schedule cosine --batch-size 512 --lr 0.4 \
    --weight-decay 5e-4 --cutout "$cutout" --epochs 60 --time-budget "$budget" --device "${DEVICE:-cuda}" \
    --no-bf16 --threads 6 ${EXTRA:-} > "$root/cutout$cutout.log" 2>&1 &
done
wait
date -u
for cutout in 0 16; do tail -n 2 "$root/cutout$cutout.log"; done
