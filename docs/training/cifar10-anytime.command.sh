export OMP_WAIT_POLICY=PASSIVE  # sleep, not spin, when other work shares the 2 cores
anytime train --preset msdnet-cifar-anytime --data ../shared/datasets/cifar10/train --out runs/cifar10-anytime \
  --epochs 18 --batch-size 128 --lr 0.1 --schedule cosine --weight-decay 5e-4 --distill 0.5 --distill-temperature 3 --threads 2 --resume
