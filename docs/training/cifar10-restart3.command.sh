export OMP_WAIT_POLICY=PASSIVE
.venv/bin/anytime train --preset msdnet-cifar-anytime --data ../shared/datasets/cifar10/train --out runs/cifar10-restart3 --init-from model/weights/msdnet-cifar10.safetensors --epochs 12 --time-budget 3900 --batch-size 128 --lr 0.03 --schedule cosine --weight-decay 5e-4 --threads 2 --resume
