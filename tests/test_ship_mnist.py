"""The shipped MNIST SmallCNNs (tools/train_pretrained.sh, tools/ship_mnist.py): every seed's standard, SGT, PACT and
SGT + PACT model is there, says how it was trained, and scores what its metrics say."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from qsal_lab.pretrained import available, pretrained_dir

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ship_mnist", ROOT / "tools" / "ship_mnist.py")
ship_mnist = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ship_mnist)

FROM_SCRATCH = [ship_mnist.name(f, s) for f in ("standard", "sgt") for s in ship_mnist.SEEDS]
FINE_TUNES = [ship_mnist.name(f, s, b) for f in ("standard", "sgt") for s in ship_mnist.SEEDS for b in ship_mnist.BITS]


def _metrics(name):
    return json.loads((pretrained_dir(name) / "metrics.json").read_text())


def test_one_name_one_model():
    assert ship_mnist.name("standard", 0) == "mnist_smallcnn" and ship_mnist.name("sgt", 2) == "mnist_sgt_smallcnn_seed2"
    assert ship_mnist.name("standard", 1, 4) == "mnist_pact_w4a4_seed1"
    assert ship_mnist.name("sgt", 0, 2) == "mnist_sgt_pact_w2a2"
    shipped = {n for n in available() if n.startswith("mnist_")}
    assert shipped == {*FROM_SCRATCH, *FINE_TUNES, "mnist_sgt_finetune_smallcnn"}


@pytest.mark.parametrize("name", [*FROM_SCRATCH, *FINE_TUNES, "mnist_sgt_finetune_smallcnn"])
def test_every_mnist_model_says_how_it_was_trained(name):
    folder, metrics = pretrained_dir(name), _metrics(name)
    command = (folder / "COMMAND").read_text()
    assert command.startswith("OMP_NUM_THREADS=1 qsal train --dataset mnist --model smallcnn")
    seed = int(name.rsplit("_seed", 1)[1]) if "_seed" in name else 0
    assert f"--seed {seed} " in command and metrics["config"]["seed"] == seed
    ckpt = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
    shipped = metrics["shipped"]
    assert shipped["weights_dtype"] == ckpt.get("weights_dtype", "float32") == ("float32" if seed == 0 and
                                                                               "finetune" not in name else "float16")
    assert shipped["test_n"] == 10000 and abs(shipped["test_accuracy"] - metrics["final"]["test_accuracy"]) < 0.002
    sgt = metrics["config"]["sgt"]
    if name in FROM_SCRATCH:
        assert metrics["config"]["init_from"] is None and metrics["config"]["holdout"] == 5000
        assert metrics["config"]["recipe"]["epochs"] == 12 and "holdout_accuracy" in metrics["history"][-1]
    if "sgt" in name and "finetune" not in name:  # the SGT authors' variant, fine-tunes too
        assert (sgt["fraction"], sgt["lam"], sgt["abs"], sgt["detach_target"]) == (0.5, 1.0, False, False)


def test_the_seeds_table_and_the_recipe_check():
    seeds = json.loads((pretrained_dir("mnist_sgt_smallcnn") / "seeds.json").read_text())
    rows = seeds["seeds"]
    assert [r["seed"] for r in rows] == list(ship_mnist.SEEDS)
    for r in rows:
        for key in ("standard", "sgt"):
            assert r[key]["test_accuracy"] == _metrics(r[key]["name"])["shipped"]["test_accuracy"]
    mean = sum(r["sgt"]["test_accuracy"] for r in rows) / len(rows)
    assert seeds["over_seeds"]["sgt"]["mean"] == pytest.approx(mean)
    selection = json.loads((pretrained_dir("mnist_sgt_smallcnn") / "selection.json").read_text())
    assert set(selection["verdict"]) == {"standard", "sgt"}
    for v in selection["verdict"].values():
        assert (v["epochs"], v["longer_epochs"]) == (12, 24) and v["converged"] == (v["gain"] < 0.001)
