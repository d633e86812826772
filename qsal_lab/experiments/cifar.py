"""The CIFAR-10 study with ResNet-20 (chapter 8, bench/cifar_resnet20.py): PTQ, PACT and SGT + PACT on colour images.

    data = cifar_data()                          # real CIFAR-10 if present, else (QSAL_STANDIN=1) the stand-in
    model, ckpt, source = float_model(data)      # stand-in: the shipped float ResNet-20; real: trained here
    study = run_study(out="runs/cifar")          # every row of ROWS; what the benchmark runs
    print(title("Results", data.info)); print(format_table(study["rows"]))

Which data: `cifar_data` loads what `load_dataset("cifar10")` gives (real CIFAR-10, or the labelled synthetic
stand-in when QSAL_STANDIN=1) and every row, table title and figure title carries that data set's name
(`title`, `banner`). A stand-in number says nothing about CIFAR-10.

Rows (`ROWS`), each from its own model, scored on the same test images:
  FP32               the float ResNet-20;
  PTQ int8 (ORT)     its ONNX export quantized by ONNX Runtime (QDQ, per-channel int8 weights, min-max
                     calibration on training images); latency against the fp32 ONNX file and eager PyTorch at
                     batch 1 on one thread, measured interleaved;
  PTQ W8A8/W4A4/W2A2 fake-quant PTQ (BN folded, symmetric per-channel weights, MSE-calibrated activations);
  PACT W4A4, W2A2    PACT quantization-aware fine-tuning of the float model (first and last layer at 8 bits);
  SGT + PACT W4A4    the same with saliency-guided training masking 10 % of the pixels (the SGT paper's CIFAR
                     fraction).
PACT's optimizer and alpha learning-rate scale were chosen on a validation split held out of the training
images (`choose_pact_hparams`; the shipped choice: `selection()`), never on test. Layer sensitivity (one layer at
2 bits, the rest float) is measured on that held-out split too, and chooses the mixed W4/W2 configuration
(`mixed_bits`) that `mixed_precision_rows` compares, at equal packed size, with the reverse choice and with
uniform W4A4 and W2A2.

PACT rows here use symmetric per-channel weights at 4 bits, not DoReFa: DoReFa maps weights into [-1, 1], which the
BatchNorm layers' running statistics (frozen in eval mode) do not expect, so a short fine-tuning starts from a
broken model (the medical study measured it; `experiments/medical.py`). At 2 bits DoReFa does better
(`pact_config`).
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..budget import current_budget
from ..data import DataError, DatasetInfo, load_dataset, make_loader
from ..edge.latency import measure_latency
from ..files import atomic_write_text
from ..quant.convert import QATConfig, layer_names, quantize_model, weight_layers
from ..quant.int8 import OnnxClassifier, export_onnx, quantize_onnx
from ..quant.packing import load_packed, model_size_bytes, save_packed, state_dict_bytes
from ..quant.ptq import PTQConfig, ptq_model
from ..quant.qdq import executed_ops, precision_summary
from ..train import evaluate, load_checkpoint, train_model
from .pact_sweep import markdown_table
from .report import describe_drop, drop_pt

PRETRAINED = "cifar10standin_resnet20"  # the shipped float model for the stand-in (qsal_lab/pretrained/<name>/)
PRETRAINED_QAT = {"PACT W4A4": "cifar10standin_resnet20_pact_w4a4", "PACT W2A2": "cifar10standin_resnet20_pact_w2a2",
                  "SGT + PACT W4A4": "cifar10standin_resnet20_sgt_pact_w4a4"}
ROWS = ("FP32", "PTQ int8 (ORT)", "PTQ W8A8", "PTQ W4A4", "PTQ W2A2", "PACT W4A4", "PACT W2A2", "SGT + PACT W4A4")
SGT_FRACTION = 0.1  # the SGT paper's mask fraction on CIFAR-10
BUILD = {"name": "resnet20", "num_classes": 10, "in_channels": 3, "image_size": 32}

# PACT's optimizer and alpha learning-rate scale: the candidates compared on the held-out split.
PACT_CANDIDATES = (
    {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "alpha_lr_scale": 1.0},
    {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "alpha_lr_scale": 10.0},
    {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 1e-4, "alpha_lr_scale": 1.0},
    {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 1e-4, "alpha_lr_scale": 10.0},
)


@dataclass(frozen=True)
class QATStep:
    """One fine-tuning of the float model: PACT at W{bits}A{bits} (optionally with SGT), `epochs` passes over the
    same `train_subset` training images (stratified, seeded; None = all but the held-out ones)."""
    bits: int
    epochs: int
    train_subset: int | None
    sgt: bool = False

    @property
    def method(self) -> str:
        return f"{'SGT + ' if self.sgt else ''}PACT W{self.bits}A{self.bits}"


@dataclass(frozen=True)
class CifarRecipe:
    """Everything the study does at one budget (subsets stratified and seeded; None = the whole split)."""
    test_subset: int | None          # test images every row is scored on
    holdout: int                     # validation images held out of train (choices are made on them)
    holdout_subset: int | None       # of which the sensitivity scan and the selection use this many
    calib_images: int                # PTQ calibration images (training images, not held out)
    qat: tuple                       # QATSteps of the PACT rows, in ROWS order
    mixed: QATStep                   # the (shorter) fine-tuning every mixed-precision row gets
    selection: QATStep               # the fine-tuning each PACT candidate gets on the held-out split
    float_test_subset: int | None = 5000   # test images train_model evaluates on after each float epoch
    latency_repeats: int = 50
    latency_rounds: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


def _steps(w4, w2, sgt):
    return (QATStep(4, *w4), QATStep(2, *w2), QATStep(4, *sgt, sgt=True))


RECIPES = {
    # ci: a smoke run on tiny subsets; the numbers mean nothing
    "ci": CifarRecipe(test_subset=300, holdout=300, holdout_subset=200, calib_images=128,
                      qat=_steps((1, 256), (1, 256), (1, 128)), mixed=QATStep(4, 1, 128), selection=QATStep(4, 1, 128),
                      float_test_subset=300, latency_repeats=5, latency_rounds=2),
    # book: the shipped checkpoints were trained with these steps (tools/train_pretrained.sh)
    # (scored on 5000 test images; the shipped folders' metrics.json also record all 10 000)
    "book": CifarRecipe(test_subset=5000, holdout=2000, holdout_subset=1000, calib_images=512,
                        qat=_steps((3, None), (16, None), (2, 8000)), mixed=QATStep(4, 1, 3000),
                        selection=QATStep(4, 1, 3000)),
    "full": CifarRecipe(test_subset=None, holdout=5000, holdout_subset=None, calib_images=1024,
                        qat=_steps((15, None), (30, None), (15, None)), mixed=QATStep(4, 10, None),
                        selection=QATStep(4, 3, None), float_test_subset=None, latency_repeats=100),
}


def cifar_recipe(budget: str | None = None, **overrides) -> CifarRecipe:
    return replace(RECIPES[current_budget(budget)], **overrides)


# ----------------------------------------------------------------------------- which data

@dataclass
class CifarData:
    """The splits the study scores on, all from the data set actually loaded (`info`: CIFAR-10 or the stand-in)."""
    info: DatasetInfo
    test: object
    holdout: object
    calib: object
    holdout_size: int
    recipe: CifarRecipe
    test_loader: object = field(repr=False, default=None)
    holdout_loader: object = field(repr=False, default=None)
    calib_loader: object = field(repr=False, default=None)
    reason: str = ""  # why this data: set by `detect_data`

    @property
    def key(self) -> str:
        return self.info.name

    @property
    def name(self) -> str:
        return self.info.display_name

    @property
    def standin(self) -> bool:
        return self.info.standin


def cifar_data(budget: str | None = None, root=None, standin: bool | None = None, download: bool = True,
               recipe: CifarRecipe | None = None) -> CifarData:
    """Test, held-out validation and calibration splits of CIFAR-10 (or, with QSAL_STANDIN=1 / standin=True, of
    the stand-in). Offline without the stand-in: the missing-data message, which names QSAL_STANDIN=1."""
    recipe = recipe or cifar_recipe(budget)
    test = load_dataset("cifar10", "test", root=root, subset=recipe.test_subset, seed=0, standin=standin,
                        download=download)
    key = test.info.name  # from here on, the data set actually loaded
    holdout = load_dataset(key, "holdout", root=root, holdout=recipe.holdout, subset=recipe.holdout_subset, seed=0)
    calib = load_dataset(key, "train", root=root, holdout=recipe.holdout, subset=recipe.calib_images, seed=1)
    return CifarData(test.info, test, holdout, calib, recipe.holdout, recipe, make_loader(test, batch_size=500),
                     make_loader(holdout, batch_size=500), make_loader(calib, batch_size=128))


def detect_data(budget: str | None = None, root=None, recipe: CifarRecipe | None = None) -> CifarData:
    """What chapter 8 runs on: CIFAR-10 when it can be loaded (its files under QSAL_DATA, or downloaded), else the
    labelled stand-in, never silently: `data.reason` says which and why. QSAL_STANDIN=1 asks for the stand-in."""
    try:
        data = cifar_data(budget, root, recipe=recipe)
        data.reason = ("QSAL_STANDIN=1 asked for the stand-in." if data.standin else
                       "CIFAR-10's files are here and match the official MD5s.")
    except DataError as err:  # offline, no CIFAR-10
        data = cifar_data(budget, root, standin=True, recipe=recipe)
        data.reason = (f"CIFAR-10 is not available here ({str(err).splitlines()[0]}), so this run uses the stand-in. "
                       "With CIFAR-10's files under QSAL_DATA, or a network connection, the same code shows CIFAR-10 "
                       "results.")
    return data


def title(text: str, info: DatasetInfo) -> str:
    """A table or figure title that names the data: 'text (CIFAR-10 stand-in (synthetic) v3)'."""
    return f"{text} ({info.display_name})"


def banner(info: DatasetInfo) -> str:
    """A Markdown banner for results made from the stand-in ('' for real CIFAR-10)."""
    if not info.standin:
        return ""
    return (f"> **{info.display_name}, not CIFAR-10.** These results come from synthetic 32x32 images, not from "
            f"CIFAR-10 (one shape among clutter per image, 10 shapes as classes). Every number below is a stand-in number: "
            f"it shows how the methods compare on these images and says nothing about CIFAR-10 accuracy. "
            f"With real CIFAR-10 (downloaded on first use, or under QSAL_DATA) the same code shows real results.")


# ----------------------------------------------------------------------------- the float model

def float_model(data: CifarData, budget: str | None = None, out="runs/cifar", checkpoint=None,
                progress: bool = True):
    """(model, checkpoint path, source) of the float ResNet-20. `checkpoint` if given; else, for the stand-in, the
    shipped model when it was trained on this very stand-in version; else trained here with the budget's recipe
    (the held-out images left out), reusing a finished run in out/float."""
    if checkpoint is not None:
        path, source = Path(checkpoint), f"given: {checkpoint}"
    elif data.standin and _shipped(PRETRAINED, data.key):
        from ..pretrained import pretrained_dir
        path, source = pretrained_dir(PRETRAINED) / "checkpoint.pt", f"shipped: qsal_lab/pretrained/{PRETRAINED}"
    else:
        path, source = train_float(data, budget, Path(out) / "float", progress), f"trained in this run ({budget or current_budget()})"
    model, ckpt = load_checkpoint(path)
    spec = ckpt["model_spec"]
    if spec.get("model") != "resnet20" or spec.get("quant") or spec.get("dataset") != data.key:
        raise ValueError(f"{path} holds a {spec.get('model')} for {spec.get('dataset')}"
                         f"{' (quantized)' if spec.get('quant') else ''}; the study needs a float resnet20 for {data.key}")
    return model, path, source


def _shipped(name: str, key: str) -> bool:
    from ..pretrained import HERE
    path = HERE / name / "checkpoint.pt"
    if not path.exists():
        return False
    spec = torch.load(path, map_location="cpu", weights_only=False)["model_spec"]
    return spec.get("dataset") == key


def train_float(data: CifarData, budget: str | None = None, out="runs/cifar/float", progress: bool = True) -> Path:
    """Train the float ResNet-20 with the budget's recipe on the training images minus the held-out ones."""
    out = Path(out)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        config = saved.get("config") or {}
        if saved.get("finished") and config.get("dataset") == data.key and config.get("budget") == current_budget(budget) \
                and config.get("holdout") == data.holdout_size and not config.get("quant"):
            print(f"reusing the finished float run in {out}")
            return ckpt
    train_model(data.key, "resnet20", budget=budget, out=out, holdout=data.holdout_size,
                test_subset=data.recipe.float_test_subset, seed=0, progress=progress, resume=True, device="cpu")
    return ckpt


# ----------------------------------------------------------------------------- rows

def _accuracy(model, loader) -> float:
    return evaluate(model, loader, device="cpu")["accuracy"]


def float_row(model: nn.Module, data: CifarData, source: str = "") -> dict:
    model = model.cpu().eval()
    return {"method": "FP32", "w_bits": 32, "a_bits": 32, "accuracy": _accuracy(model, data.test_loader),
            "size_bytes": model_size_bytes(model), "file_bytes": state_dict_bytes(model), "file_kind": "torch.save",
            "source": source, "dataset": data.name}


def interleaved_latency(fns: dict, example, repeats: int = 50, rounds: int = 5) -> dict:
    """Median latency (ms) of each callable at `example`, measured in `rounds` interleaved blocks (a load that
    comes and goes slows all alike); torch modules run with one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = {k: [] for k in fns}
    try:
        for i in range(rounds):
            for k in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
                times[k].append(measure_latency(fns[k], example, warmup=3, repeats=repeats)["median_ms"])
    finally:
        torch.set_num_threads(threads)
    return {k: statistics.median(v) for k, v in times.items()}


def ptq_int8_row(model: nn.Module, data: CifarData, out, repeats: int | None = None) -> dict:
    """Real int8: the float model exported to ONNX and quantized by ONNX Runtime (min-max calibration on the
    calibration images), scored in ONNX Runtime; latencies of eager PyTorch, ORT fp32 and ORT int8 at batch 1 on
    one thread, interleaved."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    meta = {"dataset": data.key, "dataset_display_name": data.name, "model": "resnet20"}
    fp32_path = export_onnx(model, out / "resnet20_fp32.onnx", input_shape=(1, 3, 32, 32), metadata=meta)
    int8_path = quantize_onnx(fp32_path, out / "resnet20_int8.onnx", data.calib_loader,
                              num_batches=len(data.calib_loader), method="minmax")
    fp32, int8 = OnnxClassifier(fp32_path, threads=1), OnnxClassifier(int8_path, threads=1)
    example = data.test[0][0].unsqueeze(0)
    r = data.recipe
    ms = interleaved_latency({"eager": model, "fp32": fp32, "int8": int8}, example,
                             repeats or r.latency_repeats, r.latency_rounds)
    return {"method": "PTQ int8 (ORT)", "w_bits": 8, "a_bits": 8, "accuracy": _accuracy(int8, data.test_loader),
            "fp32_onnx_accuracy": _accuracy(fp32, data.test_loader), "file_bytes": int8.file_size_bytes,
            "fp32_file_bytes": fp32.file_size_bytes, "file_kind": "ONNX int8 (QDQ)", "latency_ms": ms["int8"],
            "fp32_latency_ms": ms["fp32"], "eager_latency_ms": ms["eager"],
            "speedup_vs_fp32": ms["fp32"] / ms["int8"], "speedup_vs_eager": ms["eager"] / ms["int8"],
            "ort_ops": precision_summary(executed_ops(int8_path)), "path": str(int8_path),
            "calibration": f"minmax on {len(data.calib)} training images", "dataset": data.name}


def ptq_row(model: nn.Module, data: CifarData, bits: int, out, observer: str = "mse") -> dict:
    """Fake-quant PTQ W{bits}A{bits} (first and last layer at 8 bits): accuracy, deployed and packed sizes."""
    t0 = time.perf_counter()
    q = ptq_model(model.cpu(), PTQConfig(w_bits=bits, a_bits=bits, observer=observer), data.calib_loader,
                  num_batches=len(data.calib_loader), progress=False)
    path = Path(out) / f"ptq_w{bits}a{bits}.qsal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"method": f"PTQ W{bits}A{bits}", "w_bits": bits, "a_bits": bits, "accuracy": _accuracy(q, data.test_loader),
            "size_bytes": model_size_bytes(q), "file_bytes": save_packed(q, path, build=BUILD), "file_kind": "bit-packed",
            "observer": observer, "seconds": time.perf_counter() - t0, "dataset": data.name}


def pact_config(bits: int, hparams: dict | None = None, layer_bits: dict | None = None, a_bits: int | None = None) -> QATConfig:
    """PACT at W{bits}A{bits}: alpha starting at the bit width, the alpha learning-rate scale of the chosen
    hyper-parameters, per-layer overrides if any. Weights: symmetric per-channel at 3 bits and more (see the module
    docstring), DoReFa at 2 bits: symmetric 2-bit weights are ternary {-s, 0, s} with s = max|w|, which rounds most
    weights to 0; with the book's W2A2 step from the shipped float model the held-out accuracy was 20.7 % with them
    and 57.8 % with DoReFa's four levels (measured on the stand-in, 1000 held-out images)."""
    hparams = hparams or selection()["chosen"]
    return QATConfig(w_bits=bits, a_bits=a_bits or bits, weight_quant="dorefa" if bits <= 2 else "symmetric",
                     pact_alpha=float(bits),
                     alpha_lr_scale=float(hparams["alpha_lr_scale"]), layer_bits=dict(layer_bits or {}))


def fine_tune(data: CifarData, float_ckpt, step: QATStep, out, config: QATConfig, hparams: dict | None = None,
              budget: str | None = None, progress: bool = True, test_subset: int | None = None):
    """PACT (SGT + PACT with step.sgt) fine-tuning of the float checkpoint on the training images minus the
    held-out ones; returns (model, history)."""
    from ..saliency import SGTConfig

    hparams = hparams or selection()["chosen"]
    return train_model(data.key, "resnet20", budget=budget, out=out, quant=config,
                       sgt=SGTConfig(fraction=SGT_FRACTION) if step.sgt else None, init_from=float_ckpt,
                       epochs=step.epochs, lr=hparams["lr"], optimizer=hparams["optimizer"],
                       weight_decay=hparams["weight_decay"], train_subset=step.train_subset,
                       test_subset=test_subset if test_subset is not None else data.recipe.float_test_subset,
                       holdout=data.holdout_size, seed=0, progress=progress, resume=False, device="cpu")


def qat_row(step: QATStep, data: CifarData, float_ckpt, out, budget: str | None = None, use_shipped: bool = True,
            progress: bool = True, hparams: dict | None = None) -> dict:
    """A PACT row. With use_shipped, the shipped checkpoint of this row is used when it was fine-tuned from the
    same float checkpoint on the same data (source says so); else the model is fine-tuned here. Scored from the
    model reloaded from its bit-packed file (what would be shipped); `history` holds the alphas per epoch."""
    out = Path(out) / step.method.lower().replace(" + ", "_").replace(" ", "_")
    name = PRETRAINED_QAT.get(step.method)
    from ..pretrained import HERE, pretrained_dir
    shipped_ok = use_shipped and name and _shipped(name, data.key) and _same_init(HERE / name, float_ckpt)
    t0 = time.perf_counter()
    if shipped_ok:
        model, ckpt = load_checkpoint(pretrained_dir(name) / "checkpoint.pt")
        history, source = ckpt["history"], f"shipped: qsal_lab/pretrained/{name}"
        config = ckpt["config"]
        step = replace(step, epochs=ckpt["epoch"])  # what the shipped model had, should the recipe have moved on
    else:
        cfg = pact_config(step.bits, hparams)
        model, hist = fine_tune(data, float_ckpt, step, out, cfg, hparams, budget, progress)
        history, source, config = hist.epochs, f"fine-tuned in this run ({step.epochs} epochs)", None
    seconds = time.perf_counter() - t0
    packed = out / "model.qsal"
    packed.parent.mkdir(parents=True, exist_ok=True)
    file_bytes = save_packed(model.cpu().eval(), packed, build=BUILD)
    shipped = load_packed(packed)
    return {"method": step.method, "w_bits": step.bits, "a_bits": step.bits,
            "accuracy": _accuracy(shipped, data.test_loader), "size_bytes": model_size_bytes(shipped),
            "file_bytes": file_bytes, "file_kind": "bit-packed", "packed_path": str(packed), "source": source,
            "seconds": seconds, "history": history, "step": asdict(step),
            "train_config": config or {"hparams": hparams or selection()["chosen"]}, "dataset": data.name}


def _same_init(folder: Path, float_ckpt) -> bool:
    """Whether the shipped fine-tuning in `folder` started from `float_ckpt`: only the shipped float model counts
    (a shipped PACT model is never passed off as a fine-tuning of another float model)."""
    from ..pretrained import HERE

    ckpt = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
    init = str((ckpt.get("config") or {}).get("init_from") or "")
    return PRETRAINED in Path(init).parts and \
        Path(float_ckpt).resolve() == (HERE / PRETRAINED / "checkpoint.pt").resolve()


# ----------------------------------------------------------------------------- the study

def run_study(out="runs/cifar", *, budget: str | None = None, rows=ROWS, float_checkpoint=None, root=None,
              standin: bool | None = None, use_shipped: bool = True, progress: bool = True,
              recipe: CifarRecipe | None = None) -> dict:
    """Every row of `rows` on one data set. Returns {'dataset', 'key', 'standin', 'budget', 'recipe', 'rows',
    'float_source', 'selection', 'seconds'}; each row has accuracy, drop_pt (report.drop_pt) and sizes, and
    file_vs_fp32 (the ORT row against the fp32 ONNX file, the others against torch.save of the float weights)."""
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; choose from: {', '.join(ROWS)}")
    budget = current_budget(budget)
    t0 = time.perf_counter()
    data = cifar_data(budget, root=root, standin=standin, recipe=recipe)
    work = Path(out) / data.key
    model, ckpt_path, source = float_model(data, budget, work, float_checkpoint, progress)
    result_rows = [float_row(model, data, source)]
    if "PTQ int8 (ORT)" in rows:
        result_rows.append(ptq_int8_row(model, data, work))
    for bits in (8, 4, 2):
        if f"PTQ W{bits}A{bits}" in rows:
            result_rows.append(ptq_row(model, data, bits, work))
    for step in data.recipe.qat:
        if step.method in rows:
            result_rows.append(qat_row(step, data, ckpt_path, work, budget, use_shipped, progress))
    fp = result_rows[0]
    for r in result_rows:
        r["drop_pt"] = drop_pt(fp["accuracy"], r["accuracy"])
        reference = r.get("fp32_file_bytes") or fp["file_bytes"]
        r["file_vs_fp32"] = r["file_bytes"] / reference
    return {"dataset": data.name, "key": data.key, "standin": data.standin, "version": data.info.version,
            "budget": budget, "recipe": data.recipe.to_dict(), "float_source": source,
            "float_checkpoint": str(ckpt_path), "selection": selection(), "test_n": len(data.test),
            "rows": [r for r in result_rows if r["method"] in rows], "seconds": time.perf_counter() - t0}


def find_row(rows: list[dict], method: str) -> dict:
    for r in rows:
        if r["method"] == method:
            return r
    raise KeyError(f"no row {method!r}; rows: {', '.join(r['method'] for r in rows)}")


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table: accuracy, drop against FP32 in words, file and its size against FP32."""
    body = []
    for r in rows:
        bits = "32/32" if r["w_bits"] == 32 else f"{r['w_bits']}/{r['a_bits']}"
        drop = "–" if r["method"] == "FP32" else describe_drop(r.get("drop_pt", 0.0), reference="FP32")
        latency = f"{r['latency_ms']:.3f}" if r.get("latency_ms") else "–"
        body.append([r["method"], bits, f"{r['accuracy']:.2%}", drop, f"{r['file_bytes'] / 1024:.1f} ({r['file_kind']})",
                     f"{r.get('file_vs_fp32', 1.0):.3f}×", latency])
    return markdown_table(["model", "W/A bits", "test accuracy", "vs FP32", "file (KiB)", "file vs FP32",
                           "latency ORT, batch 1, 1 thread (ms)"], body)


# ----------------------------------------------------------------------------- PACT's optimizer, chosen on validation

def choose_pact_hparams(data: CifarData, float_ckpt, out="runs/cifar/selection", candidates=PACT_CANDIDATES,
                        bits=(4, 2), budget: str | None = None, progress: bool = True) -> dict:
    """Fine-tune each candidate {optimizer, lr, weight_decay, alpha_lr_scale} at each bit width with the recipe's
    selection step and score it on the held-out split (never test). The chosen one has the best mean held-out
    accuracy over the bit widths. Returns {'chosen', 'candidates': [...], 'criterion', ...}."""
    step = data.recipe.selection
    table = []
    for i, hp in enumerate(candidates):
        entry = {**hp, "holdout_accuracy": {}, "final_alphas": {}}
        for b in bits:
            model, hist = fine_tune(data, float_ckpt, replace(step, bits=b), Path(out) / f"cand{i}_w{b}a{b}",
                                    pact_config(b, hp), hp, budget, progress, test_subset=100)
            entry["holdout_accuracy"][f"W{b}A{b}"] = _accuracy(model, data.holdout_loader)
            entry["final_alphas"][f"W{b}A{b}"] = hist.final.get("alphas")
        entry["mean_holdout_accuracy"] = statistics.fmean(entry["holdout_accuracy"].values())
        table.append(entry)
    best = max(table, key=lambda e: e["mean_holdout_accuracy"])
    chosen = {k: best[k] for k in ("optimizer", "lr", "weight_decay", "alpha_lr_scale")}
    return {"chosen": chosen, "candidates": table, "dataset": data.name, "key": data.key,
            "criterion": f"best mean accuracy on {len(data.holdout)} held-out training images (not test) over "
                         f"{', '.join(f'W{b}A{b}' for b in bits)}",
            "step": asdict(step), "float_checkpoint": str(float_ckpt)}


DEFAULT_HPARAMS = PACT_CANDIDATES[0]  # used only when no selection has been made or shipped


def selection() -> dict:
    """The shipped choice of PACT's hyper-parameters (qsal_lab/pretrained/<PRETRAINED>/selection.json), or, if none
    is shipped, the default (SGD as in the PACT paper) marked as not chosen."""
    from ..pretrained import HERE
    path = HERE / PRETRAINED / "selection.json"
    if path.exists():
        return {**json.loads(path.read_text()), "source": f"qsal_lab/pretrained/{PRETRAINED}/selection.json"}
    return {"chosen": dict(DEFAULT_HPARAMS), "candidates": [], "criterion": "none: default (no selection shipped)",
            "source": "default"}


# ----------------------------------------------------------------------------- per-layer sensitivity, mixed precision

def layer_sensitivity(model: nn.Module, data: CifarData, bits: int = 2, activations: bool = True,
                      calib_batches: int = 2, progress: bool = True) -> list[dict]:
    """Quantize one weight layer at a time to `bits` (its weights and, with activations, its input), the rest in
    float, by PTQ (BN folded, MSE calibration); accuracy on the held-out split and the drop against float.
    Rows in model order: {'layer', 'parameters', 'accuracy', 'drop_pt'}."""
    from tqdm.auto import tqdm

    model = model.cpu().eval()
    base = _accuracy(model, data.holdout_loader)
    rows = []
    for name, layer in tqdm(weight_layers(model), desc=f"{bits}-bit layers", disable=not progress, leave=False):
        config = PTQConfig(w_bits=32, a_bits=32, first_last_bits=32, observer="mse",
                           layer_bits={name: (bits, bits if activations else 32)})
        q = ptq_model(model, config, data.calib_loader, num_batches=calib_batches, progress=False)
        acc = _accuracy(q, data.holdout_loader)
        rows.append({"layer": name, "parameters": layer.weight.numel(), "accuracy": acc,
                     "drop_pt": drop_pt(base, acc), "float_accuracy": base})
    return rows


def mixed_bits(sensitivity: list[dict], low: int = 2, high: int = 4, share: float = 0.5,
               reverse: bool = False) -> dict:
    """layer_bits for a mixed W{high}/W{low} model: the least sensitive inner layers (first and last stay at 8 bits)
    go to `low` bits until they hold `share` of the inner layers' weights; reverse=True takes the most sensitive
    first (the control at about the same size)."""
    inner = sensitivity[1:-1]
    order = sorted(inner, key=lambda r: r["drop_pt"], reverse=reverse)
    target, total, bits = share * sum(r["parameters"] for r in inner), 0, {}
    for r in order:
        low_now = total < target
        bits[r["layer"]] = low if low_now else high
        total += r["parameters"] if low_now else 0
    return {r["layer"]: bits[r["layer"]] for r in inner}


def mixed_precision_rows(float_ckpt, data: CifarData, sensitivity: list[dict], out="runs/cifar/mixed",
                         budget: str | None = None, share: float = 0.5, progress: bool = True,
                         uniform: bool = True) -> list[dict]:
    """Fine-tune, all with the recipe's `mixed` step: the sensitivity-chosen mixed W4/W2 (A4), the reverse choice
    at about the same packed size (A4) and, with uniform, uniform W4A4 and W2A2. Accuracy on test, packed size."""
    chosen, rev = mixed_bits(sensitivity, share=share), mixed_bits(sensitivity, share=share, reverse=True)
    configs = [("mixed W4/W2 (least sensitive at 2 bits)", pact_config(4, layer_bits=chosen), chosen),
               ("mixed W4/W2 (most sensitive at 2 bits)", pact_config(4, layer_bits=rev), rev)]
    if uniform:
        configs += [("uniform W4A4", pact_config(4), {}), ("uniform W2A2", pact_config(2), {})]
    rows = []
    for label, config, layer_bits in configs:
        run = Path(out) / (label.split(" (")[0].replace(" ", "_").replace("/", "") + ("_rev" if "most" in label else ""))
        model, hist = fine_tune(data, float_ckpt, data.recipe.mixed, run, config, None, budget, progress)
        packed = run / "model.qsal"
        file_bytes = save_packed(model.cpu().eval(), packed, build=BUILD)
        reloaded = load_packed(packed)
        rows.append({"method": label, "a_bits": config.a_bits, "layer_bits": layer_bits,
                     "low_bit_layers": sorted(k for k, v in layer_bits.items() if v == 2),
                     "accuracy": _accuracy(reloaded, data.test_loader), "packed_bytes": file_bytes,
                     "size_bytes": model_size_bytes(reloaded), "dataset": data.name})
    return rows


# ----------------------------------------------------------------------------- figures

def plot_alpha_curves(history: list[dict], info: DatasetInfo, name: str | None = None, label: str = "PACT",
                      alpha_init: float | None = None):
    """PACT's clipping level of every activation per epoch (small multiples), titled with the data's name;
    alpha_init (e.g. the row's bit width, where pact_config starts alpha) adds the epoch-0 point."""
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    records = [e for e in history if e.get("alphas")]
    if not records:
        raise ValueError("this history records no alphas (was it a PACT run?)")
    names = list(records[-1]["alphas"])
    epochs = ([0] if alpha_init is not None else []) + [e["epoch"] for e in records]
    cols = 7
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(1.9 * cols, 1.4 * -(-len(names) // cols)),
                             sharex=True, squeeze=False)
    for ax, n in zip(axes.flat, names):
        values = ([alpha_init] if alpha_init is not None else []) + [e["alphas"][n] for e in records]
        ax.plot(epochs, values, marker=".", lw=1)
        ax.set_title(n.replace("layers.", "L"), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.ticklabel_format(axis="y", useOffset=False)  # a tiny move must look tiny, not "1e-5 + 3.9999"
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title(f"{label}: alpha per activation and epoch", info), fontsize=9)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


# ----------------------------------------------------------------------------- the shipped checkpoints

SHIP_STEPS = ("float", "selection", "PACT W4A4", "PACT W2A2", "SGT + PACT W4A4")


def ship_pretrained(out="runs/pretrained_cifar10standin", steps=SHIP_STEPS, progress: bool = True) -> dict:
    """Make the shipped stand-in checkpoints at the book budget, step by step (each shipped when it finishes):
    the float ResNet-20 (book recipe, held-out images left out) as qsal_lab/pretrained/<PRETRAINED>/; PACT's
    optimizer and alpha learning-rate scale chosen on the held-out split (selection.json beside it); then the
    PACT W4A4, W2A2 and SGT + PACT W4A4 fine-tunings of it with the chosen hyper-parameters (PRETRAINED_QAT).
    Every folder's metrics.json gains `shipped`: the shipped file's own test accuracy on all test images."""
    from ..pretrained import HERE, slim_checkpoint

    unknown = set(steps) - set(SHIP_STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from: {', '.join(SHIP_STEPS)}")
    out = Path(out)
    data = cifar_data("book", standin=True)
    # the thread count is part of the command: another one sums in another order (results differ in the last digits)
    call = (f"OMP_NUM_THREADS={torch.get_num_threads()} " +
            "python -c \"from qsal_lab.experiments.cifar import ship_pretrained; ship_pretrained(steps=[{!r}])\"")
    done = {}
    float_dir = HERE / PRETRAINED
    if "float" in steps:
        train_float(data, "book", out / "float", progress)
        slim_checkpoint(out / "float", float_dir, call.format("float") + "\n# = train_model('" + data.key +
                        "', 'resnet20', budget='book', holdout=" + f"{data.holdout_size}, test_subset="
                        f"{data.recipe.float_test_subset}, seed=0) on the stand-in (never real CIFAR-10)")
        done["float"] = _record_shipped(float_dir, data, packed=False)
    init = _relative(float_dir)
    if "selection" in steps:
        # at 4 bits: after one short epoch every candidate was still at chance (10-12 %) at W2A2 (measured), which
        # would make the choice a coin toss; at W4A4 the candidates recover far enough to be told apart
        chosen = choose_pact_hparams(data, float_dir / "checkpoint.pt", out / "selection", bits=(4,), budget="book",
                                     progress=progress)
        atomic_write_text(json.dumps(chosen, indent=2, default=str), float_dir / "selection.json")
        done["selection"] = chosen["chosen"]
    hparams = selection()["chosen"]
    for step in data.recipe.qat:
        if step.method not in steps:
            continue
        run = out / step.method.lower().replace(" + ", "_").replace(" ", "_")
        fine_tune(data, init, step, run, pact_config(step.bits, hparams), hparams, "book", progress)
        dest = HERE / PRETRAINED_QAT[step.method]
        slim_checkpoint(run, dest, call.format(step.method) + f"\n# = {step.method}: {step.epochs} epochs on "
                        f"{step.train_subset or 'all'} training images (held-out ones left out), from {init}, "
                        f"hyper-parameters chosen on the held-out split: {hparams}")
        done[step.method] = _record_shipped(dest, data, packed=True)
    return done


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _record_shipped(folder: Path, data: CifarData, packed: bool) -> dict:
    """Add `shipped` to folder/metrics.json: the shipped file's accuracy on every test image and on the held-out
    split, its size, parameters and training seconds."""
    model, ckpt = load_checkpoint(folder / "checkpoint.pt")
    scored = model
    if packed:  # PACT models are scored as they would be shipped: from the bit-packed file
        path = folder.parent / f".{folder.name}.qsal"
        save_packed(model.eval(), path, build=BUILD)
        scored = load_packed(path)
        path.unlink()
    test = load_dataset(data.key, "test")  # every test image, whatever the recipe scores on
    shipped = {"dataset": data.name, "dataset_key": data.key,
               "test_accuracy": _accuracy(scored, make_loader(test, batch_size=500)), "test_n": len(test), "holdout_accuracy": _accuracy(scored, data.holdout_loader),
               "holdout_n": len(data.holdout), "file_bytes": (folder / "checkpoint.pt").stat().st_size,
               "parameters": sum(p.numel() for p in model.parameters()),
               "train_seconds": sum(e["seconds"] for e in ckpt["history"]), "epochs": ckpt["epoch"]}
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["shipped"] = shipped
    atomic_write_text(json.dumps(metrics, indent=2, default=str), folder / "metrics.json")
    return shipped
