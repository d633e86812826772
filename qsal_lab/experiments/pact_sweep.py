"""The bit-width sweep of chapter 4 and bench/quant_mnist.py: PACT QAT against PTQ at W/A = 8, 4, 3, 2 bits.

    rows = bit_sweep("qsal_lab/pretrained/mnist_smallcnn/checkpoint.pt", out="runs/pact_sweep")
    print(format_table(rows))
    deployed = onnx_rows(rows, fp_model, calib_loader, test_loader, out="runs/pact_sweep")  # ONNX Runtime
    print(format_onnx_table(deployed))

For every bit width k the trained float model is
  - fine-tuned with PACT quantization-aware training (`train_model(..., quant=QATConfig(k, k),
    init_from=checkpoint)`, with the schedule `qat_recipe(k)`), and
  - quantized without training (`ptq_model(model, PTQConfig(k, k))`), for contrast.
Both keep the first and the last layer at 8 bits. Each result is one row (a dict): test accuracy,
its drop against the float model (`report.drop_pt`: float minus quantized, positive = worse),
deployed size (`model_size_bytes`), size of the bit-packed file (`save_packed`), both also relative
to the float model, and for QAT the accuracy right after `quantize_model` (before any fine-tuning)
and the training history (whose "alphas" are PACT's clipping levels). The QAT accuracy is measured
on the model loaded back from its packed file: what you would ship.

`onnx_rows` takes the sweep to ONNX Runtime: the float model, its int8 PTQ (`quantize_onnx`) and
PACT models exported with their learned clipping levels (`export_qat_onnx`), each with accuracy,
agreement with its fake-quant model, file size, latency and which operators run on integers.

`train_step_seconds` times float and QAT training steps side by side, the fair way to say what
quantization-aware training costs per epoch.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..budget import current_budget, pick, recipe
from ..data import load_dataset, make_loader
from ..edge import measure_latency
from ..quant.convert import QATConfig, quantize_model
from ..quant.int8 import OnnxClassifier, export_onnx, quantize_onnx
from ..quant.packing import load_packed, model_size_bytes, save_packed, state_dict_bytes
from ..quant.pact import pact_alpha_l2
from ..quant.primitives import FLOAT_BITS, validate_bits
from ..quant.ptq import PTQConfig, ptq_model
from ..quant.qdq import compare_with_torch, executed_ops, export_qat_onnx, precision_summary
from ..train import cross_entropy_loss, evaluate, load_checkpoint, train_model, train_step
from .report import describe_drop, drop_pt


@dataclass(frozen=True)
class QATRecipe:
    """How to fine-tune a float SmallCNN into a k-bit PACT model on MNIST.

    Fewer bits need more fine-tuning. Each epoch sees the same `train_subset` images (None = all
    60 000), so more, shorter epochs mean more points on the alpha learning curves at the same cost.
    pact_alpha is where every PACT clipping level starts: the quantization error of real activations
    is smallest at a larger alpha when there are more levels (chapter 4 plots it), so it grows with k.
    """
    epochs: int
    train_subset: int | None
    lr: float                   # AdamW peak (one-cycle); the float model was trained with 3e-3
    pact_alpha: float
    alpha_l2: float = 2e-4      # lambda of the alpha penalty (the paper's value)
    weight_quant: str = "dorefa"

    def config(self, bits: int) -> QATConfig:
        return QATConfig(w_bits=bits, a_bits=bits, weight_quant=self.weight_quant, pact_alpha=self.pact_alpha,
                         alpha_l2=self.alpha_l2)


def _recipes(epochs: dict, subset: dict) -> dict:
    """One QATRecipe per bit width: alpha starts at k, 2 bits get a larger learning rate."""
    return {k: QATRecipe(epochs[k], subset[k], lr=1e-3 if k == 2 else 5e-4, pact_alpha=float(k)) for k in epochs}


# Chosen on MNIST from the 12-epoch pretrained SmallCNN (lr, alpha init, subset sizes and DoReFa vs symmetric
# weights were compared on the full test set). The book's subsets were then cut (160k training images of QAT
# in all against the tuned 260k) so that the whole book fits its 20 minutes on 2 cores; chapter 4 and
# bench/quant_mnist.py report what they reach with them. The full budget is a longer version of the tuned
# recipe (not tuned itself).
_QAT_RECIPES = {
    "ci": _recipes({8: 1, 4: 1, 3: 1, 2: 2}, {8: 1000, 4: 1000, 3: 1000, 2: 1000}),
    "book": _recipes({8: 2, 4: 4, 3: 4, 2: 5}, {8: 5000, 4: 10000, 3: 10000, 2: 14000}),
    "full": _recipes({8: 3, 4: 5, 3: 5, 2: 8}, {8: None, 4: None, 3: None, 2: None}),
}


def qat_recipe(bits: int, budget: str | None = None) -> QATRecipe:
    """The fine-tuning schedule for W{bits}A{bits} at a budget (bits 2..8; unlisted widths use the next lower one)."""
    bits = validate_bits(bits, "bits")
    if bits == FLOAT_BITS:
        raise ValueError("the sweep quantizes to 2..8 bits; 32 bits is the float model itself")
    recipes = _QAT_RECIPES[current_budget(budget)]
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


def float_row(model: nn.Module, test_loader) -> dict:
    return {"method": "FP32", "w_bits": 32, "a_bits": 32, "accuracy": evaluate(model, test_loader)["accuracy"],
            "size_bytes": model_size_bytes(model), "file_bytes": state_dict_bytes(model), "seconds": 0.0}


def ptq_row(model: nn.Module, bits: int, calib_loader, test_loader, out: str | Path, observer: str = "mse") -> dict:
    """Post-training quantization to W{bits}A{bits} (no training): accuracy and sizes."""
    t0 = time.perf_counter()
    qmodel = ptq_model(model, PTQConfig(w_bits=bits, a_bits=bits, observer=observer), calib_loader,
                       num_batches=len(calib_loader), progress=False)
    seconds = time.perf_counter() - t0
    path = Path(out) / f"ptq_w{bits}a{bits}.qsal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"method": "PTQ", "w_bits": bits, "a_bits": bits, "accuracy": evaluate(qmodel, test_loader)["accuracy"],
            "size_bytes": model_size_bytes(qmodel), "file_bytes": save_packed(qmodel, path), "seconds": seconds,
            "observer": observer}


def qat_row(bits: int, fp_checkpoint: str | Path, test_loader, out: str | Path, budget: str | None = None,
            progress: bool = True, root: str | None = None) -> dict:
    """PACT QAT fine-tuning to W{bits}A{bits} from a float checkpoint; accuracy of the packed-and-reloaded model,
    and `accuracy_before`: the float model right after quantize_model, before any fine-tuning."""
    r = qat_recipe(bits, budget)
    run_dir = Path(out) / f"pact_w{bits}a{bits}"
    before = quantize_model(load_checkpoint(fp_checkpoint)[0].cpu(), r.config(bits))
    accuracy_before = evaluate(before, test_loader)["accuracy"]
    t0 = time.perf_counter()
    model, history = train_model("mnist", "smallcnn", budget=budget, quant=r.config(bits), init_from=fp_checkpoint,
                                 epochs=r.epochs, lr=r.lr, train_subset=r.train_subset, out=run_dir,
                                 progress=progress, resume=False, root=root)
    seconds = time.perf_counter() - t0
    path = run_dir / f"pact_w{bits}a{bits}.qsal"
    file_bytes = save_packed(model.cpu(), path, build={"name": "smallcnn", "num_classes": 10})
    shipped = load_packed(path)
    return {"method": "PACT QAT", "w_bits": bits, "a_bits": bits, "accuracy": evaluate(shipped, test_loader)["accuracy"],
            "accuracy_before": accuracy_before, "size_bytes": model_size_bytes(model), "file_bytes": file_bytes,
            "seconds": seconds, "packed_path": str(path), "recipe": asdict(r), "history": history.epochs}


def bit_sweep(fp_checkpoint: str | Path, bits=(8, 4, 3, 2), ptq_bits=None, out: str | Path = "runs/pact_sweep",
              budget: str | None = None, progress: bool = True, root: str | None = None) -> list[dict]:
    """FP32 row, then a PACT QAT row for each of `bits` and a PTQ row for each of `ptq_bits` (default: `bits`).

    Sizes also appear relative to the float model: `size_vs_fp32` (deployed bytes) and
    `file_vs_fp32` (packed file against torch.save of the float state_dict).
    """
    fp_checkpoint = Path(fp_checkpoint)
    fp_model, ckpt = load_checkpoint(fp_checkpoint)
    if ckpt["model_spec"].get("model") != "smallcnn" or ckpt["model_spec"].get("dataset") != "mnist":
        raise ValueError(f"{fp_checkpoint} holds a {ckpt['model_spec'].get('model')} for "
                         f"{ckpt['model_spec'].get('dataset')}; bit_sweep needs a float SmallCNN trained on MNIST")
    if ckpt["model_spec"].get("quant"):
        raise ValueError(f"{fp_checkpoint} is already quantized; bit_sweep starts from a float checkpoint")
    test_loader, calib_loader = mnist_loaders(budget, root=root)
    rows = [float_row(fp_model, test_loader)]
    for b in bits:
        rows.append(qat_row(b, fp_checkpoint, test_loader, out, budget, progress, root))
    for b in bits if ptq_bits is None else ptq_bits:
        rows.append(ptq_row(fp_model, b, calib_loader, test_loader, out))
    fp = rows[0]
    for row in rows:
        row["size_vs_fp32"] = row["size_bytes"] / fp["size_bytes"]
        row["file_vs_fp32"] = row["file_bytes"] / fp["file_bytes"]
        row["drop_pt"] = drop_pt(fp["accuracy"], row["accuracy"])
    return rows


def find_row(rows: list[dict], method: str, bits: int) -> dict:
    """The row of `method` ("FP32", "PACT QAT", "PTQ") at W{bits}A{bits}."""
    for row in rows:
        if row["method"] == method and row["w_bits"] == bits:
            return row
    raise KeyError(f"no {method} row at {bits} bits; the sweep has: "
                   + ", ".join(f"{r['method']} W{r['w_bits']}A{r['a_bits']}" for r in rows))


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown pipe table (renders as a table in the book and in GitHub's Markdown)."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header] + rows]
    return "\n".join(["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in cells[1:]])


def format_table(rows: list[dict]) -> str:
    """The sweep as a Markdown table: method, bits, accuracy (and, for QAT, before fine-tuning), the drop
    against FP32 in words, deployed size and packed file (absolute and relative to FP32)."""
    body = []
    for r in rows:
        is_float = r["method"] == "FP32"
        before = f"{r['accuracy_before']:.2%}" if "accuracy_before" in r else "–"
        body.append([r["method"], "32/32" if is_float else f"{r['w_bits']}/{r['a_bits']}", f"{r['accuracy']:.2%}",
                     before, "–" if is_float else describe_drop(r["drop_pt"], reference="FP32"),
                     f"{r['size_bytes'] / 1024:.1f}", f"{r['size_vs_fp32']:.3f}×", f"{r['file_bytes'] / 1024:.1f}",
                     f"{r['file_vs_fp32']:.3f}×"])
    return markdown_table(["method", "W/A bits", "test accuracy", "before fine-tuning", "vs FP32", "size (KiB)",
                           "size vs FP32", "packed file (KiB)", "file vs FP32"], body)


# ----------------------------------------------------------------------------- ONNX Runtime

def _onnx_row(method, bits, path, reference_model, reference, test_loader, fp_accuracy, repeats):
    clf = OnnxClassifier(path, threads=1)
    cmp = compare_with_torch(clf, reference_model, test_loader)
    example = next(iter(test_loader))[0][:1]  # one image: the latency a single request sees
    summary = precision_summary(executed_ops(path))
    return {"method": method, "w_bits": bits, "a_bits": bits, "accuracy": cmp["accuracy"],
            "drop_pt": drop_pt(fp_accuracy, cmp["accuracy"]), "reference": reference, "agreement": cmp["agreement"],
            "max_abs_logit_diff": cmp["max_abs_logit_diff"], "file_bytes": clf.file_size_bytes,
            "latency_ms": measure_latency(clf, example, warmup=5, repeats=repeats)["median_ms"],
            "integer_ops": summary["integer"], "float_ops": summary["float32"], "conversions": summary["conversions"],
            "path": str(path)}


def onnx_rows(rows: list[dict], fp_model: nn.Module, calib_loader, test_loader, out: str | Path, bits=(8, 4),
              repeats: int | None = None) -> list[dict]:
    """The sweep's models as ONNX files run by ONNX Runtime, one row each, all on one thread:
      - "FP32 (ORT)": export_onnx of the float model (agreement with PyTorch's float model);
      - "PTQ int8 (ORT)": quantize_onnx of that file, min-max calibration on every batch of `calib_loader`
        (chapter 3's recipe; agreement with the fake-quant W8A8 min-max PTQ model, same calibration);
      - "PACT QAT (ORT)" at each of `bits`: the shipped model of `rows` (its packed file) exported with
        export_qat_onnx (agreement with that fake-quant model).
    Each row: accuracy and drop vs FP32 (PyTorch), agreement and max |logit difference| with its
    reference, file bytes, median latency at batch 1 (`repeats` timed calls), and which operators
    ONNX Runtime runs on integers and which on float32 (qdq.precision_summary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = repeats or pick(ci=10, book=50, full=100)
    fp_model = fp_model.cpu().eval()
    fp_accuracy = find_row(rows, "FP32", 32)["accuracy"]
    example = next(iter(calib_loader))[0]
    fp32 = export_onnx(fp_model, out / "smallcnn_fp32.onnx", input_shape=(1, *example.shape[1:]),
                       metadata={"model_name": "smallcnn", "dataset": "mnist"})
    int8 = quantize_onnx(fp32, out / "smallcnn_ptq_int8.onnx", calib_loader, num_batches=len(calib_loader),
                         method="minmax")
    fake_ptq8 = ptq_model(fp_model, PTQConfig(w_bits=8, a_bits=8, observer="minmax"), calib_loader,
                          num_batches=len(calib_loader), progress=False)
    result = [_onnx_row("FP32 (ORT)", 32, fp32, fp_model, "PyTorch FP32", test_loader, fp_accuracy, repeats),
              _onnx_row("PTQ int8 (ORT)", 8, int8, fake_ptq8, "fake-quant PTQ W8A8 (min-max)", test_loader,
                        fp_accuracy, repeats)]
    for b in bits:
        shipped = load_packed(find_row(rows, "PACT QAT", b)["packed_path"])
        path = export_qat_onnx(shipped, out / f"pact_w{b}a{b}.onnx", example,
                               metadata={"model_name": "smallcnn", "dataset": "mnist"})
        result.append(_onnx_row("PACT QAT (ORT)", b, path, shipped, f"fake-quant PACT W{b}A{b}", test_loader,
                                fp_accuracy, repeats))
    return result


def format_onnx_table(rows: list[dict]) -> str:
    """onnx_rows as a Markdown table."""
    body = [[r["method"], "32/32" if r["w_bits"] == 32 else f"{r['w_bits']}/{r['a_bits']}", f"{r['accuracy']:.2%}",
             describe_drop(r["drop_pt"], reference="FP32"), f"{r['agreement']:.2%} with {r['reference']}",
             f"{r['max_abs_logit_diff']:.3g}", f"{r['file_bytes'] / 1024:.1f}", f"{r['latency_ms']:.3f}"]
            for r in rows]
    return markdown_table(["model", "W/A bits", "test accuracy", "vs FP32 (PyTorch)", "same class as",
                           "max abs logit difference", "file (KiB)", "latency, batch 1 (ms)"], body)


def format_precision_table(rows: list[dict]) -> str:
    """What ONNX Runtime runs for each of onnx_rows, after fusing: integer kernels, float32 ones, conversions."""
    body = [[r["method"] + (f" W{r['w_bits']}A{r['a_bits']}" if r["method"].startswith("PACT") else ""),
             r["integer_ops"], r["float_ops"], r["conversions"]] for r in rows]
    return markdown_table(["model", "on integers", "on float32", "conversions"], body)


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
