"""The medical-imaging study (chapter 9, bench/medical.py): one MedMNIST flag through every method, scored
the way a screening test is.

    float_checkpoint = pretrained_dir(PRETRAINED) / "checkpoint.pt"   # the shipped float model
    study = run_study("pneumoniamnist", out="runs/medical", float_checkpoint=float_checkpoint)
    print(format_table(study["rows"]))
    plot_pareto(study["rows"], name="medical_pareto")     # AUC against file size and latency

Rows (`ROWS`), each from its own model, in ONNX Runtime: FP32 (the float ResNet-18, class imbalance handled by a
weighted loss or a class-balanced sampler, whichever the *validation* split prefers: `choose_imbalance`); PTQ int8;
PACT W8A8 and W4A4 and SGT + PACT W4A4 as ONNX QDQ files (int8 storage even at 4 bits; the bit-packed file:
`packed_bytes`). `clinical_score` scores every row at a threshold chosen on the validation split, never on test:
AUC, accuracy, sensitivity and specificity with stratified-bootstrap 95 % intervals, ECE (the report: `clinical`).
A multi-label flag (ChestMNIST) runs with a per-label weighted loss and without the SGT row, which says why.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from torch import nn

from .. import clinical
from ..budget import current_budget
from ..data import dataset_info, load_dataset, make_loader
from ..edge.pareto import pareto_front
from ..files import atomic_write_text
from ..plots import save_figure
from ..pretrained import HERE
from ..quant.packing import load_packed
from ..saliency import SGTConfig
from ..train import load_checkpoint, predict, train_model
from . import study
from .report import jsonable
from .study import FineTune, Precision, Row, against, table

PRETRAINED = "pneumoniamnist_resnet18_w05"  # the shipped float model (qsal_lab/pretrained/<PRETRAINED>/)
ROWS = ("FP32", "PTQ int8", "PACT W8A8", "PACT W4A4", "SGT + PACT W4A4")


@dataclass(frozen=True)
class MedicalRecipe:
    """Everything the study does at one budget. Subsets are stratified and seeded; None = the whole split."""
    width: float                      # ResNet-18 channel multiplier (0.5: 32..256 channels)
    float_epochs: int                 # fixed schedule: validation AUC saturates, so no best-epoch picking
    float_lr: float
    train_subset: int | None
    val_subset: int | None
    test_subset: int | None
    qat: tuple = ()                   # FineTunes, in ROWS order after PTQ
    augment: str = "shift"            # +-2 px, no flip
    calib_images: int = 512
    n_boot: int = 2000
    latency_repeats: int = 50
    seeds: tuple = (0,)
    imbalance_candidates: tuple = ("weighted_loss", "sampler")

    def to_dict(self) -> dict:
        return asdict(self)


def _qat_steps(w8a8, w4a4, sgt):
    """PACT W8A8, PACT W4A4 and SGT + PACT W4A4, each (epochs, training images per epoch), symmetric per-channel
    weights (they keep each weight's scale, so the quantized ResNet starts where the float one ended); SGT masks
    10 % of the pixels: a chest X-ray has little background to mask."""
    return (FineTune(8, *w8a8, lr=2e-4), FineTune(4, *w4a4, lr=5e-4), FineTune(4, *sgt, lr=5e-4, sgt_fraction=0.1))


RECIPES = {  # book: from the shipped float model; ci: a smoke run on tiny subsets, the numbers mean nothing
    "ci": MedicalRecipe(width=0.25, float_epochs=1, float_lr=1e-3, train_subset=256, val_subset=160, test_subset=160,
                        qat=_qat_steps((1, 128), (1, 128), (1, 128)), calib_images=64, n_boot=100, latency_repeats=5),
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


def clinical_score(val_ds, test_ds, n_boot: int = 2000, threshold_method: str = "youden",
                   target_sensitivity: float = 0.95, seed: int = 0):
    """A study score: the clinical report of a model, its threshold chosen on val_ds, its numbers from test_ds.
    Its headline figures become metrics, the report the row's `clinical`, the test scores a note."""
    def score(model) -> dict:
        (yv, pv), (yt, pt) = scores(model, val_ds), scores(model, test_ds)
        report = clinical.clinical_report(yv, pv, yt, pt, val_ds.info.task, method=threshold_method,
                                          target_sensitivity=target_sensitivity, n_boot=n_boot, seed=seed)
        shown = ["auc", "sensitivity", "specificity"] + (["ppv", "npv"] if "ppv" in report else [])
        metrics = {**{k: report[k] for k in shown}, **{f"{k}_ci": report["ci"][k] for k in shown[:3] + ["accuracy"]},
                   "balanced_accuracy": report["balanced_accuracy"], "ece": report["ece"],
                   "threshold": report["operating_point"]["threshold"],
                   "threshold_method": report["operating_point"]["method"], "medmnist_auc": report["medmnist"]["auc"],
                   "medmnist_acc": report["medmnist"]["acc"]}
        return {"accuracy": report["accuracy"], "clinical": report, "metrics": metrics,
                "notes": {"test_probs": pt, "test_n": len(test_ds), "val_n": len(val_ds)}}
    return score


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


def agreement(a: np.ndarray, b: np.ndarray, task: str) -> float:
    """Share of test decisions two models make alike (argmax; per label at 0.5 for multi-label tasks)."""
    if clinical.canonical_task(task) == "multi-label":
        return float(((a > 0.5) == (b > 0.5)).mean())
    return float((a.argmax(1) == b.argmax(1)).mean())


# ----------------------------------------------------------------------------- the float model

def same_training(path, name: str, recipe: MedicalRecipe, imbalance: str, seed: int) -> bool:
    """Whether `path` holds a finished float run made exactly as train_float would make it now."""
    ckpt = study.finished_run(path, dataset=name, model="resnet18", seed=seed, imbalance=imbalance, quant=None,
                              sgt=None, init_from=None)
    wanted = {"epochs": recipe.float_epochs, "lr": recipe.float_lr, "train_subset": recipe.train_subset,
              "augment": recipe.augment}
    return ckpt is not None and ckpt["model_spec"].get("width", 1.0) == recipe.width and \
        all(ckpt["config"]["recipe"].get(k) == v for k, v in wanted.items())


def train_float(name: str, recipe: MedicalRecipe, out, imbalance: str, seed: int = 0, root=None,
                progress: bool = True, budget: str | None = None) -> Path:
    """Train the float ResNet-18 with one imbalance handling; returns its checkpoint path. A finished run in
    `out` made with the same data, recipe, imbalance handling and seed is reused (training is deterministic)."""
    out = Path(out)
    if same_training(out / "checkpoint.pt", name, recipe, imbalance, seed):
        print(f"reusing the finished run in {out} (same data, recipe, imbalance handling and seed)")
        return out / "checkpoint.pt"
    train_model(name, "resnet18", budget=budget, out=out, width=recipe.width, imbalance=imbalance,
                augment=recipe.augment, epochs=recipe.float_epochs, lr=recipe.float_lr,
                train_subset=recipe.train_subset, test_subset=recipe.test_subset, seed=seed, root=root,
                progress=progress, resume=False, device="cpu")
    return out / "checkpoint.pt"


def choose_imbalance(name: str, recipe: MedicalRecipe, out, val_ds, seed: int = 0, root=None, progress: bool = True,
                     budget: str | None = None) -> dict:
    """Train one float model per imbalance candidate (no sampler for several labels per image) and keep the one with
    the lowest class-balanced cross-entropy on the validation split. Returns {'chosen', 'checkpoint', 'criterion',
    'candidates': [...], 'val_n'}."""
    table_, multi_label = [], dataset_info(name).task == "multi-label"
    candidates = [c for c in recipe.imbalance_candidates if not (multi_label and c == "sampler")] or ["weighted_loss"]
    for imbalance in candidates:
        path = train_float(name, recipe, Path(out) / f"float_{imbalance}_seed{seed}", imbalance, seed, root, progress,
                           budget)
        y, p = scores(load_checkpoint(path)[0], val_ds)
        table_.append({"imbalance": imbalance, "checkpoint": str(path), "val_auc": clinical.auc(y, p, val_ds.info.task),
                       "val_balanced_nll": balanced_nll(y, p, val_ds.info.task)})
    best = min(table_, key=lambda r: r["val_balanced_nll"])
    return {"chosen": best["imbalance"], "checkpoint": best["checkpoint"], "candidates": table_,
            "criterion": "lowest class-balanced cross-entropy on the validation split", "val_n": len(val_ds)}


def selection_from_checkpoint(path) -> dict:
    """What a given float checkpoint says about its imbalance handling (and the selection that chose it, if
    a selection.json lies beside it, as in the shipped pretrained folder)."""
    path = Path(path)
    record = path.parent / "selection.json"
    if record.exists():
        return {**json.loads(record.read_text()), "checkpoint": str(path), "source": str(record)}
    return {"chosen": (load_checkpoint(path)[1].get("config") or {}).get("imbalance", "none"), "checkpoint": str(path),
            "candidates": [], "criterion": "given: the checkpoint's own imbalance handling (no selection in this run)"}


# ----------------------------------------------------------------------------- rows

def float_and_ptq_rows(model: nn.Module, name: str, recipe: MedicalRecipe, example, work: Path, score,
                       seed: int = 0, root=None) -> list[Row]:
    """FP32 and PTQ int8 in ONNX Runtime (study.ort_rows), calibrated on training images."""
    info = dataset_info(name)
    calib = load_dataset(name, "train", root=root, subset=recipe.calib_images, seed=seed + 1)
    fp32, int8 = study.ort_rows(model, score, make_loader(calib, batch_size=64), work, info.display_name, example,
                                {"dataset": name, "model": "resnet18"}, repeats=recipe.latency_repeats)
    int8.metrics["agreement_with_fp32"] = agreement(int8.notes["test_probs"], fp32.notes["test_probs"], info.task)
    return [replace(fp32, model="FP32"), replace(int8, model="PTQ int8")]


def qat_row(step: FineTune, name: str, recipe: MedicalRecipe, float_ckpt, imbalance: str, work: Path, score,
            seed: int = 0, root=None, progress: bool = True, budget: str | None = None) -> Row:
    """PACT (SGT + PACT) fine-tuning of the float model (study.pact_row), scored from its ONNX QDQ file, or from its
    bit-packed file when the exporter refuses (`onnx_export_error` says why)."""
    info = dataset_info(name)
    if step.sgt and info.task == "multi-label":
        return Row(step.model, info.display_name, Precision.of(step.config()), notes={
            "skipped": f"saliency-guided training needs one class per image; {info.display_name} is multi-label"})
    imbalance = "sampler" if step.sgt else imbalance  # SGT's own cross-entropy takes no class weights
    sgt = SGTConfig(fraction=step.sgt_fraction) if step.sgt else None

    def train(step, run):
        model, history = train_model(name, "resnet18", budget=budget, out=run, quant=step.config(), sgt=sgt,
                                     init_from=float_ckpt, width=recipe.width, imbalance=imbalance,
                                     augment=recipe.augment, epochs=step.epochs, lr=step.lr,
                                     train_subset=step.train_subset, test_subset=recipe.test_subset, seed=seed,
                                     root=root, progress=progress, resume=False, device="cpu")
        return model, history.epochs, {"imbalance": imbalance, "sgt": sgt.to_dict() if sgt else None}

    build = {"name": "resnet18", "num_classes": info.num_classes, "in_channels": info.in_channels,
             "image_size": info.image_size, "width": recipe.width}
    packed = study.pact_row(step, train, score, work, info.display_name, build)
    # the example batch (training images) fixes the input's 8-bit range and checks the file against the model
    calib = load_dataset(name, "train", root=root, subset=min(recipe.calib_images, 256), seed=seed + 1)
    example = torch.stack([calib[i][0] for i in range(len(calib))])
    try:
        row = study.qdq_row(load_packed(packed.notes["packed_path"]), step.model, packed.precision, score,
                            Path(packed.notes["packed_path"]).parent / "model_qdq.onnx", example, packed.data,
                            {"dataset": name, "model": "resnet18", "method": step.model}, recipe.latency_repeats)
    except RuntimeError as e:  # the exporter refuses a file that disagrees with the model (e.g. near-tied logits)
        packed.notes["onnx_export_error"] = str(e)
        return packed
    row.metrics.update(packed_bytes=packed.file_bytes, agreement_with_fake_quant=agreement(
        row.notes["test_probs"], packed.notes["test_probs"], info.task))
    row.notes.update({k: v for k, v in packed.notes.items() if k not in row.notes})
    return row


# ----------------------------------------------------------------------------- the study

def run_study(flag: str = "pneumoniamnist", out="runs/medical", *, budget: str | None = None,
              float_checkpoint=None, seed: int = 0, size: int | None = None, root=None, rows=ROWS,
              threshold_method: str = "youden", target_sensitivity: float = 0.95, progress: bool = True,
              recipe: MedicalRecipe | None = None, download: bool = True) -> dict:
    """Every row of `rows` for one flag and seed, against FP32 (study.against, plus `auc_drop`). With
    `float_checkpoint`, the float model is that one (its imbalance handling as recorded); else both imbalance
    candidates are trained and validation picks. Returns {'flag', 'budget', 'recipe', 'selection', 'rows', ...}."""
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
    model, ckpt = study.float_checkpoint(float_ckpt, "resnet18", name)
    recipe = replace(recipe, width=ckpt["model_spec"].get("width", 1.0))
    options = {"threshold_method": threshold_method, "target_sensitivity": target_sensitivity}
    score = clinical_score(val_ds, test_ds, recipe.n_boot, seed=seed, **options)
    result = []
    if "FP32" in rows or "PTQ int8" in rows:
        ort = float_and_ptq_rows(model, name, recipe, test_ds[0][0].unsqueeze(0), work, score, seed, root)
        result += [r for r in ort if r.model in rows]
    result += [qat_row(s, name, recipe, float_ckpt, selection["chosen"], work, score, seed, root, progress, budget)
               for s in recipe.qat if s.model in rows]
    fp = next((r for r in result if r.model == "FP32"), None)
    if fp is not None:
        against(result, fp)
        for r in result:
            if "auc" in r:
                r.metrics["auc_drop"] = fp["auc"] - r["auc"]
    return {"flag": name, "dataset": dataset_info(name).display_name, "task": dataset_info(name).task,
            "budget": budget, "seed": seed, "recipe": recipe.to_dict(), "selection": selection,
            "float_checkpoint": str(float_ckpt), "rows": result, "seconds": time.perf_counter() - t0,
            "threshold_rule": options}


# ----------------------------------------------------------------------------- several seeds, tables, figures

SUMMARY_FIELDS = ("auc", "accuracy", "sensitivity", "specificity", "ece", "file_bytes", "latency_ms", "auc_drop")


def aggregate(studies: list[dict]) -> list[dict]:
    """Mean and sample standard deviation over seeds of each row's numbers: {'model', 'precision', 'seeds',
    'auc_mean', 'auc_std', ...}; a row skipped in every seed says why ('skipped')."""
    out = []
    for first in studies[0]["rows"]:
        rows = [r for s in studies for r in s["rows"] if r.model == first.model and "skipped" not in r]
        if not rows:
            out.append({"model": first.model, "precision": first.precision, "skipped": first["skipped"]})
            continue
        agg = {"model": first.model, "precision": first.precision, "seeds": [s["seed"] for s in studies]}
        for key in SUMMARY_FIELDS:
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                agg[f"{key}_mean"] = statistics.fmean(values)
                agg[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(agg)
    return out


def _ci(r, key):
    if "skipped" in r:
        return "—"
    low, high = r[f"{key}_ci"]
    return f"{r[key]:.3f} [{low:.3f}, {high:.3f}]"


def format_table(rows: list[Row]) -> str:
    """The results table (Markdown): model, bits, file size, latency, AUC with its CI, and the rest."""
    return table(rows, {
        "model": lambda r: r.model, "W/A bits": lambda r: str(r.precision),
        "file": lambda r: "—" if r.file_bytes is None else f"{r.file_bytes / 1e6:.2f} MB",
        "latency (ORT, b=1, 1 thread)": lambda r: f"{r.latency_ms:.2f} ms" if r.latency_ms else "—",
        "AUC [95% CI]": lambda r: f"not run: {r['skipped']}" if "skipped" in r else _ci(r, "auc"),
        "accuracy": lambda r: _ci(r, "accuracy"), "sensitivity": lambda r: _ci(r, "sensitivity"),
        "specificity": lambda r: _ci(r, "specificity"), "ECE": lambda r: "—" if "skipped" in r else f"{r['ece']:.3f}"})


def format_aggregate(rows: list[dict]) -> str:
    """Mean ± standard deviation over seeds (Markdown)."""
    def ms(key, scale=1.0, digits=3):
        return lambda r: (f"{r[f'{key}_mean'] * scale:.{digits}f} ± {r[f'{key}_std'] * scale:.{digits}f}"
                          if f"{key}_mean" in r else "—")

    skipped = lambda r: "skipped" in r  # noqa: E731  (a row skipped in every seed)
    return table(rows, {
        "model": lambda r: r["model"], "W/A bits": lambda r: str(r["precision"]),
        "seeds": lambda r: "" if skipped(r) else len(r["seeds"]), "file (MB)": ms("file_bytes", 1e-6, 2),
        "latency (ms)": ms("latency_ms", 1, 2),
        "AUC": lambda r: f"not run: {r['skipped']}" if skipped(r) else ms("auc")(r), "accuracy": ms("accuracy"),
        "sensitivity": ms("sensitivity"), "specificity": ms("specificity"), "ECE": ms("ece")})


def plot_pareto(rows: list[Row], name: str | None = None, title: str | None = None, size: str = "file_bytes"):
    """Test AUC against file size and against latency (log scale), the Pareto front as a step line (a point is
    on it when nothing is both smaller/faster and at least as accurate). Saved as figures/<name>.png if named.
    size: 'file_bytes' (the ONNX files, int8 storage even at 4 bits) or 'packed_bytes' (PACT models' bit-packed
    files; the other rows keep their ONNX file)."""
    if size not in ("file_bytes", "packed_bytes"):
        raise ValueError(f"size must be 'file_bytes' or 'packed_bytes', got {size!r}")
    points = [{"model": r.model, "auc": r["auc"], "auc_ci": r["auc_ci"], "latency_ms": r.latency_ms,
               "size": r.get(size) or r.file_bytes} for r in rows if "auc" in r]
    size_label = "file size (MB)" if size == "file_bytes" else "file size, PACT rows bit-packed (MB)"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, label, scale) in zip(axes, (("size", size_label, 1e-6),
                                              ("latency_ms", "latency, ONNX Runtime, batch 1, 1 thread (ms)", 1.0))):
        shown = [p for p in points if p.get(key)]
        for k, p in enumerate(shown):
            low, high = p["auc_ci"]
            ax.errorbar(p[key] * scale, p["auc"], yerr=[[p["auc"] - low], [high - p["auc"]]], fmt="o",
                        color=f"C{ROWS.index(p['model']) if p['model'] in ROWS else k}", capsize=3, zorder=3)
            # staggered so that the labels of nearly equal points do not print over each other
            ax.annotate(p["model"], (p[key] * scale, p["auc"]), textcoords="offset points",
                        xytext=(6, 6 - 11 * (k % 3)), fontsize=7)
        front = pareto_front(shown, key, "auc")
        if len(front) > 1:
            ax.step([shown[i][key] * scale for i in front], [shown[i]["auc"] for i in front], where="post", color="k",
                    alpha=0.4, lw=1, label="Pareto front")
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


def plot_reliability_diagrams(rows: list[Row], name: str | None = None):
    """One reliability diagram per row (from its clinical report), side by side."""
    rows = [r for r in rows if r.clinical]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        clinical.plot_reliability(r.clinical["calibration"], title=r.model, ax=ax)
        ax.legend().set_visible(False)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


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
    report = clinical_score(val_ds, test_ds, n_boot, threshold_method, target_sensitivity, seed)(model)["clinical"]
    return {"dataset": name, "checkpoint": str(checkpoint), "val_n": len(val_ds), "test_n": len(test_ds), **report}


# ----------------------------------------------------------------------------- the shipped float model

def ship_pretrained(dest=None, out=f"runs/pretrained_{PRETRAINED}", flag: str = "pneumoniamnist", seed: int = 0,
                    root=None, progress: bool = True) -> dict:
    """Make qsal_lab/pretrained/<PRETRAINED>/: train both imbalance candidates with the full recipe (finished runs
    in `out` are reused), let the validation split choose, and ship the chosen one with float16 weights, its
    COMMAND, its metrics.json (plus `shipped`: the clinical report of the shipped file itself) and selection.json."""
    recipe = medical_recipe("full")
    name = check_flag(flag)
    val_ds, test_ds = eval_splits(name, recipe, root)
    selection = choose_imbalance(name, recipe, out, val_ds, seed, root, progress, "full")
    run = Path(selection["checkpoint"]).parent
    _, pt32 = scores(load_checkpoint(run)[0], test_ds)
    command = (f"qsal train --dataset {name} --model resnet18 --width {recipe.width:g} --imbalance "
               f"{selection['chosen']} --augment {recipe.augment} --budget full --epochs {recipe.float_epochs} "
               f"--lr {recipe.float_lr:g} --seed {seed} --out {run}\n"
               f"# the candidate the validation split chose ({selection['criterion']}); the whole procedure, both "
               f"candidates and the float16 copy: tools/train_pretrained.sh (ship_pretrained in "
               f"qsal_lab/experiments/medical.py)")
    keep = ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy", "ppv", "npv", "ece", "confusion",
            "ci", "ci_level", "n_boot", "medmnist", "n")

    def measure(shipped) -> dict:
        report = clinical_score(val_ds, test_ds, recipe.n_boot, seed=seed)(shipped)["clinical"]
        yt, pt = scores(shipped, test_ds)
        return {"weights_dtype": "float16", "width": recipe.width, "operating_point": report["operating_point"],
                "test": {k: report[k] for k in keep if k in report}, "val": report["val"],
                "fp32_run_test_auc": clinical.auc(yt, pt32, test_ds.info.task),
                "decisions_changed_by_float16": int((pt.argmax(1) != pt32.argmax(1)).sum()),
                "max_probability_change_by_float16": float(np.abs(pt - pt32).max()), "selection": selection}

    dest = Path(dest or HERE / PRETRAINED)
    shipped = study.ship_checkpoint(run, dest, command, measure, dtype="float16")
    atomic_write_text(json.dumps(selection, indent=2, default=jsonable), dest / "selection.json")
    return shipped
