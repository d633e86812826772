#!/usr/bin/env bash
# Re-train the checkpoints shipped in qsal_lab/pretrained/, each with the command recorded beside it.
#   bash tools/train_pretrained.sh            (needs QSAL_DATA or network access; ~5 min on 2 CPU cores for mnist_smallcnn;
#   the fine-tunings after it record their own seconds per epoch in their metrics.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

ship() {  # ship NAME COMMAND...: run the training command into runs/NAME, then copy the slim result
  local name=$1; shift
  "$(dirname "$PY")/$1" "${@:2}" --out "runs/pretrained_$name" --restart
  $PY -c "import sys; from qsal_lab.pretrained import slim_checkpoint; slim_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3])" \
      "runs/pretrained_$name" "qsal_lab/pretrained/$name" "$* --out runs/pretrained_$name"
}

ship mnist_smallcnn qsal train --dataset mnist --model smallcnn --budget full --seed 0
# Chapters 6 and 7: the SGT float model (the model above fine-tuned with saliency-guided training), then PACT and
# SGT + PACT fine-tunings at W/A = 8, 4, 2 with chapter 4's recipes (qsal_lab.experiments.pact_sweep.qat_recipe, book)
ship mnist_sgt_smallcnn qsal train --dataset mnist --model smallcnn --method sgt --init-from qsal_lab/pretrained/mnist_smallcnn --epochs 2 --train-subset 30000 --lr 5e-4 --seed 0
for family in pact sgt_pact; do
  init=qsal_lab/pretrained/mnist_smallcnn method=pact
  [ $family = sgt_pact ] && init=qsal_lab/pretrained/mnist_sgt_smallcnn method=pact+sgt
  ship mnist_${family}_w8a8 qsal train --dataset mnist --model smallcnn --method $method --w-bits 8 --a-bits 8 --pact-alpha 8 --init-from $init --epochs 2 --train-subset 10000 --lr 5e-4 --seed 0
  ship mnist_${family}_w4a4 qsal train --dataset mnist --model smallcnn --method $method --w-bits 4 --a-bits 4 --pact-alpha 4 --init-from $init --epochs 4 --train-subset 15000 --lr 5e-4 --seed 0
  ship mnist_${family}_w2a2 qsal train --dataset mnist --model smallcnn --method $method --w-bits 2 --a-bits 2 --pact-alpha 2 --init-from $init --epochs 5 --train-subset 24000 --lr 1e-3 --seed 0
done
# PneumoniaMNIST ResNet-18 at half width: both imbalance candidates (weighted loss, sampler), the validation split
# picks one, shipped with float16 weights + selection.json (hours on a shared 2-core machine; see its metrics.json)
$PY -c "from qsal_lab.experiments.medical import ship_pretrained; print(ship_pretrained())"
# CIFAR-10 stand-in v3 (synthetic, never real CIFAR-10): the float ResNet-20 at the book recipe (held-out images left
# out), PACT's optimizer and alpha lr scale chosen on that held-out split (selection.json), then PACT W4A4, W2A2 and
# SGT + PACT W4A4 fine-tunings of it (about 35 min on one core: float 10 min, W2A2 15; qsal_lab/experiments/cifar.py
# ship_pretrained; the shipped ones ran with OMP_NUM_THREADS=1, and another thread count sums in another order)
OMP_NUM_THREADS=1 QSAL_STANDIN=1 $PY -c "from qsal_lab.experiments.cifar import ship_pretrained; print(ship_pretrained())"
