# Distillation vs plain joint training at equal epochs: same seed, subset, schedule; only --distill differs.
# The two runs share the 2 cores, one thread each.
cd "$(dirname "$0")/../.."  # the repository root
export OMP_WAIT_POLICY=PASSIVE
rm -rf runs/ablation/plain runs/ablation/distill
common="--preset msdnet-cifar-anytime --data ../shared/datasets/cifar10/train --limit 12000 --epochs 6 --batch-size 64 --lr 0.1 --schedule cosine --weight-decay 5e-4 --threads 1 --resume"
date -u
.venv/bin/anytime train $common --out runs/ablation/plain > runs/ablation/plain.log 2>&1 &
.venv/bin/anytime train $common --out runs/ablation/distill --distill 0.5 --distill-temperature 3 > runs/ablation/distill.log 2>&1 &
wait
date -u
echo ABLATION DONE
