export OMP_WAIT_POLICY=PASSIVE
.venv/bin/anytime train --preset msdnet-cifar-anytime --data ../shared/datasets/cifar10/train --out runs/cifar10-restart --init-from runs/cifar10-anytime/model.safetensors --epochs 10 --batch-size 128 --lr 0.05 --schedule cosine --weight-decay 5e-4 --distill 0.5 --distill-temperature 3 --threads 2 --resume
