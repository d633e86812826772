"""The study contract: a study turns one float model into rows, one per way of making it small, scored alike.

`Row` holds one model's results (`metrics` whatever else the study measured, `notes` where the row came from);
`FineTune` is one fine-tuning step into PACT or SGT + PACT; the builders (`float_row`, `ort_rows`, `ptq_row`,
`pact_row`, `qdq_row`) make rows, each with a `score`: a model (torch module or OnnxClassifier) -> the Row fields it
measures, `accuracy_on(loader)` or a study's own (the medical study's clinical report); `table` is the one Markdown
table formatter, a study declares its columns; `ship_checkpoint` ships a finished run to qsal_lab/pretrained/.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..edge import ORT_FP32, ORT_INT8, interleave, prepare_backends
from ..edge.latency import file_size_bytes
from ..files import atomic_write_text
from ..machine import torch_threads
from ..pretrained import slim_checkpoint
from ..quant.convert import QATConfig
from ..quant.int8 import OnnxClassifier
from ..quant.packing import load_packed, model_size_bytes, save_packed, state_dict_bytes
from ..quant.ptq import PTQConfig, ptq_model
from ..quant.qdq import executed_ops, export_qat_onnx, precision_summary
from ..train import evaluate, load_checkpoint
from .report import drop_pt, jsonable, markdown_table


@dataclass(frozen=True)
class Precision:
    """Bits per layer kind (32 = float): the inner layers' weights and activations, the first and last layer, and
    the per-layer overrides of a mixed-precision model."""
    weights: int = 32
    activations: int = 32
    first_last: int = 32
    layers: dict = field(default_factory=dict)

    @classmethod
    def of(cls, config: QATConfig | PTQConfig) -> Precision:
        return cls(config.w_bits, config.a_bits, config.first_last_bits, dict(config.layer_bits))

    def to_dict(self) -> dict:
        flat = {"w_bits": self.weights, "a_bits": self.activations, "first_last_bits": self.first_last}
        return {**flat, "layer_bits": dict(self.layers)} if self.layers else flat

    def __str__(self) -> str:
        return f"{self.weights}/{self.activations}"


INT8 = Precision(8, 8, 8)  # ONNX Runtime's static quantization: every layer, first and last included


@dataclass
class Row:
    """One model's results in a study. Rows read like the JSON they are written as: row["accuracy"] is
    row.accuracy, row["w_bits"] its precision's, row["history"] a note, row["gap"] a metric."""
    model: str                        # unique in its study: "FP32", "PTQ int8 (ORT)", "SGT + PACT W4A4"
    data: str                         # the data's label: "MNIST", "CIFAR-10 stand-in (synthetic) v3"
    precision: Precision = Precision()
    accuracy: float | None = None     # top-1 on the study's test images
    clinical: dict | None = None      # qsal_lab.clinical.clinical_report, thresholds chosen on validation
    file_bytes: int | None = None     # the file that would be shipped
    file_kind: str = ""
    size_bytes: int | None = None     # weights at their bit width plus scales (model_size_bytes)
    latency_ms: float | None = None   # median, batch 1, one thread
    drop_pt: float | None = None      # the reference's accuracy minus this one, in points (`against`)
    metrics: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    def __getitem__(self, key):
        flat = self.to_dict(leave_out=())
        if key not in flat:
            raise KeyError(f"row {self.model!r} has no {key!r}; it has: {', '.join(flat)}")
        return flat[key]

    def get(self, key, default=None):
        return self.to_dict(leave_out=()).get(key, default)

    def __contains__(self, key) -> bool:
        return key in self.to_dict(leave_out=())

    def to_dict(self, leave_out=("maps", "test_probs")) -> dict:
        """The row as one flat dict (for JSON), without the keys in `leave_out` (by default the per-image data)."""
        shared = set(self.metrics) & set(self.notes)
        if shared:
            raise ValueError(f"row {self.model!r} has {sorted(shared)} both as a metric and as a note")
        core = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _NESTED}
        flat = {**core, **self.precision.to_dict(), **self.metrics, **self.notes}
        return {k: v for k, v in flat.items() if k not in leave_out}


_NESTED = ("precision", "metrics", "notes")  # flattened into the row's dict


def find_row(rows: list[Row], model: str, **where) -> Row:
    """The first row of `model` (and, for each keyword, with row[key] equal to its value)."""
    for r in rows:
        if r.model == model and all(r.get(k) == v for k, v in where.items()):
            return r
    have = ", ".join(dict.fromkeys(r.model for r in rows))
    raise KeyError(f"no row {model!r}{' with ' + str(where) if where else ''}; the rows are: {have}")


def against(rows: list[Row], reference: Row) -> list[Row]:
    """Each row against the reference (the float model): drop_pt, and as metrics its file (an ONNX int8 file against
    the fp32 ONNX file it was made from), size and latency relative to the reference's."""
    for r in rows:
        if r.accuracy is not None and reference.accuracy is not None:
            r.drop_pt = drop_pt(reference.accuracy, r.accuracy)
        if r.file_bytes and reference.file_bytes:
            r.metrics["file_vs_fp32"] = r.file_bytes / (r.metrics.get("fp32_file_bytes") or reference.file_bytes)
        if r.size_bytes and reference.size_bytes:
            r.metrics["size_vs_fp32"] = r.size_bytes / reference.size_bytes
        if r.latency_ms and reference.latency_ms:
            r.metrics["latency_vs_fp32"] = r.latency_ms / reference.latency_ms
    return rows


def table(rows, columns: dict[str, Callable] | list[tuple[str, Callable]]) -> str:
    """A Markdown table of `rows` (Rows, dicts, anything): one column per (header, cell function of a row)."""
    columns = list(columns.items() if isinstance(columns, dict) else columns)
    return markdown_table([h for h, _ in columns], [[fn(r) for _, fn in columns] for r in rows])


def percent(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


# the first columns of most tables
NAMED = {"model": lambda r: r.model, "W/A bits": lambda r: str(r.precision),
         "test accuracy": lambda r: percent(r.accuracy)}


def slug(label: str) -> str:
    """A folder name for a row: 'SGT + PACT W4A4' -> 'sgt_pact_w4a4'."""
    return label.lower().replace(" + ", "_").replace(" ", "_").replace("(", "").replace(")", "")


@dataclass(frozen=True)
class FineTune:
    """One fine-tuning of a float model into a PACT model at W{bits}A{bits} (first and last layer at 8 bits), with
    saliency-guided training masking `sgt_fraction` of the pixels when that is set: `epochs` passes over
    `train_subset` training images (stratified, seeded; None = all). lr None: the study's choice; pact_alpha None:
    every clipping level starts at the bit width."""
    bits: int
    epochs: int
    train_subset: int | None = None
    lr: float | None = None
    sgt_fraction: float | None = None
    weight_quant: str = "symmetric"
    pact_alpha: float | None = None
    alpha_l2: float = 2e-4

    @property
    def sgt(self) -> bool:
        return self.sgt_fraction is not None

    @property
    def model(self) -> str:
        return f"{'SGT + ' if self.sgt else ''}PACT W{self.bits}A{self.bits}"

    def config(self, **changes) -> QATConfig:
        return QATConfig(w_bits=self.bits, a_bits=self.bits, weight_quant=self.weight_quant,
                         pact_alpha=self.pact_alpha or float(self.bits), alpha_l2=self.alpha_l2, **changes)


# ----------------------------------------------------------------------------- builders

def accuracy_on(loader) -> Callable:
    """A score: top-1 accuracy on `loader` of a torch module or an OnnxClassifier."""
    return lambda model: {"accuracy": evaluate(model, loader, device="cpu")["accuracy"]}


def scored(score: Callable, net, /, **fields) -> Row:
    """A Row of `fields` and of what score(net) measures (their metrics and notes merged)."""
    measured = dict(score(net))
    metrics = {**fields.pop("metrics", {}), **measured.pop("metrics", {})}
    notes = {**fields.pop("notes", {}), **measured.pop("notes", {})}
    return Row(**fields, **measured, metrics=metrics, notes=notes)


def float_row(model: nn.Module, score: Callable, data: str, **notes) -> Row:
    """The float model in PyTorch; its file is torch.save of its weights."""
    model = model.cpu().eval()
    return scored(score, model, model="FP32", data=data, file_bytes=state_dict_bytes(model), file_kind="torch.save",
                  size_bytes=model_size_bytes(model), notes=notes)


def ptq_row(model: nn.Module, bits: int, calib_loader, score: Callable, out, data: str, build: dict | None = None,
            observer: str = "mse") -> Row:
    """Fake-quant post-training quantization to W{bits}A{bits} (BN folded, first and last layer at 8 bits), no
    training; its file is the bit-packed one (save_packed)."""
    t0 = time.perf_counter()
    config = PTQConfig(w_bits=bits, a_bits=bits, observer=observer)
    quantized = ptq_model(model.cpu(), config, calib_loader, num_batches=len(calib_loader), progress=False)
    seconds = time.perf_counter() - t0
    path = Path(out) / f"ptq_w{bits}a{bits}.qsal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return scored(score, quantized, model=f"PTQ W{bits}A{bits}", data=data, precision=Precision.of(config),
                  file_bytes=save_packed(quantized, path, build=build), file_kind="bit-packed",
                  size_bytes=model_size_bytes(quantized), notes={"observer": observer, "seconds": seconds})


def interleaved_latency(fns: dict, example, repeats: int = 50, rounds: int = 5) -> dict:
    """Median latency (ms) of each callable (an eval-mode torch module, an OnnxClassifier) at `example` with one torch
    thread: `repeats` calls in each of `rounds` blocks, interleaved (edge.interleave) so that load slows all alike."""
    with torch_threads(1), torch.no_grad():
        ns, _ = interleave({k: partial(fn, example) for k, fn in fns.items()}, min_queries=repeats * rounds,
                           min_seconds=0, rounds=rounds, warmup=3)
    return {k: statistics.median(v) / 1e6 for k, v in ns.items()}


def ort_rows(model: nn.Module, score: Callable, calib_loader, out, data: str, example, metadata: dict,
             stem: str = "model", repeats: int = 50, rounds: int = 5) -> tuple[Row, Row]:
    """('FP32 (ORT)', 'PTQ int8 (ORT)'): the float model in ONNX Runtime and its int8 PTQ (edge.prepare_backends:
    QDQ, per-channel int8 weights, min-max calibration on every batch of calib_loader), each scored, with eager
    PyTorch, ORT fp32 and ORT int8 timed interleaved at `example` (batch 1)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    backends = prepare_backends(model, out, calib_loader, num_batches=len(calib_loader), metadata=metadata, stem=stem)
    fp32_path, int8_path = backends[ORT_FP32], backends[ORT_INT8]
    fp32, int8 = OnnxClassifier(fp32_path, threads=1), OnnxClassifier(int8_path, threads=1)
    ms = interleaved_latency({"eager": model, "fp32": fp32, "int8": int8}, example, repeats, rounds)
    fp32_row = scored(score, fp32, model="FP32 (ORT)", data=data, file_bytes=fp32.file_size_bytes,
                      file_kind="ONNX fp32", latency_ms=ms["fp32"], notes={"path": str(fp32_path)},
                      metrics={"eager_latency_ms": ms["eager"], "ort_ops": precision_summary(executed_ops(fp32_path))})
    int8_row = scored(score, int8, model="PTQ int8 (ORT)", data=data, precision=INT8, file_bytes=int8.file_size_bytes,
                      file_kind="ONNX int8 (QDQ)", latency_ms=ms["int8"],
                      metrics={"fp32_file_bytes": fp32.file_size_bytes, "fp32_latency_ms": ms["fp32"],
                               "eager_latency_ms": ms["eager"], "speedup_vs_fp32": ms["fp32"] / ms["int8"],
                               "speedup_vs_eager": ms["eager"] / ms["int8"],
                               "ort_ops": precision_summary(executed_ops(int8_path))},
                      notes={"path": str(int8_path),
                             "calibration": f"minmax on {len(calib_loader.dataset)} training images"})
    return fp32_row, int8_row


def pact_row(step: FineTune, train: Callable, score: Callable, out, data: str, build: dict | None = None) -> Row:
    """PACT (SGT + PACT with step.sgt) at step.bits: `train(step, run_dir)` fine-tunes the float model, or loads a
    shipped fine-tuning, and returns (model, history, notes). Scored as it would be shipped: reloaded from its
    bit-packed file."""
    run = Path(out) / slug(step.model)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, history, notes = train(step, run)
    seconds = time.perf_counter() - t0
    packed = run / f"{slug(step.model)}.qsal"
    file_bytes = save_packed(model.cpu().eval(), packed, build=build)
    shipped = load_packed(packed)
    return scored(score, shipped, model=step.model, data=data, precision=Precision.of(step.config()),
                  file_bytes=file_bytes, file_kind="bit-packed", size_bytes=model_size_bytes(shipped),
                  notes={"packed_path": str(packed), "seconds": seconds, "step": asdict(step), "history": history,
                         **notes})


def qdq_row(model: nn.Module, label: str, precision: Precision, score: Callable, path, example, data: str,
            metadata: dict, repeats: int = 50) -> Row:
    """A PACT model in ONNX Runtime: export_qat_onnx (QDQ, PACT's learned clipping levels as scales; `example`, a
    batch of real inputs, fixes the input's range), scored, timed at batch 1 on one thread. The exporter raises a
    RuntimeError when the file would disagree with the model."""
    path = export_qat_onnx(model, path, example, metadata=metadata)
    clf = OnnxClassifier(path, threads=1)
    return scored(score, clf, model=label, data=data, precision=precision, file_bytes=clf.file_size_bytes,
                  file_kind="ONNX QDQ (export_qat_onnx)",
                  latency_ms=interleaved_latency({"ort": clf}, example[:1], repeats, rounds=1)["ort"],
                  metrics={"ort_ops": precision_summary(executed_ops(path))}, notes={"path": str(path)})


# ----------------------------------------------------------------------------- checkpoints

def float_checkpoint(path, model: str, dataset: str):
    """(model, checkpoint dict) of a float `model` trained on `dataset`, or an error naming what the file holds."""
    net, ckpt = load_checkpoint(path)
    spec = ckpt["model_spec"]
    if spec.get("model") != model or spec.get("dataset") != dataset or spec.get("quant"):
        quantized = " (quantized)" if spec.get("quant") else ""
        raise ValueError(f"{path} holds a {spec.get('model')} for {spec.get('dataset')}{quantized}; the study needs a "
                         f"float {model} for {dataset}")
    return net, ckpt


def finished_run(path, **config) -> dict | None:
    """The checkpoint dict at `path` if it holds a finished run whose config has these values, else None."""
    if not Path(path).exists():
        return None
    _, ckpt = load_checkpoint(path)
    found = ckpt.get("config") or {}
    return ckpt if ckpt.get("finished") and all(found.get(k) == v for k, v in config.items()) else None


def ship_checkpoint(run, dest, command: str, score: Callable, dtype: str = "float32") -> dict:
    """Ship a finished run to `dest` (qsal_lab/pretrained/<name>/: weights, spec, history, metrics.json, COMMAND) and
    add to its metrics.json `shipped`: the shipped file's size, parameters, training seconds and epochs, and what
    `score(model loaded from the shipped file)` measures."""
    dest = Path(dest)
    slim_checkpoint(run, dest, command, dtype=dtype)
    model, ckpt = load_checkpoint(dest / "checkpoint.pt")
    shipped = {"file_bytes": file_size_bytes(dest / "checkpoint.pt"),
               "parameters": sum(p.numel() for p in model.parameters()),
               "train_seconds": sum(e["seconds"] for e in ckpt["history"]), "epochs": ckpt["epoch"], **score(model)}
    metrics = json.loads((dest / "metrics.json").read_text())
    metrics["shipped"] = shipped
    atomic_write_text(json.dumps(metrics, indent=2, default=jsonable), dest / "metrics.json")
    return shipped
