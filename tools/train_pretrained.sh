#!/usr/bin/env bash
# Re-train the checkpoints shipped in qsal_lab/pretrained/, each with the command recorded beside it.
#   bash tools/train_pretrained.sh [all|mnist|medical|cifar]
# Needs QSAL_DATA or network access. The MNIST part is about 2.5 h of one core (its seeds table: seconds per epoch),
# the medical and CIFAR-10 stand-in parts are hours more; every metrics.json records its seconds per epoch.
# SKIP_DONE=1 keeps runs already finished under runs/ (to resume after an interruption) instead of re-training them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
only=${1:-all}
case $only in all|mnist|medical|cifar) ;; *) echo "usage: bash tools/train_pretrained.sh [all|mnist|medical|cifar]" >&2; exit 2;; esac

run() {  # run OUT COMMAND...: train on one thread into OUT (another thread count sums in another order)
  local out=$1; shift
  if [ "${SKIP_DONE:-0}" = 1 ] && $PY -c "import sys, torch; sys.exit(not torch.load(sys.argv[1], weights_only=False)['finished'])" \
      "$out/checkpoint.pt" 2>/dev/null; then
    echo "SKIP_DONE: keeping the finished run $out"; return
  fi
  OMP_NUM_THREADS=1 "$(dirname "$PY")/$1" "${@:2}" --out "$out" --restart
}

ship() {  # ship NAME DTYPE COMMAND...: run the command into runs/pretrained_NAME, copy the slim result with DTYPE
          # (float32 or float16) weights, and score the shipped file itself on every test image (metrics.json 'shipped')
  local name=$1 dtype=$2; shift 2
  run "runs/pretrained_$name" "$@"
  $PY -c "import sys; from qsal_lab.pretrained import slim_checkpoint; slim_checkpoint(*sys.argv[1:])" \
      "runs/pretrained_$name" "qsal_lab/pretrained/$name" "OMP_NUM_THREADS=1 $* --out runs/pretrained_$name" "$dtype"
  $PY tools/ship_mnist.py shipped "$name"
}

if [ "$only" = all ] || [ "$only" = mnist ]; then
# MNIST SmallCNN, chapters 1-7 and 10-11: a standard and an SGT model trained from scratch with one recipe, the book's
# `full` one (AdamW 3e-3, one-cycle, batch 128, 12 epochs) on 55 000 training images, 5000 held out to show after every
# epoch whether training has converged (holdout_accuracy in metrics.json; test is never used for a choice). Seeds 0, 1,
# 2. SGT is the authors' variant (Ismail et al. 2021, as arXiv:2412.03915 uses it): the bottom half of each image
# (fraction 0.5, the paper's for MNIST) by *signed* input gradient replaced by uniform noise in the image's range, plus
# lam * KL(orig || masked) with the clean side trained too (not detached), lam 1.
SGT="--method sgt --sgt-signed --sgt-no-detach"
# Seed 0 keeps the book's names (float32 weights); seeds 1 and 2 are NAME_seed1, NAME_seed2 (float16 weights).
for seed in 0 1 2; do
  sfx=_seed$seed dtype=float16
  [ $seed = 0 ] && sfx= dtype=float32
  ship mnist_smallcnn$sfx $dtype qsal train --dataset mnist --model smallcnn --budget full --holdout 5000 --seed $seed
  ship mnist_sgt_smallcnn$sfx $dtype qsal train --dataset mnist --model smallcnn --budget full --holdout 5000 $SGT --seed $seed
done
# Has the recipe converged? Seed 0 of both families again with twice the epochs (24): if that gains less than 0.1 pt of
# held-out accuracy, 12 epochs had converged. Verdict and held-out curves: mnist_sgt_smallcnn/selection.json
for family in sgt standard; do
  flags=; [ $family = sgt ] && flags=$SGT
  run runs/select_mnist_${family}_24 qsal train --dataset mnist --model smallcnn --budget full --holdout 5000 $flags --epochs 24 --seed 0
done
$PY tools/ship_mnist.py selection runs/pretrained_mnist_smallcnn runs/pretrained_mnist_sgt_smallcnn runs/select_mnist_{standard,sgt}_24
# Each standard model gets PACT fine-tunings, each SGT model SGT + PACT fine-tunings (the same SGT variant), at W/A = 8,
# 4 and 2 bits with chapter 4's recipes (qsal_lab.experiments.pact_sweep.qat_recipe, book), from the shipped files.
for seed in 0 1 2; do
  sfx=_seed$seed dtype=float16
  [ $seed = 0 ] && sfx= dtype=float32
  for family in pact sgt_pact; do
    init=qsal_lab/pretrained/mnist_smallcnn$sfx method=pact
    [ $family = sgt_pact ] && init=qsal_lab/pretrained/mnist_sgt_smallcnn$sfx method="pact+sgt --sgt-signed --sgt-no-detach"
    ship mnist_${family}_w8a8$sfx $dtype qsal train --dataset mnist --model smallcnn --method $method --w-bits 8 --a-bits 8 --pact-alpha 8 --init-from $init --epochs 2 --train-subset 10000 --lr 5e-4 --seed $seed
    ship mnist_${family}_w4a4$sfx $dtype qsal train --dataset mnist --model smallcnn --method $method --w-bits 4 --a-bits 4 --pact-alpha 4 --init-from $init --epochs 4 --train-subset 15000 --lr 5e-4 --seed $seed
    ship mnist_${family}_w2a2$sfx $dtype qsal train --dataset mnist --model smallcnn --method $method --w-bits 2 --a-bits 2 --pact-alpha 2 --init-from $init --epochs 5 --train-subset 24000 --lr 1e-3 --seed $seed
  done
done
$PY tools/ship_mnist.py summary  # per seed and family: accuracy, epochs, seconds per epoch -> mnist_sgt_smallcnn/seeds.json
# An aside: the book's earlier SGT model, a 2-epoch SGT fine-tune of mnist_smallcnn on 30 000 images with the library's
# default SGT (|gradient| ranking, detached clean side), to compare a cheap fine-tune with SGT from scratch.
ship mnist_sgt_finetune_smallcnn float16 qsal train --dataset mnist --model smallcnn --method sgt --init-from qsal_lab/pretrained/mnist_smallcnn --epochs 2 --train-subset 30000 --lr 5e-4 --seed 0
fi

if [ "$only" = all ] || [ "$only" = medical ]; then
# PneumoniaMNIST ResNet-18 at half width: both imbalance candidates (weighted loss, sampler), the validation split
# picks one, shipped with float16 weights + selection.json (hours on a shared 2-core machine; see its metrics.json)
$PY -c "from qsal_lab.experiments.medical import ship_pretrained; print(ship_pretrained())"
fi

if [ "$only" = all ] || [ "$only" = cifar ]; then
# CIFAR-10 stand-in v3 (synthetic, never real CIFAR-10): the float ResNet-20 at the book recipe (held-out images left
# out), PACT's optimizer and alpha lr scale chosen on that held-out split (selection.json), then PACT W4A4, W2A2 and
# SGT + PACT W4A4 fine-tunings of it (about 35 min on one core: float 10 min, W2A2 15; qsal_lab/experiments/cifar.py
# ship_pretrained; the shipped ones ran with OMP_NUM_THREADS=1, and another thread count sums in another order)
OMP_NUM_THREADS=1 QSAL_STANDIN=1 $PY -c "from qsal_lab.experiments.cifar import ship_pretrained; print(ship_pretrained())"
fi
