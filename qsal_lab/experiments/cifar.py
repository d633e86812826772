"""The CIFAR-10 study with ResNet-20 (chapter 8, bench/cifar_resnet20.py): PTQ, PACT and SGT + PACT on colour images.

    data = cifar_data()                          # real CIFAR-10 if present, else (QSAL_STANDIN=1) the stand-in
    model, ckpt, source = float_model(data)      # stand-in: the shipped float ResNet-20; real: trained here
    study = run_study(out="runs/cifar")          # every row of ROWS; what the benchmark runs
    print(title("Results", data.info)); print(format_table(study["rows"]))

Every row, table and figure title names the data set actually loaded (`title`, `banner`): a stand-in number says
nothing about CIFAR-10. Rows (`ROWS`), scored on the same test images: FP32; PTQ int8 in ONNX Runtime; fake-quant
PTQ W8A8/W4A4/W2A2; PACT W4A4 and W2A2 and SGT + PACT W4A4, fine-tunings of the float model whose optimizer and
alpha learning-rate scale were chosen on a validation split held out of the training images (`choose_pact_hparams`,
shipped as `selection()`). On that split too, one layer at a time at 2 bits (`layer_sensitivity`) chooses the
mixed W4/W2 model (`mixed_bits`) that `mixed_precision_rows` compares with the reverse choice and uniform PACT.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn
from tqdm.auto import tqdm

from ..budget import current_budget
from ..data import DataError, DatasetInfo, load_dataset, make_loader
from ..files import atomic_write_text
from ..plots import save_figure
from ..pretrained import HERE
from ..quant.convert import QATConfig, weight_layers
from ..quant.packing import load_packed, model_size_bytes, save_packed
from ..quant.ptq import PTQConfig, ptq_model
from ..saliency import SGTConfig
from ..train import evaluate, load_checkpoint, train_model
from . import study
from .report import describe_drop, drop_pt
from .study import FineTune, Precision, Row, accuracy_on, against, table

PRETRAINED = "cifar10standin_resnet20"  # the shipped float model for the stand-in (qsal_lab/pretrained/<name>/)
PRETRAINED_QAT = {"PACT W4A4": "cifar10standin_resnet20_pact_w4a4", "PACT W2A2": "cifar10standin_resnet20_pact_w2a2",
                  "SGT + PACT W4A4": "cifar10standin_resnet20_sgt_pact_w4a4"}
ROWS = ("FP32", "PTQ int8 (ORT)", "PTQ W8A8", "PTQ W4A4", "PTQ W2A2", "PACT W4A4", "PACT W2A2", "SGT + PACT W4A4")
SGT_FRACTION = 0.1  # the SGT paper's mask fraction on CIFAR-10
BUILD = {"name": "resnet20", "num_classes": 10, "in_channels": 3, "image_size": 32}

# PACT's optimizer and alpha learning-rate scale: the candidates compared on the held-out split
PACT_CANDIDATES = tuple({"optimizer": opt, "lr": lr, "weight_decay": wd, "alpha_lr_scale": scale}
                        for opt, lr, wd in (("sgd", 0.01, 5e-4), ("adamw", 5e-4, 1e-4)) for scale in (1.0, 10.0))
DEFAULT_HPARAMS = PACT_CANDIDATES[0]  # used only when no selection has been made or shipped


def pact_step(bits: int, epochs: int, train_subset: int | None = None, sgt: bool = False) -> FineTune:
    """A PACT fine-tuning as this study runs it: symmetric per-channel weights keep BatchNorm's frozen statistics
    valid; at 2 bits DoReFa's four levels, because symmetric 2-bit weights are ternary and most round to 0."""
    return FineTune(bits, epochs, train_subset, sgt_fraction=SGT_FRACTION if sgt else None,
                    weight_quant="dorefa" if bits <= 2 else "symmetric")


@dataclass(frozen=True)
class CifarRecipe:
    """Everything the study does at one budget (subsets stratified and seeded; None = the whole split)."""
    test_subset: int | None          # test images every row is scored on
    holdout: int                     # validation images held out of train (choices are made on them)
    holdout_subset: int | None       # of which the sensitivity scan and the selection use this many
    calib_images: int                # PTQ calibration images (training images, not held out)
    qat: tuple                       # FineTunes of the PACT rows, in ROWS order
    mixed: FineTune                  # the (shorter) fine-tuning every mixed-precision row gets
    selection: FineTune              # the fine-tuning each PACT candidate gets on the held-out split
    float_test_subset: int | None = 5000   # test images train_model evaluates on after each float epoch
    latency_repeats: int = 50
    latency_rounds: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


def _steps(w4, w2, sgt):
    return pact_step(4, *w4), pact_step(2, *w2), pact_step(4, *sgt, sgt=True)


RECIPES = {  # book: the shipped checkpoints' steps (tools/train_pretrained.sh); ci: a smoke run, numbers mean nothing
    "ci": CifarRecipe(test_subset=300, holdout=300, holdout_subset=200, calib_images=128,
                      qat=_steps((1, 256), (1, 256), (1, 128)), mixed=pact_step(4, 1, 128),
                      selection=pact_step(4, 1, 128), float_test_subset=300, latency_repeats=5, latency_rounds=2),
    "book": CifarRecipe(test_subset=5000, holdout=2000, holdout_subset=1000, calib_images=512,
                        qat=_steps((3, None), (16, None), (2, 8000)), mixed=pact_step(4, 1, 3000),
                        selection=pact_step(4, 1, 3000)),
    "full": CifarRecipe(test_subset=None, holdout=5000, holdout_subset=None, calib_images=1024,
                        qat=_steps((15, None), (30, None), (15, None)), mixed=pact_step(4, 10, None),
                        selection=pact_step(4, 3, None), float_test_subset=None, latency_repeats=100),
}


def cifar_recipe(budget: str | None = None, **overrides) -> CifarRecipe:
    return replace(RECIPES[current_budget(budget)], **overrides)


# ----------------------------------------------------------------------------- which data

@dataclass
class CifarData:
    """The splits the study scores on, all from the data set actually loaded (`info`: CIFAR-10 or the stand-in,
    whose name, display name and stand-in flag are also `key`, `name` and `standin`), with their loaders."""
    info: DatasetInfo
    test: object
    holdout: object
    calib: object
    recipe: CifarRecipe
    reason: str = ""  # why this data: set by `detect_data`

    def __post_init__(self):
        self.key, self.name, self.standin = self.info.name, self.info.display_name, self.info.standin
        self.holdout_size = self.recipe.holdout
        self.test_loader, self.holdout_loader = (make_loader(ds, batch_size=500) for ds in (self.test, self.holdout))
        self.calib_loader = make_loader(self.calib, batch_size=128)


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
    return CifarData(test.info, test, holdout, calib, recipe)


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
            f"CIFAR-10 (one shape among clutter per image, 10 shapes as classes). Every number below is a stand-in "
            f"number: it shows how the methods compare on these images and says nothing about CIFAR-10 accuracy. "
            f"With real CIFAR-10 (downloaded on first use, or under QSAL_DATA) the same code shows real results.")


# ----------------------------------------------------------------------------- the float model

def _fits(name: str, key: str) -> bool:
    """Whether the shipped checkpoint `name` was trained on the data set `key` (this very stand-in version)."""
    path = HERE / name / "checkpoint.pt"
    return path.exists() and load_checkpoint(path)[1]["model_spec"].get("dataset") == key


def float_model(data: CifarData, budget: str | None = None, out="runs/cifar", checkpoint=None,
                progress: bool = True):
    """(model, checkpoint path, source) of the float ResNet-20. `checkpoint` if given; else, for the stand-in, the
    shipped model when it was trained on this very stand-in version; else trained here with the budget's recipe
    (the held-out images left out), reusing a finished run in out/float."""
    if checkpoint is not None:
        path, source = Path(checkpoint), f"given: {checkpoint}"
    elif data.standin and _fits(PRETRAINED, data.key):
        path, source = HERE / PRETRAINED / "checkpoint.pt", f"shipped: qsal_lab/pretrained/{PRETRAINED}"
    else:
        path = train_float(data, budget, Path(out) / "float", progress)
        source = f"trained in this run ({budget or current_budget()})"
    model, _ = study.float_checkpoint(path, "resnet20", data.key)
    return model, path, source


def train_float(data: CifarData, budget: str | None = None, out="runs/cifar/float", progress: bool = True) -> Path:
    """Train the float ResNet-20 with the budget's recipe on the training images minus the held-out ones."""
    ckpt = Path(out) / "checkpoint.pt"
    if study.finished_run(ckpt, dataset=data.key, budget=current_budget(budget), holdout=data.holdout_size, quant=None):
        print(f"reusing the finished float run in {out}")
        return ckpt
    train_model(data.key, "resnet20", budget=budget, out=out, holdout=data.holdout_size,
                test_subset=data.recipe.float_test_subset, seed=0, progress=progress, resume=True, device="cpu")
    return ckpt


# ----------------------------------------------------------------------------- rows

def _accuracy(model, loader) -> float:
    return evaluate(model, loader, device="cpu")["accuracy"]


def float_row(model: nn.Module, data: CifarData, source: str = "") -> Row:
    return study.float_row(model, accuracy_on(data.test_loader), data.name, source=source)


def ptq_int8_row(model: nn.Module, data: CifarData, out, repeats: int | None = None) -> Row:
    """Real int8 (study.ort_rows): calibrated on the calibration images, scored in ONNX Runtime, with the latencies
    of eager PyTorch, ORT fp32 and ORT int8 at batch 1 on one thread, interleaved."""
    meta = {"dataset": data.key, "dataset_display_name": data.name, "model": "resnet20"}
    fp32, int8 = study.ort_rows(model, accuracy_on(data.test_loader), data.calib_loader, out, data.name,
                                data.test[0][0].unsqueeze(0), meta, stem="resnet20",
                                repeats=repeats or data.recipe.latency_repeats, rounds=data.recipe.latency_rounds)
    int8.metrics["fp32_onnx_accuracy"] = fp32.accuracy
    return int8


def ptq_row(model: nn.Module, data: CifarData, bits: int, out, observer: str = "mse") -> Row:
    return study.ptq_row(model, bits, data.calib_loader, accuracy_on(data.test_loader), out, data.name, BUILD, observer)


def pact_config(bits: int, hparams: dict | None = None, layer_bits: dict | None = None) -> QATConfig:
    """PACT at W{bits}A{bits} as `pact_step` fine-tunes it: alpha starting at the bit width, the alpha learning-rate
    scale of the chosen hyper-parameters, per-layer overrides if any."""
    hparams = hparams or selection()["chosen"]
    return pact_step(bits, 0).config(alpha_lr_scale=float(hparams["alpha_lr_scale"]), layer_bits=dict(layer_bits or {}))


def fine_tune(data: CifarData, float_ckpt, step: FineTune, out, hparams: dict | None = None, budget: str | None = None,
              progress: bool = True, test_subset: int | None = None, layer_bits: dict | None = None):
    """The float checkpoint fine-tuned by `step` (PACT, or SGT + PACT) on the training images minus the held-out
    ones, with the chosen optimizer; returns (model, history)."""
    hparams = hparams or selection()["chosen"]
    config = step.config(alpha_lr_scale=float(hparams["alpha_lr_scale"]), layer_bits=dict(layer_bits or {}))
    return train_model(data.key, "resnet20", budget=budget, out=out, quant=config,
                       sgt=SGTConfig(fraction=step.sgt_fraction) if step.sgt else None, init_from=float_ckpt,
                       epochs=step.epochs, lr=hparams["lr"], optimizer=hparams["optimizer"],
                       weight_decay=hparams["weight_decay"], train_subset=step.train_subset,
                       test_subset=test_subset if test_subset is not None else data.recipe.float_test_subset,
                       holdout=data.holdout_size, seed=0, progress=progress, resume=False, device="cpu")


def qat_row(step: FineTune, data: CifarData, float_ckpt, out, budget: str | None = None, use_shipped: bool = True,
            progress: bool = True, hparams: dict | None = None) -> Row:
    """A PACT row (study.pact_row). With use_shipped, the shipped checkpoint of this row is used when it was
    fine-tuned from the same float checkpoint on the same data (`source` says so); else it is fine-tuned here."""
    name = PRETRAINED_QAT.get(step.model)
    shipped = use_shipped and name and _fits(name, data.key) and _same_init(HERE / name, float_ckpt)

    def train(step, run):
        if shipped:
            model, ckpt = load_checkpoint(HERE / name / "checkpoint.pt")
            return model, ckpt["history"], {"source": f"shipped: qsal_lab/pretrained/{name}",
                                            "step": asdict(replace(step, epochs=ckpt["epoch"])),
                                            "train_config": ckpt["config"]}
        model, history = fine_tune(data, float_ckpt, step, run, hparams, budget, progress)
        return model, history.epochs, {"source": f"fine-tuned in this run ({step.epochs} epochs)",
                                       "train_config": {"hparams": hparams or selection()["chosen"]}}

    return study.pact_row(step, train, accuracy_on(data.test_loader), out, data.name, BUILD)


def _same_init(folder: Path, float_ckpt) -> bool:
    """Whether the shipped fine-tuning in `folder` started from `float_ckpt`: only the shipped float model counts
    (a shipped PACT model is never passed off as a fine-tuning of another float model)."""
    init = str((load_checkpoint(folder / "checkpoint.pt")[1].get("config") or {}).get("init_from") or "")
    return PRETRAINED in Path(init).parts and \
        Path(float_ckpt).resolve() == (HERE / PRETRAINED / "checkpoint.pt").resolve()


# ----------------------------------------------------------------------------- the study

def run_study(out="runs/cifar", *, budget: str | None = None, rows=ROWS, float_checkpoint=None, root=None,
              standin: bool | None = None, use_shipped: bool = True, progress: bool = True,
              recipe: CifarRecipe | None = None) -> dict:
    """Every row of `rows` on one data set, against FP32 (study.against). Returns {'dataset', 'key', 'standin',
    'version', 'budget', 'recipe', 'float_source', 'float_checkpoint', 'selection', 'test_n', 'rows'}."""
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; choose from: {', '.join(ROWS)}")
    budget = current_budget(budget)
    data = cifar_data(budget, root=root, standin=standin, recipe=recipe)
    work = Path(out) / data.key
    model, ckpt_path, source = float_model(data, budget, work, float_checkpoint, progress)
    result = [float_row(model, data, source)]
    if "PTQ int8 (ORT)" in rows:
        result.append(ptq_int8_row(model, data, work))
    result += [ptq_row(model, data, b, work) for b in (8, 4, 2) if f"PTQ W{b}A{b}" in rows]
    result += [qat_row(step, data, ckpt_path, work, budget, use_shipped, progress)
               for step in data.recipe.qat if step.model in rows]
    return {"dataset": data.name, "key": data.key, "standin": data.standin, "version": data.info.version,
            "budget": budget, "recipe": data.recipe.to_dict(), "float_source": source,
            "float_checkpoint": str(ckpt_path), "selection": selection(), "test_n": len(data.test),
            "rows": [r for r in against(result, result[0]) if r.model in rows]}


def format_table(rows: list[Row]) -> str:
    """The rows as a Markdown table: accuracy, drop against FP32 in words, file and its size against FP32."""
    return table(rows, {
        **study.NAMED,
        "vs FP32": lambda r: "–" if r.model == "FP32" else describe_drop(r.drop_pt or 0.0, reference="FP32"),
        "file (KiB)": lambda r: f"{r.file_bytes / 1024:.1f} ({r.file_kind})",
        "file vs FP32": lambda r: f"{r.get('file_vs_fp32', 1.0):.3f}×",
        "latency ORT, batch 1, 1 thread (ms)": lambda r: f"{r.latency_ms:.3f}" if r.latency_ms else "–"})


# ----------------------------------------------------------------------------- PACT's optimizer, chosen on validation

def choose_pact_hparams(data: CifarData, float_ckpt, out="runs/cifar/selection", candidates=PACT_CANDIDATES,
                        bits=(4, 2), budget: str | None = None, progress: bool = True) -> dict:
    """Fine-tune each candidate {optimizer, lr, weight_decay, alpha_lr_scale} at each bit width with the recipe's
    selection step and score it on the held-out split (never test): the chosen one has the best mean held-out
    accuracy over the bit widths. Returns {'chosen', 'candidates': [...], 'criterion', ...}."""
    step, scored = data.recipe.selection, []
    for i, hp in enumerate(candidates):
        entry = {**hp, "holdout_accuracy": {}, "final_alphas": {}}
        for b in bits:
            model, hist = fine_tune(data, float_ckpt, pact_step(b, step.epochs, step.train_subset),
                                    Path(out) / f"cand{i}_w{b}a{b}", hp, budget, progress, test_subset=100)
            entry["holdout_accuracy"][f"W{b}A{b}"] = _accuracy(model, data.holdout_loader)
            entry["final_alphas"][f"W{b}A{b}"] = hist.final.get("alphas")
        scored.append({**entry, "mean_holdout_accuracy": statistics.fmean(entry["holdout_accuracy"].values())})
    best = max(scored, key=lambda e: e["mean_holdout_accuracy"])
    return {"chosen": {k: best[k] for k in DEFAULT_HPARAMS}, "candidates": scored, "dataset": data.name,
            "key": data.key, "criterion": f"best mean accuracy on {len(data.holdout)} held-out training images (not "
                                          f"test) over {', '.join(f'W{b}A{b}' for b in bits)}",
            "step": asdict(step), "float_checkpoint": str(float_ckpt)}


def selection() -> dict:
    """The shipped choice of PACT's hyper-parameters (qsal_lab/pretrained/<PRETRAINED>/selection.json), or, if none
    is shipped, the default (SGD as in the PACT paper) marked as not chosen."""
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
    Rows in model order: {'layer', 'parameters', 'accuracy', 'drop_pt', 'float_accuracy'}."""
    model = model.cpu().eval()
    base = _accuracy(model, data.holdout_loader)
    rows = []
    for name, layer in tqdm(weight_layers(model), desc=f"{bits}-bit layers", disable=not progress, leave=False):
        config = PTQConfig(w_bits=32, a_bits=32, first_last_bits=32, observer="mse",
                           layer_bits={name: (bits, bits if activations else 32)})
        acc = _accuracy(ptq_model(model, config, data.calib_loader, num_batches=calib_batches, progress=False),
                        data.holdout_loader)
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
                         uniform: bool = True) -> list[Row]:
    """Fine-tune, all with the recipe's `mixed` step: the sensitivity-chosen mixed W4/W2 (A4), the reverse choice
    at about the same packed size (A4) and, with uniform, uniform W4A4 and W2A2. Scored on test from the packed
    file; the precision's `layers` are the per-layer weight bits."""
    chosen, rev = mixed_bits(sensitivity, share=share), mixed_bits(sensitivity, share=share, reverse=True)
    runs = [("mixed W4/W2 (least sensitive at 2 bits)", "mixed_W4W2", 4, chosen),
            ("mixed W4/W2 (most sensitive at 2 bits)", "mixed_W4W2_rev", 4, rev)]
    if uniform:
        runs += [("uniform W4A4", "uniform_W4A4", 4, {}), ("uniform W2A2", "uniform_W2A2", 2, {})]
    rows = []
    for label, folder, bits, layer_bits in runs:
        run = Path(out) / folder
        step = replace(data.recipe.mixed, bits=bits, weight_quant=pact_step(bits, 0).weight_quant)
        model, _ = fine_tune(data, float_ckpt, step, run, None, budget, progress, layer_bits=layer_bits)
        file_bytes = save_packed(model.cpu().eval(), run / "model.qsal", build=BUILD)
        reloaded = load_packed(run / "model.qsal")
        rows.append(Row(label, data.name, Precision.of(step.config(layer_bits=layer_bits)),
                        accuracy=_accuracy(reloaded, data.test_loader), file_bytes=file_bytes, file_kind="bit-packed",
                        size_bytes=model_size_bytes(reloaded),
                        notes={"low_bit_layers": sorted(k for k, v in layer_bits.items() if v == 2)}))
    return rows


# ----------------------------------------------------------------------------- figures

def plot_alpha_curves(history: list[dict], info: DatasetInfo, name: str | None = None, label: str = "PACT",
                      alpha_init: float | None = None):
    """PACT's clipping level of every activation per epoch (small multiples), titled with the data's name;
    alpha_init (e.g. the row's bit width, where pact_config starts alpha) adds the epoch-0 point."""
    records = [e for e in history if e.get("alphas")]
    if not records:
        raise ValueError("this history records no alphas (was it a PACT run?)")
    names = list(records[-1]["alphas"])
    epochs = ([0] if alpha_init is not None else []) + [e["epoch"] for e in records]
    cols, lines = 7, -(-len(names) // 7)
    fig, axes = plt.subplots(lines, cols, figsize=(1.9 * cols, 1.4 * lines), sharex=True, squeeze=False)
    for ax, n in zip(axes.flat, names):
        ax.plot(epochs, ([alpha_init] if alpha_init is not None else []) + [e["alphas"][n] for e in records],
                marker=".", lw=1)
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
    unknown = set(steps) - set(SHIP_STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from: {', '.join(SHIP_STEPS)}")
    out, data, done, float_dir = Path(out), cifar_data("book", standin=True), {}, HERE / PRETRAINED
    test = make_loader(load_dataset(data.key, "test"), batch_size=500)  # every test image, whatever the recipe scores

    def score(packed: bool):  # PACT models are scored as they would be shipped: from the bit-packed file
        def measure(model):
            if packed:
                path = float_dir.parent / ".scoring.qsal"
                save_packed(model.eval(), path, build=BUILD)
                model = load_packed(path)
                path.unlink()
            return {"dataset": data.name, "dataset_key": data.key, "test_accuracy": _accuracy(model, test),
                    "test_n": len(test.dataset), "holdout_accuracy": _accuracy(model, data.holdout_loader),
                    "holdout_n": len(data.holdout)}
        return measure

    # the thread count is part of the command: another one sums in another order (results differ in the last digits)
    call = (f"OMP_NUM_THREADS={torch.get_num_threads()} " +
            "python -c \"from qsal_lab.experiments.cifar import ship_pretrained; ship_pretrained(steps=[{!r}])\"")
    if "float" in steps:
        train_float(data, "book", out / "float", progress)
        done["float"] = study.ship_checkpoint(
            out / "float", float_dir, call.format("float") + f"\n# = train_model('{data.key}', 'resnet20', budget="
            f"'book', holdout={data.holdout_size}, test_subset={data.recipe.float_test_subset}, seed=0) on the "
            "stand-in (never real CIFAR-10)", score(packed=False))
    init = _relative(float_dir)
    if "selection" in steps:  # at 4 bits: one short epoch leaves every W2A2 candidate near chance, a coin toss
        chosen = choose_pact_hparams(data, float_dir / "checkpoint.pt", out / "selection", bits=(4,), budget="book",
                                     progress=progress)
        atomic_write_text(json.dumps(chosen, indent=2, default=str), float_dir / "selection.json")
        done["selection"] = chosen["chosen"]
    hparams = selection()["chosen"]
    for step in (s for s in data.recipe.qat if s.model in steps):
        run = out / study.slug(step.model)
        fine_tune(data, init, step, run, hparams, "book", progress)
        done[step.model] = study.ship_checkpoint(
            run, HERE / PRETRAINED_QAT[step.model], call.format(step.model) + f"\n# = {step.model}: {step.epochs} "
            f"epochs on {step.train_subset or 'all'} training images (held-out ones left out), from {init}, "
            f"hyper-parameters chosen on the held-out split: {hparams}", score(packed=True))
    return done


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
