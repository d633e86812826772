"""Saliency of float, PACT and int8 models side by side: chapters 6 and 7 and bench/saliency_mnist.py.

    models = load_shipped(bits=(8, 4, 2))                 # Standard, SGT, PACT k, SGT + PACT k (qsal_lab.pretrained)
    models.update(int8_models(models, calib_loader, out="runs/saliency_sweep"))   # + int8 ONNX of both floats
    x, y = saliency_images(256)
    rows = saliency_rows(models, x, y, test_loader)
    print(format_table(rows))

Every model is a `SweepModel`: a label, its family ("Standard" or "SGT": trained without or with
saliency-guided training), its bit width (32 = float) and the model itself (a torch module, or an
`OnnxClassifier`). One row per (model, attribution method):

  accuracy           on `test_loader` (the budget's test set), and its drop against the family's float
                     model (report.drop_pt: float minus quantized, positive = worse)
  area, random_area  faithfulness (saliency.faithfulness): accuracy as each image's most salient pixels are
                     replaced by noise, normalised area under the curve, lower = more faithful; the same for
                     random pixels; `gap` = random_area - area (larger = the map finds pixels the model needs)
                     on the fine grid FINE (0-10 % in 2 % steps) and the coarse one COARSE (0-90 % in 10 %)
  gini               concentration of the maps (1 = on one pixel)
  spearman, top10_iou, ssim
                     agreement with the maps of the family's float model on the same images (None for the
                     float model itself)

Gradient methods (saliency, IG) run on torch models only; occlusion runs on every model, and is the one
method that reaches the int8 ONNX files (it only evaluates the model).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import load_dataset
from ..pretrained import available, load_pretrained
from ..quant.int8 import OnnxClassifier, export_onnx, quantize_onnx
from ..saliency import agreement, attribute, concentration, faithfulness
from ..saliency.metrics import predict_labels
from .pact_sweep import markdown_table
from .report import describe_drop, drop_pt

FAMILIES = ("Standard", "SGT")
FINE = tuple(round(0.02 * i, 2) for i in range(6))   # 0, 2, ..., 10 % removed: where MNIST models differ
COARSE = tuple(i / 10 for i in range(10))            # 0, 10, ..., 90 %: the SGT paper's grid
GRADIENT_METHODS = ("saliency", "ig")
OPTIONS = {"occlusion": {"window": 4, "stride": 2}, "ig": {"n_steps": 32}}  # chapter 5's occlusion; IG 32 points
TOPK = 0.1


@dataclass
class SweepModel:
    """One model of the sweep: `family` Standard or SGT, `bits` 32 for float, `kind` torch or onnx."""
    label: str
    family: str
    bits: int
    model: object
    kind: str = "torch"
    source: str = ""
    info: dict = field(default_factory=dict, repr=False)


def shipped_name(family: str, bits: int = 32) -> str:
    """The folder in qsal_lab/pretrained/ of a family's model at a bit width."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")
    if bits == 32:
        return "mnist_smallcnn" if family == "Standard" else "mnist_sgt_smallcnn"
    return f"mnist_{'sgt_' if family == 'SGT' else ''}pact_w{bits}a{bits}"


def label_of(family: str, bits: int = 32, kind: str = "torch") -> str:
    if kind == "onnx":
        return f"{family} int8 (ORT)"
    if bits == 32:
        return family
    return f"{'PACT' if family == 'Standard' else 'SGT + PACT'} W{bits}A{bits}"


def load_shipped(bits=(8, 4, 2), families=FAMILIES) -> dict[str, SweepModel]:
    """The shipped float models of each family and their PACT fine-tunings at `bits`, in that order."""
    out = {}
    for family in families:
        for b in (32, *bits):
            name = shipped_name(family, b)
            if name not in available():
                raise FileNotFoundError(f"no shipped model {name!r} in qsal_lab/pretrained; train it with "
                                        f"tools/train_pretrained.sh")
            model, info = load_pretrained(name)
            label = label_of(family, b)
            out[label] = SweepModel(label, family, b, model.eval(), "torch", name, info)
    return out


def int8_models(models: dict[str, SweepModel], calib_loader, out: str | Path, num_batches: int | None = None,
                families=FAMILIES) -> dict[str, SweepModel]:
    """Each family's float model exported to ONNX and quantized to int8 by ONNX Runtime (chapter 3's PTQ:
    QDQ, per-channel int8 weights, min-max calibration on `calib_loader`), run on one thread."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    example = next(iter(calib_loader))[0]
    result = {}
    for family in families:
        fp = next(m for m in models.values() if m.family == family and m.bits == 32 and m.kind == "torch")
        stem = fp.source or family.lower()
        fp32 = export_onnx(fp.model.cpu().eval(), out / f"{stem}_fp32.onnx", input_shape=(1, *example.shape[1:]),
                           metadata={"model_name": "smallcnn", "dataset": "mnist"})
        int8 = quantize_onnx(fp32, out / f"{stem}_int8.onnx", calib_loader,
                             num_batches=num_batches or len(calib_loader), method="minmax")
        label = label_of(family, 8, "onnx")
        result[label] = SweepModel(label, family, 8, OnnxClassifier(int8, threads=1), "onnx", str(int8))
    return result


def saliency_images(n: int, seed: int = 0, root: str | None = None):
    """(x, y): n MNIST test digits (a stratified subset, the same on every run), normalised as models see them."""
    ds = load_dataset("mnist", "test", subset=n, seed=seed, root=root)
    return torch.stack([ds[i][0] for i in range(len(ds))]), ds.labels.clone()


def accuracy(model, loader) -> float:
    """Test accuracy of a torch module or any callable returning logits (an OnnxClassifier)."""
    right = total = 0
    for x, y in loader:
        right += int((predict_labels(model, x, batch_size=len(x)) == torch.as_tensor(y)).sum())
        total += len(y)
    return right / total


def methods_for(model: SweepModel, methods=GRADIENT_METHODS + ("occlusion",)) -> tuple:
    return tuple(m for m in methods if model.kind == "torch" or m not in GRADIENT_METHODS)


def saliency_rows(models: dict[str, SweepModel], x, y, test_loader=None, methods=GRADIENT_METHODS + ("occlusion",),
                  seed: int = 0, progress: bool = True, keep_maps: bool = False) -> list[dict]:
    """One row per (model, method) with the metrics of the module docstring. Maps of the family's float model
    are the reference for agreement, so each family's float model must be among `models` (and comes first).
    With keep_maps, each row also holds its "maps" (for figures)."""
    rows, reference, acc = [], {}, {}
    for sm in tqdm(list(models.values()), desc="models", disable=not progress):
        if test_loader is not None:
            acc[sm.label] = accuracy(sm.model, test_loader)
        for method in methods_for(sm, methods):
            maps = attribute(sm.model, x, y, method, **OPTIONS.get(method, {}))
            fine = faithfulness(sm.model, x, y, maps={method: maps}, fractions=FINE, seed=seed)
            coarse = faithfulness(sm.model, x, y, maps={method: maps}, fractions=COARSE, seed=seed)
            key = (sm.family, method)
            if sm.bits == 32 and sm.kind == "torch":
                reference[key] = maps
            if key not in reference:
                raise ValueError(f"{sm.label}: the {sm.family} float model must come before its quantized models")
            agree = None if sm.bits == 32 and sm.kind == "torch" else agreement(reference[key], maps, TOPK)
            row = {"model": sm.label, "family": sm.family, "bits": sm.bits, "kind": sm.kind, "method": method,
                   "images": len(x), "accuracy": acc.get(sm.label),
                   "area": fine[method].area, "random_area": fine["random"].area,
                   "gap": fine["random"].area - fine[method].area,
                   "curve": fine[method].accuracy, "random_curve": fine["random"].accuracy,
                   "area_coarse": coarse[method].area, "random_area_coarse": coarse["random"].area,
                   "gap_coarse": coarse["random"].area - coarse[method].area,
                   "curve_coarse": coarse[method].accuracy, "random_curve_coarse": coarse["random"].accuracy,
                   "gini": concentration(maps)["gini"],
                   "spearman": agree and agree["spearman"], "top10_iou": agree and agree[f"top{round(100 * TOPK)}_iou"],
                   "ssim": agree and agree["ssim"]}
            if keep_maps:
                row["maps"] = maps
            rows.append(row)
    for row in rows:  # accuracy against the family's float model
        fp = next((r for r in rows if r["family"] == row["family"] and r["bits"] == 32 and r["kind"] == "torch"), None)
        row["drop_pt"] = (drop_pt(fp["accuracy"], row["accuracy"])
                          if fp is not None and row["accuracy"] is not None and fp["accuracy"] is not None else None)
    return rows


def find_row(rows: list[dict], model: str, method: str = "saliency") -> dict:
    for r in rows:
        if r["model"] == model and r["method"] == method:
            return r
    raise KeyError(f"no row for {model!r} with {method!r}; have: "
                   + ", ".join(sorted({f'{r["model"]}/{r["method"]}' for r in rows})))


def _num(v, fmt="{:.3f}"):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def format_table(rows: list[dict], methods=None, coarse: bool = False) -> str:
    """The rows as a Markdown table (optionally only some methods; coarse=True: the 0-90 % grid's areas)."""
    suffix = "_coarse" if coarse else ""
    body = []
    for r in rows:
        if methods is not None and r["method"] not in methods:
            continue
        vs = "–" if r["bits"] == 32 and r["kind"] == "torch" else (
            describe_drop(r["drop_pt"], reference=f"{r['family']} float") if r["drop_pt"] is not None else "–")
        body.append([r["model"], "32/32" if r["bits"] == 32 else f"{r['bits']}/{r['bits']}",
                     _num(r["accuracy"], "{:.2%}"), vs, r["method"], _num(r["area" + suffix]),
                     _num(r["random_area" + suffix]), _num(r["gap" + suffix], "{:+.3f}"), _num(r["gini"]),
                     _num(r["spearman"], "{:.2f}"), _num(r["top10_iou"], "{:.2f}"), _num(r["ssim"], "{:.2f}")])
    grid = "0-90 %" if coarse else "0-10 %"
    return markdown_table(["model", "W/A bits", "test accuracy", "vs float", "method", f"area ({grid})",
                           "random area", "random − area", "Gini", "Spearman vs float", "top-10 % IoU vs float",
                           "SSIM vs float"], body)


def by_bits(rows: list[dict], family: str, method: str = "saliency", key: str = "gap") -> dict[int, float]:
    """{bits: row[key]} for a family's torch models (32 = float), bits descending."""
    got = {r["bits"]: r[key] for r in rows if r["family"] == family and r["method"] == method and r["kind"] == "torch"}
    return dict(sorted(got.items(), reverse=True))


# What "degraded" means in `first_degraded` (chapter 7 states these): stated tolerances, not laws.
TOLERANCES = {"accuracy": 0.5,      # pt below the float model (the benchmark's W4A4 tolerance)
              "faithfulness": 0.5,  # the random − area gap fell below half the float model's
              "agreement": 0.5}     # Spearman correlation with the float maps below 0.5


def first_degraded(rows: list[dict], family: str, method: str = "saliency", tolerances: dict | None = None) -> dict:
    """{"accuracy" | "faithfulness" | "agreement": the largest bit width at which it left its tolerance
    (None if it never did)}, for a family's PACT models. Faithfulness is 32 when the float model's own maps
    do no better than random removal (random − area <= 0): there is no gap to lose."""
    tol = {**TOLERANCES, **(tolerances or {})}
    drops = by_bits(rows, family, method, "drop_pt")
    gaps = by_bits(rows, family, method, "gap")
    rho = by_bits(rows, family, method, "spearman")
    fp_gap = gaps.pop(32)
    tests = {"accuracy": lambda b: drops[b] > tol["accuracy"],
             "faithfulness": lambda b: gaps[b] < tol["faithfulness"] * fp_gap,
             "agreement": lambda b: rho[b] is not None and rho[b] < tol["agreement"]}
    out = {name: next((b for b in gaps if test(b)), None) for name, test in tests.items()}
    if fp_gap <= 0:
        out["faithfulness"] = 32
    return out


def summary_table(rows: list[dict]) -> str:
    """One line per model: accuracy and its drop, each method's faithfulness area (and random − area), the
    saliency maps' Gini index and their agreement with the float model's (occlusion's for an ONNX model)."""
    body = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {r["method"]: r for r in rows if r["model"] == model}
        first = next(iter(mine.values()))
        is_float = first["bits"] == 32 and first["kind"] == "torch"
        vs = "–" if is_float or first["drop_pt"] is None else describe_drop(first["drop_pt"],
                                                                             reference=f"{first['family']} float")
        areas = [f"{mine[m]['area']:.3f} ({mine[m]['gap']:+.3f})" if m in mine else "–"
                 for m in GRADIENT_METHODS + ("occlusion",)]
        shown = mine.get("saliency") or mine.get("occlusion")
        body.append([model, "32/32" if first["bits"] == 32 else f"{first['bits']}/{first['bits']}",
                     _num(first["accuracy"], "{:.2%}"), vs, *areas, _num(shown["gini"]),
                     _num(shown["spearman"], "{:.2f}"), _num(shown["top10_iou"], "{:.2f}")])
    return markdown_table(["model", "W/A bits", "test accuracy", "vs float", "area: saliency (random − area)",
                           "IG", "occlusion", "Gini", "Spearman vs float", "top-10 % IoU vs float"], body)
