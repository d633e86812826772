#!/usr/bin/env bash
# Re-train the checkpoints shipped in qsal_lab/pretrained/, each with the command recorded beside it.
#   bash tools/train_pretrained.sh            (needs QSAL_DATA or network access; ~5 min on 2 CPU cores)
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
