"""Training and evaluation: one readable loop, seeded, resumable, with progress bars.

`fit` trains a model on two datasets and, given `out`, writes `checkpoint.pt` after every
epoch (temp file + rename, so a crash never leaves half a file) and `metrics.json` at the end.
Run it again with the same `out` and it resumes where it stopped. Because the shuffle order
and the dropout RNG depend only on (seed, epoch), a resumed run ends with the same weights
as an uninterrupted one.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import make_loader
from .files import atomic_save, atomic_write_text


def get_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA, else Apple MPS, else CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict(model: Callable, loader, device: str | torch.device = "auto", progress: bool = False):
    """(logits, labels) over a loader. `model` is a torch module or any callable on CPU tensors
    (e.g. an ONNX model), so one evaluation serves both."""
    is_module = isinstance(model, nn.Module)
    device = get_device(device) if is_module else torch.device("cpu")
    if is_module:
        model.eval().to(device)
    logits, labels = [], []
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
        logits.append(torch.as_tensor(model(x.to(device))).float().cpu())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy and loss; ROC AUC (one-vs-rest macro for >2 classes); for two classes also
    sensitivity and specificity (class 1 = positive), which matter more than accuracy when
    classes are imbalanced."""
    from sklearn.metrics import roc_auc_score

    if labels.ndim > 1:  # multi-label (ChestMNIST): 14 independent yes/no questions
        probs = logits.sigmoid()
        out = {"loss": F.binary_cross_entropy_with_logits(logits, labels.float()).item(),
               "accuracy": ((probs > 0.5) == labels.bool()).float().mean().item()}
        try:
            out["auc"] = float(roc_auc_score(labels.numpy(), probs.numpy(), average="macro"))
        except ValueError:
            pass
        return {**out, "n": len(labels)}
    pred = logits.argmax(1)
    out = {"loss": F.cross_entropy(logits, labels).item(),
           "accuracy": (pred == labels).float().mean().item(), "n": len(labels)}
    probs = logits.softmax(1).numpy()
    present = labels.unique()
    if len(present) > 1:  # AUC needs both classes in the labels
        if logits.shape[1] == 2:
            out["auc"] = float(roc_auc_score(labels.numpy(), probs[:, 1]))
        elif len(present) == logits.shape[1]:
            out["auc"] = float(roc_auc_score(labels.numpy(), probs, multi_class="ovr", average="macro"))
    if logits.shape[1] == 2:
        tp = ((pred == 1) & (labels == 1)).sum().item()
        tn = ((pred == 0) & (labels == 0)).sum().item()
        out["sensitivity"] = tp / max(1, (labels == 1).sum().item())
        out["specificity"] = tn / max(1, (labels == 0).sum().item())
    return out


def evaluate(model: Callable, loader, device: str | torch.device = "auto", progress: bool = False) -> dict:
    """Metrics of `model` over `loader` (see `metrics_from_logits`)."""
    return metrics_from_logits(*predict(model, loader, device, progress))


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """counts[true, predicted]."""
    k = num_classes or logits.shape[1]
    return torch.bincount(labels * k + logits.argmax(1), minlength=k * k).view(k, k)


# ----------------------------------------------------------------------------- checkpoints

def build_from_spec(spec: dict) -> nn.Module:
    """A model from the `model_spec` a checkpoint stores (architecture + optional quantization)."""
    from .models import build_model

    model = build_model(spec["model"], spec["num_classes"], spec["in_channels"], spec["image_size"],
                        width=spec.get("width", 1.0))
    if spec.get("quant"):
        from .quant import QATConfig, quantize_model
        quantize_model(model, QATConfig(**spec["quant"]))
    return model


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """(model, checkpoint dict) from a file written by `fit`; the model is rebuilt from its spec."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `qsal train ... --out DIR`")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise ValueError(f"{path} is not a readable qsal checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model_spec" not in ckpt:
        raise ValueError(f"{path} is not a qsal checkpoint (no model_spec); was it written by qsal_lab.train.fit?")
    model = build_from_spec(ckpt["model_spec"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


# ----------------------------------------------------------------------------- training

def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: cross-entropy (binary cross-entropy for multi-label targets)."""
    logits = model(x)
    if y.ndim > 1:
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.cross_entropy(logits, y)


IMBALANCE = ("none", "weighted_loss", "sampler")


def class_weighted_loss(labels: torch.Tensor, num_classes: int | None = None) -> Callable:
    """Cross-entropy with class c weighted N / (K * n_c), so every class weighs as much in all as it would if
    the classes were balanced (multi-label: binary cross-entropy with pos_weight n_negative / n_positive)."""
    labels = torch.as_tensor(labels)
    if labels.ndim > 1:
        positives = labels.float().sum(0).clamp(min=1)
        pos_weight = (len(labels) - positives) / positives

        def loss(model, x, y):
            return F.binary_cross_entropy_with_logits(model(x), y.float(), pos_weight=pos_weight.to(x.device))
        return loss
    counts = torch.bincount(labels, minlength=num_classes or 0).float()
    weight = len(labels) / (len(counts) * counts.clamp(min=1))

    def loss(model, x, y):
        return F.cross_entropy(model(x), y, weight=weight.to(x.device))
    return loss


def train_step(model: nn.Module, x, y, optimizer, loss_fn=cross_entropy_loss) -> float:
    """One optimisation step: forward, loss, backward, update. Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y)
    loss.backward()
    optimizer.step()
    return loss.item()


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, alpha_lr_scale: float = 1.0):
    """AdamW or SGD. PACT's clipping levels (parameters called `alpha`) form a group of their own: no weight
    decay (PACT has its own L2 penalty on alpha) and a learning rate of lr * alpha_lr_scale. AdamW moves every
    parameter by about one learning rate per step, so alpha, a clipping level of order 1-10, needs a larger one
    to travel as far as the paper's SGD lets it."""
    alphas, others = [], []
    for n, p in model.named_parameters():
        (alphas if n.rsplit(".", 1)[-1] == "alpha" else others).append(p)
    groups = [{"params": others}]
    if alphas:
        groups.append({"params": alphas, "lr": lr * alpha_lr_scale, "weight_decay": 0.0})
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose 'adamw' or 'sgd'")


SCHEDULES = ("onecycle", "cosine")


@dataclass
class History:
    """Per-epoch records: train loss, test metrics, seconds, and whatever `log_fn` adds."""
    epochs: list = field(default_factory=list)

    def __getitem__(self, key):
        return [e.get(key) for e in self.epochs]

    @property
    def final(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


def fit(model: nn.Module, train_ds, test_ds=None, *, epochs: int, lr: float, batch_size: int = 128,
        optimizer: str = "adamw", weight_decay: float = 1e-4, alpha_lr_scale: float = 1.0, seed: int = 0,
        device: str = "auto", loss_fn: Callable = cross_entropy_loss, step_fn: Callable | None = None,
        log_fn: Callable | None = None, out: str | Path | None = None, model_spec: dict | None = None,
        config: dict | None = None, resume: bool = True, progress: bool = True, sample_weights=None,
        schedule: str = "onecycle") -> History:
    """Train with a one-cycle learning-rate schedule (or `schedule="cosine"`: cosine decay from `lr` to 0 with no
    warm-up, the usual CIFAR ResNet recipe) and evaluate on `test_ds` after every epoch.

    loss_fn(model, x, y) -> scalar loss: swap it to add a regulariser (PACT's alpha L2).
    step_fn(model, x, y, optimizer) -> loss replaces the whole step when an objective needs more
    than one backward pass, e.g. saliency-guided training: `step_fn=SGTConfig(...).train_step()`
    (then loss_fn is not used; pass PACT's penalty as its `extra_loss`). log_fn(model) -> dict:
    extra per-epoch records (e.g. PACT's clipping levels). With `out`, checkpoints go to
    out/checkpoint.pt and the final metrics to out/metrics.json; `model_spec` lets
    `load_checkpoint` rebuild the model. alpha_lr_scale: PACT's clipping levels learn at
    lr * alpha_lr_scale (see `make_optimizer`). sample_weights: draw each epoch's examples with replacement
    with these weights instead of shuffling (`data.balanced_sample_weights`: class-balanced sampling).
    """
    if step_fn is None:
        def step_fn(m, x, y, o):
            return train_step(m, x, y, o, loss_fn)
    dev = get_device(device)
    model.to(dev)
    opt = make_optimizer(model, optimizer, lr, weight_decay, alpha_lr_scale)
    steps_per_epoch = -(-len(train_ds) // batch_size)
    total_steps = epochs * steps_per_epoch
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if total_steps >= 10 and schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    elif total_steps >= 10:
        peaks = [g["lr"] for g in opt.param_groups]  # one per group: PACT's alphas may have their own
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=total_steps, pct_start=0.25)
    else:  # too few steps for a warm-up and a decay: keep the learning rate constant
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    history, start = History(), 0
    ckpt_path = Path(out) / "checkpoint.pt" if out else None
    if ckpt_path and resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if ckpt.get("epochs_planned") == epochs and not ckpt.get("finished"):
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            history, start = History(ckpt["history"]), ckpt["epoch"]
            print(f"resuming from {ckpt_path} after epoch {start}/{epochs}")
        elif ckpt.get("finished"):
            print(f"{ckpt_path} is a finished run; starting a new one (it will be overwritten)")

    test_loader = make_loader(test_ds, batch_size=512) if test_ds is not None else None
    bar = tqdm(range(start, epochs), desc="epochs", disable=not progress, initial=start, total=epochs)
    for epoch in bar:
        torch.manual_seed(seed * 1000 + epoch)  # dropout/augmentation RNG: a function of the epoch
        model.train()
        t0, total, count = time.perf_counter(), 0.0, 0
        loader = make_loader(train_ds, batch_size=batch_size, train=True, seed=seed, epoch=epoch,
                             sample_weights=sample_weights)
        for x, y in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress):
            x, y = x.to(dev), y.to(dev)
            total += step_fn(model, x, y, opt) * len(x)
            count += len(x)
            sched.step()
        record = {"epoch": epoch + 1, "train_loss": total / count, "seconds": time.perf_counter() - t0,
                  "lr": sched.get_last_lr()[0]}
        if test_loader is not None:
            record.update({f"test_{k}": v for k, v in evaluate(model, test_loader, dev).items()})
            model.train()
        if log_fn is not None:
            record.update(log_fn(model))
        history.epochs.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                        **({"acc": f"{record['test_accuracy']:.4f}"} if "test_accuracy" in record else {}))
        if ckpt_path:
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "epoch": epoch + 1, "epochs_planned": epochs,
                         "history": history.epochs, "model_spec": model_spec, "config": config,
                         "finished": epoch + 1 == epochs}, ckpt_path)
    if out:
        write_metrics(out, history, config)
    return history


def write_metrics(out: str | Path, history: History, config: dict | None = None, **extra):
    """out/metrics.json: the final epoch's numbers, the whole history, and the config that made them."""
    final = history.final
    payload = {"final": final, "history": history.epochs, "config": config, **extra}
    atomic_write_text(json.dumps(payload, indent=2, default=str), Path(out) / "metrics.json")


# ----------------------------------------------------------------------------- one call for CLI and chapters

def _with_holdout(log_fn: Callable | None, loader, device) -> Callable:
    """log_fn plus the held-out split's metrics (holdout_accuracy, holdout_loss, ...), leaving the model in train mode."""
    def log(model):
        record = {f"holdout_{k}": v for k, v in evaluate(model, loader, device).items()}
        model.train()
        return {**record, **(log_fn(model) if log_fn is not None else {})}
    return log


def train_model(dataset: str, model: str = "smallcnn", *, budget: str | None = None, out: str | Path | None = None,
                quant=None, sgt=None, init_from: str | Path | None = None, epochs: int | None = None,
                lr: float | None = None, batch_size: int | None = None, train_subset: int | None = None,
                test_subset: int | None = None, seed: int = 0, device: str = "auto", root: str | None = None,
                progress: bool = True, resume: bool = True, width: float = 1.0, imbalance: str | None = None,
                augment: bool | str | None = None, holdout: int | None = None, optimizer: str | None = None,
                weight_decay: float | None = None):
    """Train `model` on `dataset` with the budget's recipe; returns (model, history).

    quant: a `QATConfig` for PACT quantization-aware training (None = full precision).
    sgt: an `SGTConfig` for saliency-guided training (qsal_lab.saliency), of a float or, with
    `quant`, a PACT model (the paper's scheme; PACT's alpha L2 is still added).
    init_from: a checkpoint to start from (e.g. QAT fine-tuning of a trained float model).
    width: ResNet-18's channel multiplier (`build_model`). imbalance: 'weighted_loss' (class-weighted
    cross-entropy, see `class_weighted_loss`), 'sampler' (class-balanced sampling with replacement) or
    None / 'none'; SGT's own cross-entropy is unweighted, so with `sgt` use the sampler.
    holdout: leave this many training images out (`load_dataset(..., holdout=N)`; evaluate choices on split
    'holdout', never on test); their metrics are recorded after every epoch (holdout_accuracy, ...). The
    checkpoint's spec and metrics name the data set actually loaded: with QSAL_STANDIN=1, 'cifar10' trains on the
    stand-in and every artefact says so (its key and version).
    Every other argument (augment, optimizer and weight_decay too) overrides one field of the recipe (see `qsal_lab.budget.recipe`).
    """
    from .budget import current_budget, recipe
    from .data import dataset_info, load_dataset
    from .models import build_model

    budget = current_budget(budget)
    r = recipe(model, budget, epochs=epochs, lr=lr, batch_size=batch_size,
               train_subset=train_subset, test_subset=test_subset, augment=augment, optimizer=optimizer,
               weight_decay=weight_decay)
    info = dataset_info(dataset)  # checked before anything loads; replaced below by what was loaded
    imbalance = imbalance or "none"
    if imbalance not in IMBALANCE:
        raise ValueError(f"unknown imbalance handling {imbalance!r}; choose one of: {', '.join(IMBALANCE)}")
    if imbalance == "weighted_loss" and sgt is not None:
        raise ValueError("imbalance='weighted_loss' does not reach saliency-guided training's own cross-entropy; "
                         "use imbalance='sampler' with sgt")
    if sgt is not None:
        from .saliency import SGTConfig

        if not isinstance(sgt, SGTConfig):
            raise TypeError(f"sgt must be an SGTConfig (qsal_lab.saliency), got {type(sgt).__name__}")
        sgt.validate()
        if info.task == "multi-label":
            raise ValueError(f"saliency-guided training needs one class per image; {info.display_name} is multi-label")
    seed_everything(seed)
    train_ds = load_dataset(dataset, "train", root=root, subset=r.train_subset, seed=seed, augment=r.augment,
                            holdout=holdout)
    test_ds = load_dataset(dataset, "test", root=root, subset=r.test_subset, seed=seed)
    info = train_ds.info  # the data actually loaded (the stand-in's name and version when it stood in)
    spec = {"model": model, "num_classes": info.num_classes, "in_channels": info.in_channels,
            "image_size": info.image_size, "dataset": info.name, "dataset_name": info.display_name}
    if info.standin:
        spec["standin"], spec["dataset_version"] = True, info.version
    if width != 1:
        spec["width"] = width
    net = build_model(model, info.num_classes, info.in_channels, info.image_size, width=width)
    if init_from is not None:
        start, ckpt = load_checkpoint(init_from)
        if ckpt["model_spec"]["model"] != model or ckpt["model_spec"]["num_classes"] != info.num_classes:
            raise ValueError(f"--init-from {init_from} holds a {ckpt['model_spec']['model']} for "
                             f"{ckpt['model_spec'].get('dataset')}, not a {model} for {info.name}")
        if ckpt["model_spec"].get("width", 1.0) != width:
            raise ValueError(f"--init-from {init_from} holds a {model} of width {ckpt['model_spec'].get('width', 1.0)}, "
                             f"not {width}; pass width={ckpt['model_spec'].get('width', 1.0)}")
        net.load_state_dict(start.state_dict(), strict=False)
    base_loss, sample_weights = cross_entropy_loss, None
    if imbalance == "weighted_loss":
        base_loss = class_weighted_loss(train_ds.labels, info.num_classes)
    elif imbalance == "sampler":
        from .data import balanced_sample_weights
        sample_weights = balanced_sample_weights(train_ds.labels)
    loss_fn, log_fn, penalty = base_loss, None, None
    if quant is not None:
        from .quant import pact_alpha_l2, pact_alphas, quantize_model
        quantize_model(net, quant)
        spec["quant"] = asdict(quant)

        def penalty(m, _l2=quant.alpha_l2):  # PACT's lambda * sum(alpha^2)
            return _l2 * pact_alpha_l2(m)

        def loss_fn(m, x, y):
            return base_loss(m, x, y) + penalty(m)

        log_fn = lambda m: {"alphas": pact_alphas(m)}  # noqa: E731  alpha learning curves
    if holdout:  # the held-out curve says whether training has converged, without looking at test
        holdout_loader = make_loader(load_dataset(dataset, "holdout", root=root, holdout=holdout), batch_size=512)
        log_fn = _with_holdout(log_fn, holdout_loader, device)
    step_fn = sgt.train_step(extra_loss=penalty) if sgt is not None else None
    config = {"dataset": info.name, "dataset_name": info.display_name, "model": model, "budget": budget,
              "recipe": r.to_dict(), "seed": seed, "quant": spec.get("quant"),
              "sgt": sgt.to_dict() if sgt is not None else None, "imbalance": imbalance,
              "init_from": str(init_from) if init_from else None, "train_size": len(train_ds),
              "test_size": len(test_ds), "dataset_requested": dataset, "standin": info.standin,
              "dataset_version": info.version, "holdout": holdout}
    history = fit(net, train_ds, test_ds, epochs=r.epochs, lr=r.lr, batch_size=r.batch_size,
                  optimizer=r.optimizer, weight_decay=r.weight_decay, seed=seed, device=device,
                  alpha_lr_scale=quant.alpha_lr_scale if quant is not None else 1.0,
                  loss_fn=loss_fn, step_fn=step_fn, log_fn=log_fn, out=out, model_spec=spec, config=config,
                  resume=resume, progress=progress, sample_weights=sample_weights, schedule=r.schedule)
    return net, history
