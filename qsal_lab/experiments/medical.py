"""The medical-imaging study (chapter 9, bench/medical.py): one MedMNIST flag through every method, scored
the way a screening test is.

    study = run_study("pneumoniamnist", out="runs/medical", float_checkpoint=pretrained_dir(PRETRAINED) / "checkpoint.pt")
    print(format_table(study["rows"]))
    plot_pareto(study["rows"], name="medical_pareto")     # AUC against file size and latency

Rows, each from its own executed model (`ROWS`):
  FP32            the float ResNet-18 (28x28 stem), class imbalance handled by a weighted loss or a
                  class-balanced sampler, whichever scores better on the *validation* split
                  (`choose_imbalance`, by class-balanced validation cross-entropy), run in ONNX Runtime;
  PTQ int8        that model exported to ONNX and quantized by ONNX Runtime (QDQ, per-channel int8
                  weights, calibrated on training images);
  PACT W8A8, W4A4 PACT quantization-aware fine-tuning of the float model (first and last layer at 8 bits);
  SGT + PACT W4A4 the same with saliency-guided training (qsal_lab.saliency.SGTConfig), with the
                  class-balanced sampler (SGT's own cross-entropy takes no class weights).
Every row is scored by `qsal_lab.clinical.clinical_report`: its decision threshold is chosen on the
validation split (Youden's J, or a target sensitivity for screening) and never on test; test AUC,
accuracy, sensitivity and specificity come with stratified-bootstrap 95 % intervals; ECE with its
reliability diagram. File size is the ONNX file ONNX Runtime runs (PACT models: `export_qat_onnx`'s QDQ
file, int8 storage even at 4 bits; their bit-packed file size is `packed_bytes`); latency is ONNX Runtime
at batch 1 on 1 thread (median), all rows measured in one run. PACT rows are scored from their ONNX file
(`agreement_with_fake_quant` says how often it decides as the trained fake-quant model does).

ChestMNIST (multi-label) runs with a per-label weighted loss (a class-balanced sampler needs one class
per image) and without the SGT row (saliency-guided training needs one class per image): that row
says so instead of a number.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import clinical
from ..budget import current_budget
from ..data import dataset_info, load_dataset, make_loader
from ..edge.latency import file_size_bytes, measure_latency
from ..files import atomic_write_text
from ..quant import QATConfig, OnnxClassifier, export_onnx, quantize_onnx
from ..quant.packing import load_packed, save_packed
from ..quant.qdq import executed_ops, export_qat_onnx, precision_summary
from ..train import load_checkpoint, predict, train_model

PRETRAINED = "pneumoniamnist_resnet18_w05"  # the shipped float model (qsal_lab/pretrained/<PRETRAINED>/)
ROWS = ("FP32", "PTQ int8", "PACT W8A8", "PACT W4A4", "SGT + PACT W4A4")


@dataclass(frozen=True)
class QATStep:
    """One fine-tuning run from the float model (PACT, optionally with SGT)."""
    bits: int
    epochs: int
    lr: float
    train_subset: int | None = None  # training images per epoch (stratified, seeded); None = all
    sgt: bool = False
    pact_alpha: float | None = None  # None: the bit width (alpha starts at k, as in chapter 4's sweep)
    sgt_fraction: float | None = None  # share of pixels SGT masks; None: saliency.default_fraction(flag)

    def config(self) -> QATConfig:
        # Symmetric per-channel weights keep each weight's scale, so the quantized ResNet starts where the float
        # one ended. DoReFa maps weights into [-1, 1]: fine for a BatchNorm'd conv in training, but the eval-mode
        # running statistics and the last linear layer then see weights about 10x larger, and the logits explode
        # until many steps of fine-tuning have re-learned them (measured: validation AUC 0.5 after DoReFa W8A8).
        return QATConfig(w_bits=self.bits, a_bits=self.bits, weight_quant="symmetric",
                         pact_alpha=self.pact_alpha or float(self.bits))


@dataclass(frozen=True)
class MedicalRecipe:
    """Everything the study does at one budget. Subsets are stratified and seeded; None = the whole split."""
    width: float                      # ResNet-18 channel multiplier (0.5: 32..256 channels)
    float_epochs: int                 # fixed schedule: validation AUC saturates, so no best-epoch picking
    float_lr: float
    train_subset: int | None
    val_subset: int | None
    test_subset: int | None
    qat: tuple = ()                   # QATSteps, in ROWS order after PTQ
    augment: str = "shift"            # +-2 px, no flip
    calib_images: int = 512
    n_boot: int = 2000
    latency_repeats: int = 50
    seeds: tuple = (0,)
    imbalance_candidates: tuple = ("weighted_loss", "sampler")

    def to_dict(self) -> dict:
        return asdict(self)


def _qat_steps(w8a8, w4a4, sgt):
    """PACT W8A8, PACT W4A4 and SGT + PACT W4A4 fine-tunings, each as (epochs, training images per epoch).

    SGT masks 10 % of the pixels: chosen on the validation split with the shipped float model (book, 2 epochs
    on 2000 images: class-balanced validation cross-entropy 0.153 at 0.5, 0.129 at 0.2, 0.085 at 0.1; and
    0.073 at 0.1 with 3 epochs on all images, against 0.137 at 0.5 with the same schedule). A chest X-ray has
    little background: masking half of it with noise removes much of what the diagnosis rests on."""
    return (QATStep(8, w8a8[0], 2e-4, w8a8[1]), QATStep(4, w4a4[0], 5e-4, w4a4[1]),
            QATStep(4, sgt[0], 5e-4, sgt[1], sgt=True, sgt_fraction=0.1))


RECIPES = {
    # ci: a smoke run on tiny subsets; the numbers mean nothing
    "ci": MedicalRecipe(width=0.25, float_epochs=1, float_lr=1e-3, train_subset=256, val_subset=160, test_subset=160,
                        qat=_qat_steps((1, 128), (1, 128), (1, 128)), calib_images=64, n_boot=100, latency_repeats=5),
    # book: from the shipped float model, QAT 1 + 2 epochs on 2000 images, SGT 2 epochs on 3000. SGT was 3 epochs on
    # all 4708 images (study 281 s on 2 nearly idle cores, all seven bench targets met), which
    # left chapter 9 no room under its 5 minutes: the study plus the chapter's maps, agreement and screening
    # table measured 477 s of CPU on one thread. 2 x 3000 images is 42 % of those SGT steps.
    "book": MedicalRecipe(width=0.5, float_epochs=10, float_lr=1e-3, train_subset=None, val_subset=None,
                          test_subset=None, qat=_qat_steps((1, 2000), (2, 2000), (2, 3000))),
    "full": MedicalRecipe(width=0.5, float_epochs=10, float_lr=1e-3, train_subset=None, val_subset=None,
                          test_subset=None, qat=_qat_steps((2, None), (4, None), (4, None)), seeds=(0, 1, 2)),
}


def medical_recipe(budget: str | None = None, **overrides) -> MedicalRecipe:
    return replace(RECIPES[current_budget(budget)], **overrides)


# ----------------------------------------------------------------------------- data and scores

def check_flag(flag: str, size: int | None = None) -> str:
    """The canonical dataset name of a 2D MedMNIST flag (with its size), or a clear error."""
    info = dataset_info(flag, size)
    if len(info.splits) < 3:
        raise ValueError(f"the medical study needs a MedMNIST flag (train/val/test splits); {info.display_name} "
                         f"has no validation split to choose thresholds on")
    return info.name


def eval_splits(name: str, recipe: MedicalRecipe, root=None, seed: int = 0, download: bool = True):
    """(val, test) datasets at the recipe's subset sizes."""
    return (load_dataset(name, "val", root=root, subset=recipe.val_subset, seed=seed, download=download),
            load_dataset(name, "test", root=root, subset=recipe.test_subset, seed=seed, download=download))


def scores(model, ds, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of a torch model or an OnnxClassifier over a dataset."""
    logits, labels = predict(model, make_loader(ds, batch_size=batch_size), device="cpu")
    return labels.numpy(), clinical.probabilities(logits.numpy(), ds.info.task)


def balanced_nll(y, probs, task: str) -> float:
    """Cross-entropy averaged per class, then over classes (multi-label: per label over its positives and its
    negatives): what a model scores on validation regardless of how common each class is."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(y)
    if clinical.canonical_task(task) == "multi-label":
        terms = []
        for j in range(y.shape[1]):
            pos, neg = y[:, j] > 0.5, y[:, j] <= 0.5
            parts = [-np.log(probs[pos, j]).mean() if pos.any() else np.nan,
                     -np.log(1 - probs[neg, j]).mean() if neg.any() else np.nan]
            terms.append(np.nanmean(parts))
        return float(np.nanmean(terms))
    nll = -np.log(probs[np.arange(len(y)), y.reshape(-1)])
    return float(np.mean([nll[y.reshape(-1) == c].mean() for c in np.unique(y)]))


# ----------------------------------------------------------------------------- the float model

def imbalance_candidates(name: str, recipe: MedicalRecipe) -> tuple:
    if dataset_info(name).task == "multi-label":  # no sampler for several labels per image
        return tuple(c for c in recipe.imbalance_candidates if c != "sampler") or ("weighted_loss",)
    return recipe.imbalance_candidates


def _same_training(path: Path, name: str, recipe: MedicalRecipe, imbalance: str, seed: int) -> bool:
    """Whether `path` holds a finished float run made exactly as train_float would make it now."""
    if not path.exists():
        return False
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    config, spec = ckpt.get("config") or {}, ckpt.get("model_spec") or {}
    r = config.get("recipe") or {}
    wanted = {"epochs": recipe.float_epochs, "lr": recipe.float_lr, "train_subset": recipe.train_subset,
              "augment": recipe.augment}
    return bool(ckpt.get("finished")) and config.get("dataset") == name and config.get("model") == "resnet18" \
        and config.get("seed") == seed and config.get("imbalance") == imbalance and not config.get("quant") \
        and not config.get("sgt") and not config.get("init_from") and spec.get("width", 1.0) == recipe.width \
        and all(r.get(k) == v for k, v in wanted.items())


def train_float(name: str, recipe: MedicalRecipe, out, imbalance: str, seed: int = 0, root=None,
                progress: bool = True, budget: str | None = None) -> Path:
    """Train the float ResNet-18 with one imbalance handling; returns its checkpoint path. A finished run in
    `out` made with the same data, recipe, imbalance handling and seed is reused (training is deterministic)."""
    out = Path(out)
    if _same_training(out / "checkpoint.pt", name, recipe, imbalance, seed):
        print(f"reusing the finished run in {out} (same data, recipe, imbalance handling and seed)")
        return out / "checkpoint.pt"
    train_model(name, "resnet18", budget=budget, out=out, width=recipe.width, imbalance=imbalance,
                augment=recipe.augment, epochs=recipe.float_epochs, lr=recipe.float_lr,
                train_subset=recipe.train_subset, test_subset=recipe.test_subset, seed=seed, root=root,
                progress=progress, resume=False, device="cpu")
    return out / "checkpoint.pt"


def select_on_validation(checkpoints: dict, val_ds) -> dict:
    """Compare float checkpoints {imbalance: path} on the validation split and pick the one with the lowest
    class-balanced cross-entropy. Returns {'chosen', 'checkpoint', 'criterion', 'candidates': [...]}."""
    task = val_ds.info.task
    table = []
    for imbalance, path in checkpoints.items():
        model, _ = load_checkpoint(path)
        y, p = scores(model, val_ds)
        table.append({"imbalance": imbalance, "checkpoint": str(path), "val_balanced_nll": balanced_nll(y, p, task),
                      "val_auc": clinical.auc(y, p, task)})
    best = min(table, key=lambda r: r["val_balanced_nll"])
    return {"chosen": best["imbalance"], "checkpoint": best["checkpoint"], "candidates": table,
            "criterion": "lowest class-balanced cross-entropy on the validation split", "val_n": len(val_ds)}


def choose_imbalance(name: str, recipe: MedicalRecipe, out, val_ds, seed: int = 0, root=None, progress: bool = True,
                     budget: str | None = None) -> dict:
    """Train one float model per imbalance candidate and keep the one validation prefers."""
    checkpoints = {c: train_float(name, recipe, Path(out) / f"float_{c}_seed{seed}", c, seed, root, progress, budget)
                   for c in imbalance_candidates(name, recipe)}
    return select_on_validation(checkpoints, val_ds)


def selection_from_checkpoint(path) -> dict:
    """What a given float checkpoint says about its imbalance handling (and the selection that chose it, if
    a selection.json lies beside it, as in the shipped pretrained folder)."""
    path = Path(path)
    _, ckpt = load_checkpoint(path)
    record = path.parent / "selection.json"
    if record.exists():
        return {**json.loads(record.read_text()), "checkpoint": str(path), "source": str(record)}
    return {"chosen": (ckpt.get("config") or {}).get("imbalance", "none"), "checkpoint": str(path),
            "candidates": [], "criterion": "given: the checkpoint's own imbalance handling (no selection in this run)"}


# ----------------------------------------------------------------------------- one row

def _latency_ms(fn, example, repeats) -> float:
    return measure_latency(fn, example, warmup=5, repeats=repeats)["median_ms"]


def _eager_latency_ms(model, example, repeats) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _latency_ms(model, example, repeats)
    finally:
        torch.set_num_threads(threads)


def score_row(method: str, bits: str, predictor, val_ds, test_ds, recipe: MedicalRecipe, *, file_bytes: int,
              latency_ms: float | None, threshold_method: str = "youden", target_sensitivity: float = 0.95,
              seed: int = 0, **extra) -> dict:
    """One results row: the clinical report of `predictor` (thresholds from val_ds, numbers from test_ds)."""
    yv, pv = scores(predictor, val_ds)
    yt, pt = scores(predictor, test_ds)
    report = clinical.clinical_report(yv, pv, yt, pt, val_ds.info.task, method=threshold_method,
                                      target_sensitivity=target_sensitivity, n_boot=recipe.n_boot, seed=seed)
    op = report["operating_point"]
    row = {"method": method, "bits": bits, "file_bytes": int(file_bytes), "latency_ms": latency_ms,
           "auc": report["auc"], "auc_ci": report["ci"]["auc"], "accuracy": report["accuracy"],
           "accuracy_ci": report["ci"]["accuracy"], "sensitivity": report["sensitivity"],
           "sensitivity_ci": report["ci"]["sensitivity"], "specificity": report["specificity"],
           "specificity_ci": report["ci"]["specificity"], "balanced_accuracy": report["balanced_accuracy"],
           "ece": report["ece"], "threshold": op["threshold"], "threshold_method": op["method"],
           "medmnist_auc": report["medmnist"]["auc"], "medmnist_acc": report["medmnist"]["acc"],
           "test_n": len(test_ds), "val_n": len(val_ds), **extra}
    if "ppv" in report:
        row.update(ppv=report["ppv"], npv=report["npv"])
    return {**row, "report": report, "test_probs": pt}


def skipped_row(method: str, bits: str, reason: str) -> dict:
    return {"method": method, "bits": bits, "skipped": reason}


# ----------------------------------------------------------------------------- the study

def _example(ds) -> torch.Tensor:
    return ds[0][0].unsqueeze(0)


def float_and_ptq_rows(model: nn.Module, name: str, recipe: MedicalRecipe, val_ds, test_ds, work: Path,
                       seed: int = 0, root=None, **score_options) -> list[dict]:
    """The FP32 row (the float model in ONNX Runtime) and the PTQ int8 row (ONNX Runtime static quantization)."""
    info = dataset_info(name)
    example = _example(test_ds)
    fp32_path = export_onnx(model, work / "fp32.onnx", input_shape=tuple(example.shape),
                            metadata={"dataset": name, "model": "resnet18"})
    calib = load_dataset(name, "train", root=root, subset=recipe.calib_images, seed=seed + 1)
    int8_path = quantize_onnx(fp32_path, work / "int8.onnx", make_loader(calib, batch_size=64),
                              num_batches=-(-recipe.calib_images // 64), method="minmax")
    fp32, int8 = OnnxClassifier(fp32_path, threads=1), OnnxClassifier(int8_path, threads=1)
    eager_ms = _eager_latency_ms(model.eval(), example, recipe.latency_repeats)
    fp32_ms = _latency_ms(fp32, example, recipe.latency_repeats)
    int8_ms = _latency_ms(int8, example, recipe.latency_repeats)
    rows = [score_row("FP32", "32/32", fp32, val_ds, test_ds, recipe, file_bytes=fp32.file_size_bytes,
                      latency_ms=fp32_ms, seed=seed, eager_latency_ms=eager_ms, file=str(fp32_path),
                      file_kind="ONNX fp32", **score_options),
            score_row("PTQ int8", "8/8", int8, val_ds, test_ds, recipe, file_bytes=int8.file_size_bytes,
                      latency_ms=int8_ms, seed=seed, file=str(int8_path), file_kind="ONNX int8 (QDQ)",
                      calibration=f"minmax on {len(calib)} training images", **score_options)]
    rows[1]["agreement_with_fp32"] = _agreement(rows[1]["test_probs"], rows[0]["test_probs"], info.task)
    rows[1]["ort_ops"] = precision_summary(executed_ops(int8_path))
    return rows


def qat_row(step: QATStep, name: str, recipe: MedicalRecipe, float_ckpt, imbalance: str, val_ds, test_ds,
            work: Path, seed: int = 0, root=None, progress: bool = True, budget: str | None = None,
            **score_options) -> dict:
    """PACT (optionally SGT + PACT) fine-tuning of the float model; scored from its bit-packed file's model."""
    method = f"{'SGT + ' if step.sgt else ''}PACT W{step.bits}A{step.bits}"
    bits = f"{step.bits}/{step.bits}"
    sgt = None
    if step.sgt:
        if dataset_info(name).task == "multi-label":
            return skipped_row(method, bits, "saliency-guided training needs one class per image; "
                                             f"{dataset_info(name).display_name} is multi-label")
        from ..saliency import SGTConfig, default_fraction
        sgt = SGTConfig(fraction=step.sgt_fraction or default_fraction(name))
        imbalance = "sampler"  # SGT's own cross-entropy takes no class weights
    run_dir = work / method.lower().replace(" + ", "_").replace(" ", "_")
    t0 = time.perf_counter()
    model, history = train_model(name, "resnet18", budget=budget, out=run_dir, quant=step.config(), sgt=sgt,
                                 init_from=float_ckpt, width=recipe.width, imbalance=imbalance, augment=recipe.augment,
                                 epochs=step.epochs, lr=step.lr, train_subset=step.train_subset,
                                 test_subset=recipe.test_subset, seed=seed, root=root, progress=progress,
                                 resume=False, device="cpu")
    seconds = time.perf_counter() - t0
    info = dataset_info(name)
    packed = run_dir / "model.qsal"
    build = {"name": "resnet18", "num_classes": info.num_classes, "in_channels": info.in_channels,
             "image_size": info.image_size, "width": recipe.width}
    packed_bytes = save_packed(model.cpu().eval(), packed, build=build)
    shipped = load_packed(packed)  # what the packed file holds, = the trained fake-quant model
    # The deployable file: ONNX QDQ with PACT's learned clipping levels as scales; the example batch (training
    # images) fixes the input's 8-bit range and checks the file against the fake-quant model.
    calib = load_dataset(name, "train", root=root, subset=min(recipe.calib_images, 256), seed=seed + 1)
    example = torch.stack([calib[i][0] for i in range(len(calib))])
    common = dict(packed_bytes=packed_bytes, packed_file=str(packed), imbalance=imbalance, train_seconds=seconds,
                  epochs=step.epochs, train_images=step.train_subset, qat=asdict(step.config()),
                  sgt=sgt.to_dict() if sgt else None, **score_options)
    try:
        onnx_path = export_qat_onnx(shipped, run_dir / "model_qdq.onnx", example,
                                    metadata={"dataset": name, "model": "resnet18", "method": method})
    except RuntimeError as e:  # the exporter refuses a file that disagrees with the model (e.g. near-tied logits)
        return score_row(method, bits, shipped, val_ds, test_ds, recipe, file_bytes=packed_bytes, latency_ms=None,
                         seed=seed, file=str(packed), file_kind="bit-packed (save_packed); no ONNX file",
                         onnx_export_error=str(e), **common)
    clf = OnnxClassifier(onnx_path, threads=1)
    row = score_row(method, bits, clf, val_ds, test_ds, recipe, file_bytes=clf.file_size_bytes,
                    latency_ms=_latency_ms(clf, example[:1], recipe.latency_repeats), seed=seed, file=str(onnx_path),
                    file_kind="ONNX QDQ (export_qat_onnx)", ort_ops=precision_summary(executed_ops(onnx_path)),
                    **common)
    _, fake_quant = scores(shipped, test_ds)
    row["agreement_with_fake_quant"] = _agreement(row["test_probs"], fake_quant, info.task)
    return row


def _agreement(a: np.ndarray, b: np.ndarray, task: str) -> float:
    """Share of test decisions two models make alike (argmax; per label at 0.5 for multi-label tasks)."""
    if clinical.canonical_task(task) == "multi-label":
        return float(((a > 0.5) == (b > 0.5)).mean())
    return float((a.argmax(1) == b.argmax(1)).mean())


def run_study(flag: str = "pneumoniamnist", out="runs/medical", *, budget: str | None = None,
              float_checkpoint=None, seed: int = 0, size: int | None = None, root=None, rows=ROWS,
              threshold_method: str = "youden", target_sensitivity: float = 0.95, progress: bool = True,
              recipe: MedicalRecipe | None = None, download: bool = True) -> dict:
    """Every row of `rows` for one flag and seed. With `float_checkpoint`, the float model is that one (its
    imbalance handling as recorded); else both imbalance candidates are trained and validation picks.
    Returns {'flag', 'budget', 'recipe', 'selection', 'rows', 'seconds', ...}; the rows' 'report' holds the full
    clinical report (with the reliability diagram's data) and 'test_probs' the test scores."""
    budget = current_budget(budget)
    recipe = recipe or medical_recipe(budget)
    name = check_flag(flag, size)
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; choose from: {', '.join(ROWS)}")
    work = Path(out) / f"{name}_seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    val_ds, test_ds = eval_splits(name, recipe, root, seed=0, download=download)  # the same images for every seed
    if float_checkpoint is not None:
        selection = selection_from_checkpoint(float_checkpoint)
    else:
        selection = choose_imbalance(name, recipe, work, val_ds, seed, root, progress, budget)
    float_ckpt = Path(selection["checkpoint"])
    model, ckpt = load_checkpoint(float_ckpt)
    spec = ckpt["model_spec"]
    if spec.get("dataset") != name or spec.get("model") != "resnet18" or spec.get("quant"):
        raise ValueError(f"{float_ckpt} holds a {spec.get('model')} for {spec.get('dataset')}"
                         f"{' (quantized)' if spec.get('quant') else ''}; the study needs a float resnet18 for {name}")
    if spec.get("width", 1.0) != recipe.width:
        recipe = replace(recipe, width=spec.get("width", 1.0))
    options = {"threshold_method": threshold_method, "target_sensitivity": target_sensitivity}
    out_rows = []
    if "FP32" in rows or "PTQ int8" in rows:
        out_rows += [r for r in float_and_ptq_rows(model, name, recipe, val_ds, test_ds, work, seed, root, **options)
                     if r["method"] in rows]
    for step in recipe.qat:
        method = f"{'SGT + ' if step.sgt else ''}PACT W{step.bits}A{step.bits}"
        if method in rows:
            out_rows.append(qat_row(step, name, recipe, float_ckpt, selection["chosen"], val_ds, test_ds, work, seed,
                                    root, progress, budget, **options))
    fp = next((r for r in out_rows if r["method"] == "FP32"), None)
    for r in out_rows:
        if fp is not None and "auc" in r:
            r["auc_drop"] = fp["auc"] - r["auc"]
            r["size_vs_fp32"] = r["file_bytes"] / fp["file_bytes"]
            r["latency_vs_fp32"] = r["latency_ms"] / fp["latency_ms"] if r.get("latency_ms") else None
    return {"flag": name, "dataset": dataset_info(name).display_name, "task": dataset_info(name).task,
            "budget": budget, "seed": seed, "recipe": recipe.to_dict(), "selection": selection,
            "float_checkpoint": str(float_ckpt), "rows": out_rows, "seconds": time.perf_counter() - t0,
            "threshold_rule": options}


# ----------------------------------------------------------------------------- several seeds, tables, figures

SUMMARY_FIELDS = ("auc", "accuracy", "sensitivity", "specificity", "ece", "file_bytes", "latency_ms", "auc_drop")


def aggregate(studies: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of each row's numbers: {'method', 'bits', 'seeds', 'auc_mean',
    'auc_std', ...} (std is the sample standard deviation; 0 for one seed)."""
    out = []
    for method in [r["method"] for r in studies[0]["rows"]]:
        rows = [r for s in studies for r in s["rows"] if r["method"] == method and "skipped" not in r]
        if not rows:
            out.append(next(r for r in studies[0]["rows"] if r["method"] == method))
            continue
        agg = {"method": method, "bits": rows[0]["bits"], "seeds": [s["seed"] for s in studies]}
        for key in SUMMARY_FIELDS:
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                agg[f"{key}_mean"] = statistics.fmean(values)
                agg[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(agg)
    return out


def public_rows(rows: list[dict]) -> list[dict]:
    """Rows without the bulky 'report' and 'test_probs' (for JSON)."""
    return [{k: v for k, v in r.items() if k not in ("report", "test_probs")} for r in rows]


def _ci(row, key):
    low, high = row[f"{key}_ci"]
    return f"{row[key]:.3f} [{low:.3f}, {high:.3f}]"


def format_table(rows: list[dict]) -> str:
    """The results table (Markdown): model, bits, file size, latency, AUC with its CI, and the rest."""
    lines = ["| model | W/A bits | file | latency (ORT, b=1, 1 thread) | AUC [95% CI] | accuracy | sensitivity | "
             "specificity | ECE |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['method']} | {r['bits']} | — | — | not run: {r['skipped']} | | | | |")
            continue
        latency = f"{r['latency_ms']:.2f} ms" if r.get("latency_ms") else "—"
        lines.append(f"| {r['method']} | {r['bits']} | {r['file_bytes'] / 1e6:.2f} MB | {latency} | {_ci(r, 'auc')} | "
                     f"{_ci(r, 'accuracy')} | {_ci(r, 'sensitivity')} | {_ci(r, 'specificity')} | {r['ece']:.3f} |")
    return "\n".join(lines)


def format_aggregate(rows: list[dict]) -> str:
    """Mean ± standard deviation over seeds (Markdown)."""
    lines = ["| model | W/A bits | seeds | file (MB) | latency (ms) | AUC | accuracy | sensitivity | specificity | ECE |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def ms(r, key, scale=1.0, digits=3):
        if f"{key}_mean" not in r:
            return "—"
        return f"{r[f'{key}_mean'] * scale:.{digits}f} ± {r[f'{key}_std'] * scale:.{digits}f}"
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['method']} | {r['bits']} | | | | not run: {r['skipped']} | | | | |")
            continue
        lines.append(f"| {r['method']} | {r['bits']} | {len(r['seeds'])} | {ms(r, 'file_bytes', 1e-6, 2)} | "
                     f"{ms(r, 'latency_ms', 1, 2)} | {ms(r, 'auc')} | {ms(r, 'accuracy')} | {ms(r, 'sensitivity')} | "
                     f"{ms(r, 'specificity')} | {ms(r, 'ece')} |")
    return "\n".join(lines)


def plot_pareto(rows: list[dict], name: str | None = None, title: str | None = None, size: str = "file_bytes"):
    """Test AUC against file size and against latency (log scale), the Pareto front as a step line (a point is
    on it when nothing is both smaller/faster and at least as accurate). Saved as figures/<name>.png if named.
    size: 'file_bytes' (the ONNX files, int8 storage even at 4 bits) or 'packed_bytes' (PACT models' bit-packed
    files; the other rows keep their ONNX file)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ..edge.pareto import pareto_front
    from ..plots import save_figure

    if size not in ("file_bytes", "packed_bytes"):
        raise ValueError(f"size must be 'file_bytes' or 'packed_bytes', got {size!r}")
    rows = [{**r, "size": r.get(size) or r["file_bytes"]} for r in rows if "auc" in r]
    size_label = "file size (MB)" if size == "file_bytes" else "file size, PACT rows bit-packed (MB)"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, label, scale) in zip(axes, (("size", size_label, 1e-6),
                                              ("latency_ms", "latency, ONNX Runtime, batch 1, 1 thread (ms)", 1.0))):
        points = [r for r in rows if r.get(key)]
        for k, r in enumerate(points):
            low, high = r["auc_ci"]
            ax.errorbar(r[key] * scale, r["auc"], yerr=[[r["auc"] - low], [high - r["auc"]]], fmt="o",
                        color=f"C{ROWS.index(r['method']) if r['method'] in ROWS else k}", capsize=3, zorder=3)
            # staggered so that the labels of nearly equal points do not print over each other
            ax.annotate(r["method"], (r[key] * scale, r["auc"]), textcoords="offset points",
                        xytext=(6, 6 - 11 * (k % 3)), fontsize=7)
        front = pareto_front(points, key, "auc")
        if len(front) > 1:
            xs = [points[i][key] * scale for i in front]
            ax.step(xs, [points[i]["auc"] for i in front], where="post", color="k", alpha=0.4, lw=1,
                    label="Pareto front")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.3)
        ax.set_xlabel(label), ax.set_ylabel("test AUC (95% CI)")
        ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def plot_reliability_diagrams(rows: list[dict], name: str | None = None):
    """One reliability diagram per row (from its clinical report), side by side."""
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    rows = [r for r in rows if "report" in r]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        clinical.plot_reliability(r["report"]["calibration"], title=r["method"], ax=ax)
        ax.legend().set_visible(False)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def save_study(study: dict, path) -> Path:
    """The study as JSON, without the per-image test scores (the reports keep their calibration data)."""
    payload = {**study, "rows": [{k: v for k, v in r.items() if k != "test_probs"} for r in study["rows"]]}
    atomic_write_text(json.dumps(payload, indent=2, default=_jsonable), Path(path))
    return Path(path)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


# ----------------------------------------------------------------------------- one checkpoint (`qsal eval`)

def evaluate_checkpoint(checkpoint, dataset: str | None = None, *, threshold_method: str = "youden",
                        target_sensitivity: float = 0.95, val_subset: int | None = None,
                        test_subset: int | None = None, n_boot: int = 2000, seed: int = 0, root=None) -> dict:
    """The clinical report of one checkpoint on its MedMNIST flag: threshold chosen on the validation split,
    metrics (with bootstrap CIs) on the test split."""
    model, ckpt = load_checkpoint(checkpoint)
    name = check_flag(dataset or ckpt["model_spec"].get("dataset") or "")
    val_ds = load_dataset(name, "val", root=root, subset=val_subset, seed=0)
    test_ds = load_dataset(name, "test", root=root, subset=test_subset, seed=0)
    yv, pv = scores(model, val_ds)
    yt, pt = scores(model, test_ds)
    report = clinical.clinical_report(yv, pv, yt, pt, val_ds.info.task, method=threshold_method,
                                      target_sensitivity=target_sensitivity, n_boot=n_boot, seed=seed)
    return {"dataset": name, "checkpoint": str(checkpoint), "val_n": len(val_ds), "test_n": len(test_ds), **report}


# ----------------------------------------------------------------------------- the shipped float model

def ship_pretrained(dest=None, out=f"runs/pretrained_{PRETRAINED}", flag: str = "pneumoniamnist", seed: int = 0,
                    root=None, progress: bool = True) -> dict:
    """Make qsal_lab/pretrained/<PRETRAINED>/: train both imbalance candidates with the full recipe (finished runs
    in `out` are reused), let the validation split choose, and ship the chosen one with float16 weights, its
    COMMAND, its metrics.json (plus `shipped`: the clinical report of the shipped file itself) and selection.json."""
    from ..pretrained import HERE, slim_checkpoint

    recipe = medical_recipe("full")
    name = check_flag(flag)
    val_ds, test_ds = eval_splits(name, recipe, root)
    selection = choose_imbalance(name, recipe, out, val_ds, seed, root, progress, "full")
    run = Path(selection["checkpoint"]).parent
    dest = Path(dest) if dest else HERE / PRETRAINED
    command = (f"qsal train --dataset {name} --model resnet18 --width {recipe.width:g} --imbalance "
               f"{selection['chosen']} --augment {recipe.augment} --budget full --epochs {recipe.float_epochs} "
               f"--lr {recipe.float_lr:g} --seed {seed} --out {run}\n"
               f"# the candidate the validation split chose ({selection['criterion']}); the whole procedure, both "
               f"candidates and the float16 copy: tools/train_pretrained.sh (ship_pretrained in "
               f"qsal_lab/experiments/medical.py)")
    slim_checkpoint(run, dest, command, dtype="float16")

    shipped, ckpt = load_checkpoint(dest / "checkpoint.pt")
    original, _ = load_checkpoint(run)
    (yv, pv), (yt, pt) = scores(shipped, val_ds), scores(shipped, test_ds)
    report = clinical.clinical_report(yv, pv, yt, pt, val_ds.info.task, n_boot=recipe.n_boot, seed=seed)
    _, pt32 = scores(original, test_ds)
    keep = ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy", "ppv", "npv", "ece", "confusion",
            "ci", "ci_level", "n_boot", "medmnist", "n")
    metrics = json.loads((dest / "metrics.json").read_text())
    metrics["shipped"] = {
        "weights_dtype": "float16", "file_bytes": file_size_bytes(dest / "checkpoint.pt"),
        "parameters": sum(p.numel() for p in shipped.parameters()), "width": recipe.width,
        "train_seconds": sum(e["seconds"] for e in ckpt["history"]), "epochs": ckpt["epoch"],
        "operating_point": report["operating_point"], "test": {k: report[k] for k in keep if k in report},
        "val": report["val"], "fp32_run_test_auc": clinical.auc(yt, pt32, val_ds.info.task),
        "decisions_changed_by_float16": int((pt.argmax(1) != pt32.argmax(1)).sum()),
        "max_probability_change_by_float16": float(np.abs(pt - pt32).max()), "selection": selection}
    atomic_write_text(json.dumps(metrics, indent=2, default=_jsonable), dest / "metrics.json")
    atomic_write_text(json.dumps(selection, indent=2, default=_jsonable), dest / "selection.json")
    return metrics["shipped"]
