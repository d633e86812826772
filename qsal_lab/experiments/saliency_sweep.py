"""Saliency of float, PACT and int8 models side by side: chapters 6 and 7 and bench/saliency_mnist.py.

    models = load_shipped(bits=(8, 4, 2))                 # Standard, SGT, PACT k, SGT + PACT k (qsal_lab.pretrained)
    models.update(int8_models(models, calib_loader, out="runs/saliency_sweep"))   # + int8 ONNX of both floats
    x, y = saliency_images(256)
    rows = saliency_rows(models, x, y, test_loader)
    print(format_table(rows))

A `SweepModel` is a label, a family ("Standard" or "SGT": trained without or with saliency-guided training), a bit
width (32 = float) and a torch module or an OnnxClassifier. One `study.Row` per (model, attribution method; the
method, family and kind are notes): accuracy and its drop against the family's float model, and as metrics
  area, random_area, gap   faithfulness (saliency.faithfulness) on the fine grid FINE and, suffixed _coarse, COARSE:
                           the normalised area under accuracy as the most salient (or random) pixels are replaced
                           by noise, lower = more faithful; gap = random_area - area
  gini                     concentration of the maps (1 = on one pixel)
  spearman, top10_iou, ssim  agreement with the family's float model's maps (None for that model itself)
Gradient methods (saliency, IG) need torch models; occlusion only evaluates, so it also reaches the int8 ONNX files.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..budget import recipe
from ..data import load_dataset
from ..edge import ORT_INT8, prepare_backends
from ..pretrained import available, load_pretrained
from ..quant.int8 import OnnxClassifier
from ..saliency import SGTConfig, agreement, attribute, concentration, faithfulness, train_step_seconds
from .pact_sweep import METADATA, mnist_batches
from .report import describe_drop, load_average
from .study import INT8, Precision, Row, accuracy_on, against, table

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

    @property
    def precision(self) -> Precision:
        return INT8 if self.kind == "onnx" else Precision() if self.bits == 32 else Precision(self.bits, self.bits, 8)


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
            out[label_of(family, b)] = SweepModel(label_of(family, b), family, b, model.eval(), "torch", name, info)
    return out


def int8_models(models: dict[str, SweepModel], calib_loader, out, num_batches: int | None = None,
                families=FAMILIES) -> dict[str, SweepModel]:
    """Each family's float model exported to ONNX and quantized to int8 by ONNX Runtime (chapter 3's PTQ:
    QDQ, per-channel int8 weights, min-max calibration on `calib_loader`), run on one thread."""
    result = {}
    for family in families:
        fp = next(m for m in models.values() if m.family == family and m.bits == 32 and m.kind == "torch")
        Path(out).mkdir(parents=True, exist_ok=True)
        int8 = prepare_backends(fp.model.cpu().eval(), out, calib_loader, num_batches=num_batches or len(calib_loader),
                                metadata=METADATA, stem=fp.source or family.lower())[ORT_INT8]
        label = label_of(family, 8, "onnx")
        result[label] = SweepModel(label, family, 8, OnnxClassifier(int8, threads=1), "onnx", str(int8))
    return result


def saliency_images(n: int, seed: int = 0, root: str | None = None):
    """(x, y): n MNIST test digits (a stratified subset, the same on every run), normalised as models see them."""
    ds = load_dataset("mnist", "test", subset=n, seed=seed, root=root)
    return torch.stack([ds[i][0] for i in range(len(ds))]), ds.labels.clone()


def methods_for(model: SweepModel, methods=GRADIENT_METHODS + ("occlusion",)) -> tuple:
    return tuple(m for m in methods if model.kind == "torch" or m not in GRADIENT_METHODS)


def _is_float(r: Row) -> bool:
    return r.precision.weights == 32 and r["kind"] == "torch"


def saliency_rows(models: dict[str, SweepModel], x, y, test_loader=None, methods=GRADIENT_METHODS + ("occlusion",),
                  seed: int = 0, progress: bool = True, keep_maps: bool = False) -> list[Row]:
    """One row per (model, method) with the metrics of the module docstring. Maps of the family's float model
    are the reference for agreement, so each family's float model must be among `models` (and comes first).
    With keep_maps, each row's notes also hold its "maps" (for figures)."""
    rows, reference = [], {}
    score = accuracy_on(test_loader) if test_loader is not None else lambda model: {}
    for sm in tqdm(list(models.values()), desc="models", disable=not progress):
        scored = score(sm.model)
        for method in methods_for(sm, methods):
            maps = attribute(sm.model, x, y, method, **OPTIONS.get(method, {}))
            key = (sm.family, method)
            if sm.bits == 32 and sm.kind == "torch":
                reference[key] = maps
            if key not in reference:
                raise ValueError(f"{sm.label}: the {sm.family} float model must come before its quantized models")
            agree = None if sm.bits == 32 and sm.kind == "torch" else agreement(reference[key], maps, TOPK)
            metrics = {"gini": concentration(maps)["gini"], "spearman": agree and agree["spearman"],
                       "top10_iou": agree and agree[f"top{round(100 * TOPK)}_iou"], "ssim": agree and agree["ssim"]}
            for suffix, grid in (("", FINE), ("_coarse", COARSE)):
                curves = faithfulness(sm.model, x, y, maps={method: maps}, fractions=grid, seed=seed)
                metrics.update({f"area{suffix}": curves[method].area, f"random_area{suffix}": curves["random"].area,
                                f"gap{suffix}": curves["random"].area - curves[method].area,
                                f"curve{suffix}": curves[method].accuracy,
                                f"random_curve{suffix}": curves["random"].accuracy})
            notes = {"family": sm.family, "kind": sm.kind, "method": method, "images": len(x),
                     **({"maps": maps} if keep_maps else {})}
            rows.append(Row(sm.label, "MNIST", sm.precision, **scored, metrics=metrics, notes=notes))
    for family in FAMILIES:
        mine = [r for r in rows if r["family"] == family]
        fp = next((r for r in mine if _is_float(r)), None)
        if fp is not None:
            against(mine, fp)
    return rows


def _num(v, fmt="{:.3f}"):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def _vs_float(r: Row) -> str:
    if _is_float(r) or r.drop_pt is None:
        return "–"
    return describe_drop(r.drop_pt, reference=f"{r['family']} float")


def format_table(rows: list[Row], methods=None, coarse: bool = False) -> str:
    """The rows as a Markdown table (optionally only some methods; coarse=True: the 0-90 % grid's areas)."""
    s = "_coarse" if coarse else ""
    return table([r for r in rows if methods is None or r["method"] in methods], {
        "model": lambda r: r.model, "W/A bits": lambda r: str(r.precision),
        "test accuracy": lambda r: _num(r.accuracy, "{:.2%}"), "vs float": _vs_float, "method": lambda r: r["method"],
        f"area ({'0-90 %' if coarse else '0-10 %'})": lambda r: _num(r["area" + s]),
        "random area": lambda r: _num(r["random_area" + s]), "random − area": lambda r: _num(r["gap" + s], "{:+.3f}"),
        "Gini": lambda r: _num(r["gini"]), "Spearman vs float": lambda r: _num(r["spearman"], "{:.2f}"),
        "top-10 % IoU vs float": lambda r: _num(r["top10_iou"], "{:.2f}"),
        "SSIM vs float": lambda r: _num(r["ssim"], "{:.2f}")})


def summary_table(rows: list[Row]) -> str:
    """One line per model: accuracy and its drop, each method's faithfulness area (and random − area), the
    saliency maps' Gini index and their agreement with the float model's (occlusion's for an ONNX model)."""
    by_model = [{r["method"]: r for r in rows if r.model == m} for m in dict.fromkeys(r.model for r in rows)]

    def area(method):
        return lambda mine: f"{mine[method]['area']:.3f} ({mine[method]['gap']:+.3f})" if method in mine else "–"

    def shown(mine):
        return mine.get("saliency") or mine["occlusion"]

    first = lambda mine: next(iter(mine.values()))  # noqa: E731
    return table(by_model, {
        "model": lambda m: first(m).model, "W/A bits": lambda m: str(first(m).precision),
        "test accuracy": lambda m: _num(first(m).accuracy, "{:.2%}"), "vs float": lambda m: _vs_float(first(m)),
        "area: saliency (random − area)": area("saliency"), "IG": area("ig"), "occlusion": area("occlusion"),
        "Gini": lambda m: _num(shown(m)["gini"]), "Spearman vs float": lambda m: _num(shown(m)["spearman"], "{:.2f}"),
        "top-10 % IoU vs float": lambda m: _num(shown(m)["top10_iou"], "{:.2f}")})


def by_bits(rows: list[Row], family: str, method: str = "saliency", key: str = "gap") -> dict[int, float]:
    """{bits: row[key]} for a family's torch models (32 = float), bits descending."""
    got = {r.precision.weights: r[key] for r in rows
           if r["family"] == family and r["method"] == method and r["kind"] == "torch"}
    return dict(sorted(got.items(), reverse=True))


# what "degraded" means in `first_degraded`; chapter 7 states these
TOLERANCES = {"accuracy": 0.5,      # pt below the float model (the benchmark's W4A4 tolerance)
              "faithfulness": 0.5,  # the random − area gap fell below half the float model's
              "agreement": 0.5}     # Spearman correlation with the float maps below 0.5


def first_degraded(rows: list[Row], family: str, method: str = "saliency", tolerances: dict | None = None) -> dict:
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


def sgt_cost(model, budget: str | None, batches: int, rounds: int) -> dict:
    """A standard, a naive SGT and a fused SGT training step on the same MNIST batches, interleaved in rotating
    order (saliency.train_step_seconds), in this process's CPU time (steadier than the wall clock on a shared
    machine with one torch thread), with the seconds per 60 000-image epoch they imply."""
    data, batch_size = mnist_batches(batches, budget), recipe("smallcnn", budget).batch_size
    before = load_average("before")
    t = train_step_seconds(model, SGTConfig(), data, rounds=rounds, clock=time.process_time)
    steps = -(-60000 // batch_size)
    return {**{k: v for k, v in t.items() if k != "rounds"}, "rounds_s": t["rounds"], "batches": len(data),
            "rounds": rounds, "batch_size": batch_size, "clock": "time.process_time (CPU time of this process)",
            "threads": torch.get_num_threads(), **before, **load_average("after"),
            **{f"{k}_epoch_s_estimate": t[f"{k}_s"] * steps for k in ("standard", "naive", "fused")}}
