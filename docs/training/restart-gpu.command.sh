# Third stage of the shipped model: a warm restart of the 28-epoch CPU-trained default on one NVIDIA H200
# (device tool, 2026-11-26), plain joint loss (no distillation), float32/TF32, epochs fitted to 270 s.
# DATA was ../shared/datasets/cifar10/train unpacked on that machine. Metrics: restart-gpu.metrics.jsonl.
anytime train --preset msdnet-cifar-anytime --data DATA --out runs/gpu/restart \
  --init-from model/weights/msdnet-cifar10.safetensors --schedule cosine --batch-size 128 --lr 0.05 \
  --weight-decay 5e-4 --epochs 30 --time-budget 270 --device cuda --no-bf16 --threads 8
