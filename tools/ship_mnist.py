"""The shipped MNIST SmallCNNs' bookkeeping, called by tools/train_pretrained.sh after each training run.

    python tools/ship_mnist.py shipped NAME            metrics.json gains `shipped`: the shipped file's own accuracy
                                                       on all 10 000 test images (float16 weights score themselves)
    python tools/ship_mnist.py selection RUN...        the recipe check on held-out images -> selection.json
    python tools/ship_mnist.py summary                 per seed: standard, SGT, PACT and SGT + PACT -> seeds.json

selection.json and seeds.json live beside the SGT model (qsal_lab/pretrained/mnist_sgt_smallcnn/).
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qsal_lab.data import load_dataset, make_loader
from qsal_lab.files import atomic_write_text
from qsal_lab.pretrained import HERE, pretrained_dir
from qsal_lab.train import evaluate, load_checkpoint

SEEDS = (0, 1, 2)
BITS = (8, 4, 2)
BESIDE = HERE / "mnist_sgt_smallcnn"


def name(family: str, seed: int, bits: int | None = None) -> str:
    """The shipped folder: seed 0 keeps the book's names, other seeds get `_seed<n>` (one name, one model)."""
    base = {"standard": "mnist_smallcnn", "sgt": "mnist_sgt_smallcnn"}[family] if bits is None else \
        f"mnist_{'pact' if family == 'standard' else 'sgt_pact'}_w{bits}a{bits}"
    return base if seed == 0 else f"{base}_seed{seed}"


def _write(path: Path, payload: dict):
    atomic_write_text(json.dumps(payload, indent=2, default=str) + "\n", path)


def record_shipped(folder: str | Path) -> dict:
    """Score the shipped checkpoint itself (after any float16 rounding) on every MNIST test image."""
    folder = Path(folder)
    model, ckpt = load_checkpoint(folder / "checkpoint.pt")
    test = load_dataset("mnist", "test")
    result = evaluate(model, make_loader(test, batch_size=500), "cpu")
    shipped = {"dataset": test.info.display_name, "test_accuracy": result["accuracy"], "test_n": result["n"],
               "weights_dtype": ckpt.get("weights_dtype", "float32"),
               "file_bytes": (folder / "checkpoint.pt").stat().st_size,
               "parameters": sum(p.numel() for p in model.parameters()),
               "epochs": ckpt["epoch"], "train_seconds": sum(e["seconds"] for e in ckpt["history"])}
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["shipped"] = shipped
    _write(folder / "metrics.json", metrics)
    return shipped


def selection(runs: list[str], tolerance: float = 0.001) -> dict:
    """selection.json: each candidate run's held-out curve (accuracy per epoch on images it never trained on),
    and the verdict: the recipe has converged for a family if twice the epochs gains less than `tolerance`
    held-out accuracy (0.1 pt, 5 of 5000 images: below the binomial standard error of about 0.12 pt)."""
    candidates = []
    for run in runs:
        m = json.loads((Path(run) / "metrics.json").read_text())
        c = m["config"]
        candidates.append({"run": Path(run).name, "family": "sgt" if c.get("sgt") else "standard",
                           "epochs": c["recipe"]["epochs"], "recipe": c["recipe"], "sgt": c.get("sgt"),
                           "seed": c["seed"], "train_size": c["train_size"], "holdout": c["holdout"],
                           "holdout_accuracy": [e["holdout_accuracy"] for e in m["history"]],
                           "holdout_loss": [e["holdout_loss"] for e in m["history"]],
                           "seconds": [e["seconds"] for e in m["history"]]})
    verdict = {}
    for family in ("standard", "sgt"):
        runs_f = sorted((c for c in candidates if c["family"] == family), key=lambda c: c["epochs"])
        if len(runs_f) >= 2:
            short, long = runs_f[0], runs_f[-1]
            gain = long["holdout_accuracy"][-1] - short["holdout_accuracy"][-1]
            verdict[family] = {"epochs": short["epochs"], "longer_epochs": long["epochs"],
                               "holdout_accuracy": short["holdout_accuracy"][-1],
                               "longer_holdout_accuracy": long["holdout_accuracy"][-1], "gain": gain,
                               "last_3_epochs": short["holdout_accuracy"][-3:], "converged": gain < tolerance}
    payload = {"question": "has the shipped recipe converged for both families (standard and SGT)?",
               "criterion": f"twice the epochs gains less than {tolerance:.3f} held-out accuracy (0.1 pt)",
               "held_out": "5000 training images (stratified, data.HOLDOUT_SEED), never trained on; test unseen",
               "verdict": verdict, "candidates": candidates}
    _write(BESIDE / "selection.json", payload)
    return payload


def _row(folder: str) -> dict:
    m = json.loads((pretrained_dir(folder) / "metrics.json").read_text())
    return {"name": folder, "test_accuracy": m["shipped"]["test_accuracy"], "epochs": m["final"]["epoch"],
            "seconds_per_epoch": statistics.median(e["seconds"] for e in m["history"]),
            "weights_dtype": m["shipped"]["weights_dtype"]}


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values), "n": len(values)}


def summary() -> dict:
    """seeds.json: per seed and family the shipped test accuracy, epochs and median seconds per epoch; the mean
    and range over seeds; the SGT - standard gap (the issue's target: within 0.5 pt, mean over seeds)."""
    seeds = []
    for seed in SEEDS:
        row = {"seed": seed}
        for family in ("standard", "sgt"):
            row[family] = _row(name(family, seed))
            for bits in BITS:
                row[f"{family}_pact_w{bits}a{bits}"] = _row(name(family, seed, bits))
        seeds.append(row)
    keys = [k for k in seeds[0] if k != "seed"]
    over = {k: _spread([s[k]["test_accuracy"] for s in seeds]) for k in keys}
    gap = [s["sgt"]["test_accuracy"] - s["standard"]["test_accuracy"] for s in seeds]
    payload = {"dataset": "MNIST", "test_n": 10000,
               "about": "standard and SGT SmallCNNs trained from scratch with one recipe (selection.json), seeds "
                        "0-2; PACT fine-tunes of each standard model, SGT + PACT fine-tunes of each SGT model; "
                        "test accuracy of the shipped files (metrics.json 'shipped'); seconds: wall time on one "
                        "thread of a shared 2-core machine (OMP_NUM_THREADS=1)",
               "seeds": seeds, "over_seeds": over,
               "sgt_minus_standard": {**_spread(gap), "target": "mean within 0.005 (0.5 pt)",
                                      "met": abs(statistics.mean(gap)) <= 0.005}}
    _write(BESIDE / "seeds.json", payload)
    return payload


if __name__ == "__main__":
    verb, args = sys.argv[1], sys.argv[2:]
    if verb == "shipped":
        print(json.dumps(record_shipped(HERE / args[0])))
    elif verb == "selection":
        print(json.dumps(selection(args)["verdict"], indent=1))
    elif verb == "summary":
        print(json.dumps(summary()["over_seeds"], indent=1))
    else:
        sys.exit(f"unknown step {verb!r}; choose shipped NAME, selection RUN..., or summary")
