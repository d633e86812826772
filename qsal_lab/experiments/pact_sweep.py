"""The bit-width sweep of chapter 4 and bench/quant_mnist.py: PACT QAT against PTQ at W/A = 8, 4, 3, 2 bits.

    rows = bit_sweep("qsal_lab/pretrained/mnist_smallcnn/checkpoint.pt", out="runs/pact_sweep")
    print(format_table(rows))
    deployed = onnx_rows(rows, fp_model, calib_loader, test_loader, out="runs/pact_sweep")  # ONNX Runtime
    print(format_onnx_table(deployed))

For every bit width k the float SmallCNN is fine-tuned with PACT (`qat_recipe(k)`) and, for contrast, quantized
without training (fake-quant PTQ), first and last layer at 8 bits. A PACT row is scored from its bit-packed file
(what you would ship) and has `accuracy_before` (right after `quantize_model`) and its training history (whose
"alphas" are PACT's clipping levels). `onnx_rows` runs the sweep's models in ONNX Runtime; `train_step_seconds` times
float and QAT training steps side by side, the fair way to say what QAT costs per epoch.
"""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ..budget import current_budget, pick, recipe
from ..data import load_dataset, make_loader
from ..quant.convert import QATConfig, quantize_model
from ..quant.int8 import OnnxClassifier
from ..quant.packing import load_packed
from ..quant.pact import pact_alpha_l2
from ..quant.primitives import FLOAT_BITS, validate_bits
from ..quant.ptq import PTQConfig, ptq_model
from ..quant.qdq import compare_with_torch
from ..train import cross_entropy_loss, evaluate, train_model, train_step
from .report import describe_drop
from .study import (NAMED, FineTune, Row, accuracy_on, against, find_row, float_checkpoint, float_row, ort_rows,
                    pact_row, percent, ptq_row, qdq_row, table)

DATA = "MNIST"
BUILD = {"name": "smallcnn", "num_classes": 10}
METADATA = {"model_name": "smallcnn", "dataset": "mnist"}


def _steps(epochs: dict, subset: dict) -> dict:
    """One FineTune per bit width: DoReFa weights, alpha starting at k, a larger learning rate at 2 bits."""
    return {k: FineTune(k, epochs[k], subset[k], lr=1e-3 if k == 2 else 5e-4, weight_quant="dorefa",
                        pact_alpha=float(k)) for k in epochs}


# chapter 4 and bench/quant_mnist.py report what these reach; `full` is a longer `book`
QAT_RECIPES = {
    "ci": _steps({8: 1, 4: 1, 3: 1, 2: 2}, {8: 1000, 4: 1000, 3: 1000, 2: 1000}),
    "book": _steps({8: 2, 4: 4, 3: 4, 2: 5}, {8: 5000, 4: 10000, 3: 10000, 2: 14000}),
    "full": _steps({8: 3, 4: 5, 3: 5, 2: 8}, {8: None, 4: None, 3: None, 2: None}),
}


def qat_recipe(bits: int, budget: str | None = None) -> FineTune:
    """The fine-tuning for W{bits}A{bits} at a budget (bits 2..8; unlisted widths use the next lower one's epochs)."""
    bits = validate_bits(bits, "bits")
    if bits == FLOAT_BITS:
        raise ValueError("the sweep quantizes to 2..8 bits; 32 bits is the float model itself")
    recipes = QAT_RECIPES[current_budget(budget)]
    return recipes[max(b for b in recipes if b <= bits)]


CALIBRATION_IMAGES, CALIBRATION_BATCH = 1024, 128  # chapter 3's calibration set: 8 batches of 128


def mnist_loaders(budget: str | None = None, root: str | None = None):
    """(test_loader, calib_loader) with chapter 3's data, so that the same PTQ gives the same number here:
    the MNIST test images of the budget (the set `train_model` evaluates on) in batches of 500, and the
    calibration set: 1024 training images (stratified, seed 0) in 8 batches of 128, never shuffled."""
    r = recipe("smallcnn", budget)
    test_ds = load_dataset("mnist", "test", root=root, subset=r.test_subset, seed=0)
    calib_ds = load_dataset("mnist", "train", root=root, subset=CALIBRATION_IMAGES, seed=0)
    return make_loader(test_ds, batch_size=500), make_loader(calib_ds, batch_size=CALIBRATION_BATCH)


def mnist_batches(batches: int, budget: str | None = None) -> list:
    """`batches` shuffled MNIST training batches (seed 1) at the budget's SmallCNN batch size: what a training
    step is timed on."""
    batch_size = recipe("smallcnn", budget).batch_size
    ds = load_dataset("mnist", "train", subset=batches * batch_size, seed=1)
    return list(make_loader(ds, batch_size=batch_size, train=True, seed=1))


def qat_row(bits: int, fp_checkpoint, test_loader, out, budget: str | None = None, progress: bool = True,
            root: str | None = None) -> Row:
    """PACT QAT from a float checkpoint to W{bits}A{bits} with the budget's `qat_recipe`."""
    step = qat_recipe(bits, budget)
    before = quantize_model(float_checkpoint(fp_checkpoint, "smallcnn", "mnist")[0], step.config())

    def train(step, run):
        model, history = train_model("mnist", "smallcnn", budget=budget, quant=step.config(), init_from=fp_checkpoint,
                                     epochs=step.epochs, lr=step.lr, train_subset=step.train_subset, out=run,
                                     progress=progress, resume=False, root=root)
        return model, history.epochs, {}

    row = pact_row(step, train, accuracy_on(test_loader), out, DATA, build=BUILD)
    row.metrics["accuracy_before"] = evaluate(before, test_loader, device="cpu")["accuracy"]
    return row


def bit_sweep(fp_checkpoint, bits=(8, 4, 3, 2), ptq_bits=None, out="runs/pact_sweep", budget: str | None = None,
              progress: bool = True, root: str | None = None) -> list[Row]:
    """FP32 row, then a PACT row for each of `bits` and a PTQ row for each of `ptq_bits` (default: `bits`), each
    against FP32 (`study.against`: drop_pt, size_vs_fp32 and file_vs_fp32)."""
    fp_model, _ = float_checkpoint(fp_checkpoint, "smallcnn", "mnist")
    test_loader, calib_loader = mnist_loaders(budget, root=root)
    score = accuracy_on(test_loader)
    rows = [float_row(fp_model, score, DATA)]
    rows += [qat_row(b, fp_checkpoint, test_loader, out, budget, progress, root) for b in bits]
    rows += [ptq_row(fp_model, b, calib_loader, score, out, DATA) for b in (bits if ptq_bits is None else ptq_bits)]
    return against(rows, rows[0])


def format_table(rows: list[Row]) -> str:
    """The sweep as a Markdown table: accuracy (and, for PACT, before fine-tuning), the drop against FP32 in words,
    deployed size and packed file (absolute and relative to FP32)."""
    return table(rows, {
        **NAMED, "before fine-tuning": lambda r: percent(r.get("accuracy_before")),
        "vs FP32": lambda r: "–" if r.model == "FP32" else describe_drop(r.drop_pt, reference="FP32"),
        "size (KiB)": lambda r: f"{r.size_bytes / 1024:.1f}", "size vs FP32": lambda r: f"{r['size_vs_fp32']:.3f}×",
        "packed file (KiB)": lambda r: f"{r.file_bytes / 1024:.1f}",
        "file vs FP32": lambda r: f"{r['file_vs_fp32']:.3f}×"})


# ----------------------------------------------------------------------------- ONNX Runtime

def onnx_rows(rows: list[Row], fp_model: nn.Module, calib_loader, test_loader, out, bits=(8, 4),
              repeats: int | None = None) -> list[Row]:
    """The sweep's models as ONNX files run by ONNX Runtime on one thread: "FP32 (ORT)" and "PTQ int8 (ORT)"
    (`study.ort_rows`: min-max calibration on every batch of calib_loader, chapter 3's recipe) and "PACT WkAk (ORT)"
    for each of `bits` (the shipped packed file of `rows`, exported with export_qat_onnx). Each row has its drop
    against PyTorch's FP32, and as metrics its `agreement` and `max_abs_logit_diff` with its `reference`: PyTorch's
    float model, the fake-quant W8A8 min-max PTQ model (same calibration), the fake-quant PACT model."""
    fp_model, example = fp_model.cpu().eval(), next(iter(test_loader))[0][:1]
    score = lambda model: {}  # noqa: E731  the comparison with the reference below measures the accuracy
    repeats = repeats or pick(ci=10, book=50, full=100)
    fp32, int8 = ort_rows(fp_model, score, calib_loader, out, DATA, example, METADATA, stem="smallcnn",
                          repeats=repeats, rounds=pick(ci=2, book=5, full=5))
    fake_ptq8 = ptq_model(fp_model, PTQConfig(w_bits=8, a_bits=8, observer="minmax"), calib_loader,
                          num_batches=len(calib_loader), progress=False)
    compared = [(fp32, fp_model, "PyTorch FP32"), (int8, fake_ptq8, "fake-quant PTQ W8A8 (min-max)")]
    batch = next(iter(calib_loader))[0]
    for b in bits:
        pact = find_row(rows, f"PACT W{b}A{b}")
        shipped = load_packed(pact.notes["packed_path"])
        row = qdq_row(shipped, f"{pact.model} (ORT)", pact.precision, score, Path(out) / f"pact_w{b}a{b}.onnx", batch,
                      DATA, METADATA, repeats)
        compared.append((row, shipped, f"fake-quant PACT W{b}A{b}"))
    for row, reference, label in compared:
        same = compare_with_torch(OnnxClassifier(row.notes["path"], threads=1), reference, test_loader)
        row.accuracy = same["accuracy"]
        row.metrics.update(reference=label, agreement=same["agreement"], max_abs_logit_diff=same["max_abs_logit_diff"])
    return against([row for row, _, _ in compared], find_row(rows, "FP32"))


def format_onnx_table(rows: list[Row]) -> str:
    return table(rows, {
        **NAMED, "vs FP32 (PyTorch)": lambda r: describe_drop(r.drop_pt, reference="FP32"),
        "same class as": lambda r: f"{r['agreement']:.2%} with {r['reference']}",
        "max abs logit difference": lambda r: f"{r['max_abs_logit_diff']:.3g}",
        "file (KiB)": lambda r: f"{r.file_bytes / 1024:.1f}", "latency, batch 1 (ms)": lambda r: f"{r.latency_ms:.3f}"})


def format_precision_table(rows: list[Row]) -> str:
    """What ONNX Runtime runs for each of onnx_rows, after fusing: integer kernels, float32 ones, conversions."""
    return table(rows, {"model": lambda r: r.model, "on integers": lambda r: r["ort_ops"]["integer"],
                        "on float32": lambda r: r["ort_ops"]["float32"],
                        "conversions": lambda r: r["ort_ops"]["conversions"]})


# ----------------------------------------------------------------------------- training cost

def train_step_seconds(fp_model: nn.Module, config: QATConfig, batches, rounds: int = 3, lr: float = 1e-4) -> dict:
    """Median seconds per training step of the float model and of its QAT version on the same batches.

    Both run the same `batches` (a list of (x, y)) with AdamW, `rounds` times, interleaved and in
    alternating order, so that a background load slows both alike. One warm-up step each is not
    timed. Returns {"fp_step_s", "qat_step_s", "ratio", "fp_rounds", "qat_rounds"}: multiply a step
    time by the number of batches for an epoch.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("train_step_seconds needs at least one (x, y) batch")
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    fp = copy.deepcopy(fp_model).cpu().train()
    qat = quantize_model(copy.deepcopy(fp_model).cpu(), config).train()

    def qat_loss(m, x, y):  # what train_model trains QAT with
        return cross_entropy_loss(m, x, y) + config.alpha_l2 * pact_alpha_l2(m)

    runs = {"fp": (fp, cross_entropy_loss), "qat": (qat, qat_loss)}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=lr) for k, (m, _) in runs.items()}
    times = {"fp": [], "qat": []}
    for name, (model, loss_fn) in runs.items():  # warm-up: allocator, autograd graph, thread pool
        train_step(model, *batches[0], optimizers[name], loss_fn)
    for i in range(rounds):
        for name in (("fp", "qat") if i % 2 == 0 else ("qat", "fp")):
            model, loss_fn = runs[name]
            t0 = time.perf_counter()
            for x, y in batches:
                train_step(model, x, y, optimizers[name], loss_fn)
            times[name].append((time.perf_counter() - t0) / len(batches))
    fp_s, qat_s = statistics.median(times["fp"]), statistics.median(times["qat"])
    return {"fp_step_s": fp_s, "qat_step_s": qat_s, "ratio": qat_s / fp_s,
            "fp_rounds": times["fp"], "qat_rounds": times["qat"]}


def training_cost(fp_model: nn.Module, budget: str | None, batches: int, rounds: int, bits: int = 4) -> dict:
    """train_step_seconds on `batches` MNIST training batches with the W{bits}A{bits} recipe of the budget, and the
    seconds per 60 000-image epoch that the step times imply."""
    data, batch_size = mnist_batches(batches, budget), recipe("smallcnn", budget).batch_size
    config = qat_recipe(bits, budget).config()
    t = train_step_seconds(fp_model, config, data, rounds=rounds)
    steps = -(-60000 // batch_size)
    return {**t, "batches": len(data), "rounds": rounds, "batch_size": batch_size, "threads": torch.get_num_threads(),
            "qat_config": f"W{bits}A{bits} {config.weight_quant}", "fp_epoch_s_estimate": t["fp_step_s"] * steps,
            "qat_epoch_s_estimate": t["qat_step_s"] * steps}
