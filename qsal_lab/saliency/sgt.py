"""Saliency-guided training (SGT; Ismail et al., NeurIPS 2021), for float and PACT models alike.

Per batch (x, y):

    s        = d log p_y(x) / d x                         the saliency, per image
    x_masked = x with its `fraction` least salient pixels replaced by noise (masking.mask_features)
    loss     = CE(f(x), y) + lam * KL(softmax f(x) || softmax f(x_masked))        (batch means)

so the model learns to give the same answer without the features it calls unimportant, which pushes
its gradients to concentrate on the ones that matter. Defaults from the paper: lam = 1; fraction 0.5 on
MNIST, 0.1 on CIFAR-10.

Ranking. The paper masks "features with low gradient values"; we read that as low |gradient| (abs=True,
the default). The authors' code ranks the signed gradient by default; abs=False does that.

Two steps give the same masks:
  naive: a pass for the input gradient, then the clean pass for CE, the masked pass, and one backward
         of CE + lam * KL.
  fused: one backward of CE gives the weight gradients *and* the input gradient at once, because
         dCE/dx = -(1/N) d log p_y / dx, a rescaling that leaves the ranking unchanged. Then the masked
         pass and a backward of lam * KL.
`train_step_seconds` times both against a standard step (chapter 6 shows the ratios on the reader's machine).

Train or eval mode, pass by pass (the model is in train mode during training):
  - clean and masked passes: train mode, as in the authors' code. BatchNorm normalises each pass with its
    own batch statistics, and its running statistics see the masked batch too. Dropout draws new masks.
  - saliency: saliency_mode="train" (default) takes it from the clean training pass itself: the only
    choice for the fused step, and the one naive step that matches it mask for mask. saliency_mode="eval"
    (naive step only) is the authors' choice: a separate pass in eval mode (running statistics, no
    dropout), 3 forward passes in all.

detach_target: whether the KL's clean distribution softmax f(x) is a constant (True) or is trained too
(False, as in the authors' code, where the KL also pulls f(x) towards f(x_masked)). Detaching lets the
fused step free the clean graph after its first backward; not detaching keeps it for the KL's backward,
which costs as much as the naive step.

Defaults (step="fused", detach_target=True): as accurate and as faithful as the naive step with a trained
target, within the seeds' spread, for about 3/4 of its time (the measurements: ARCHITECTURE.md, "Recipes").
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .masking import check_fraction, mask_features

STEPS = ("fused", "naive")
SALIENCY_MODES = ("train", "eval")
PAPER_FRACTIONS = {"mnist": 0.5, "cifar10": 0.1}  # the SGT paper's masked share per dataset


def default_fraction(dataset: str) -> float:
    """The SGT paper's mask fraction for `dataset` (0.5 MNIST, 0.1 CIFAR-10); 0.5 for the others, for
    which the paper gives none (choose it yourself: the share of an image that does not matter)."""
    key = dataset.lower().replace("-", "").replace("_", "")
    return PAPER_FRACTIONS.get("cifar10" if key.startswith("cifar10") else key, 0.5)


@dataclass
class SGTConfig:
    """Saliency-guided training settings. fraction: share of pixels masked per image, in (0, 1)
    (paper: 0.5 on MNIST, 0.1 on CIFAR-10). lam: weight of the KL term, >= 0 (paper: 1). abs: rank by
    |gradient| (False: signed, as the authors' code). step: "fused" or "naive" (see the module docstring).
    saliency_mode: "train" or "eval" (naive only). detach_target: the KL's clean side as a constant."""

    fraction: float = 0.5
    lam: float = 1.0
    abs: bool = True
    step: str = "fused"
    saliency_mode: str = "train"
    detach_target: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self):
        self.fraction = check_fraction(self.fraction, "SGTConfig.fraction")
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam >= 0:
            raise ValueError(f"SGTConfig.lam (the KL weight) must be a number >= 0, got {self.lam!r}")
        if self.step not in STEPS:
            raise ValueError(f"unknown SGT step {self.step!r}; choose one of: {', '.join(STEPS)}")
        if self.saliency_mode not in SALIENCY_MODES:
            raise ValueError(f"unknown saliency_mode {self.saliency_mode!r}; choose one of: {', '.join(SALIENCY_MODES)}")
        if self.step == "fused" and self.saliency_mode == "eval":
            raise ValueError("the fused step takes the saliency from the training pass (train mode); "
                             "use step='naive' for saliency_mode='eval'")

    def to_dict(self) -> dict:
        return asdict(self)

    def train_step(self, extra_loss: Callable | None = None) -> Callable:
        """A `step_fn(model, x, y, optimizer) -> loss` for the training loop; `extra_loss(model)` is added
        to the loss (e.g. PACT's alpha_l2 * pact_alpha_l2(model))."""
        def step(model, x, y, optimizer):
            return sgt_step(model, x, y, optimizer, self, extra_loss).loss
        return step


class SGTStep(NamedTuple):
    """What one SGT step did: total loss, its two terms, and the mask it chose (True = replaced)."""
    loss: float
    ce: float
    kl: float
    mask: torch.Tensor


# ----------------------------------------------------------------------------- the pieces

def input_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d log p_y / d x for each image (summed over the batch), in the model's current mode."""
    x = x.detach().requires_grad_(True)
    log_p = F.log_softmax(model(x), dim=1).gather(1, y.view(-1, 1)).sum()
    grad, = torch.autograd.grad(log_p, x)
    return grad


def kl_to_masked(logits: torch.Tensor, masked_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax logits || softmax masked_logits), averaged over the batch."""
    return F.kl_div(F.log_softmax(masked_logits, 1), F.log_softmax(logits, 1), log_target=True,
                    reduction="batchmean")


def sgt_loss(logits, masked_logits, y, lam: float = 1.0, detach_target: bool = False) -> torch.Tensor:
    """CE(logits, y) + lam * KL(softmax logits || softmax masked_logits), batch means."""
    target = logits.detach() if detach_target else logits
    return F.cross_entropy(logits, y) + lam * kl_to_masked(target, masked_logits)


# ----------------------------------------------------------------------------- the two steps

def sgt_step(model, x, y, optimizer, config: SGTConfig, extra_loss: Callable | None = None,
             generator: torch.Generator | None = None) -> SGTStep:
    """One SGT optimisation step (config.step picks the fused or the naive one)."""
    check_labels(y)
    step = fused_step if config.step == "fused" else naive_step
    return step(model, x, y, optimizer, config, extra_loss, generator)


def naive_step(model, x, y, optimizer, config: SGTConfig, extra_loss=None, generator=None) -> SGTStep:
    """Input gradient first, then the clean and masked passes and one backward of the whole loss."""
    optimizer.zero_grad(set_to_none=True)
    if config.saliency_mode == "eval":  # the authors' order: a separate eval-mode pass for the saliency
        was_training = model.training
        model.eval()
        saliency = input_saliency(model, x, y)
        model.train(was_training)
        logits = model(x)
        ce = F.cross_entropy(logits, y)
    else:  # from the clean training pass itself, exactly as the fused step sees it
        x_grad = x.detach().requires_grad_(True)
        logits = model(x_grad)
        ce = F.cross_entropy(logits, y)
        saliency = -torch.autograd.grad(ce, x_grad, retain_graph=True)[0]
    masked, mask = mask_features(x, saliency, config.fraction, least=True, abs=config.abs, generator=generator)
    kl = kl_to_masked(logits.detach() if config.detach_target else logits, model(masked))
    loss = ce + config.lam * kl + (extra_loss(model) if extra_loss is not None else 0.0)
    loss.backward(inputs=trainable(model))  # weights only: the input gradient is already known
    optimizer.step()
    return SGTStep(loss.item(), ce.item(), kl.item(), mask)


def fused_step(model, x, y, optimizer, config: SGTConfig, extra_loss=None, generator=None) -> SGTStep:
    """CE's backward yields the weight gradients and the saliency together; then the masked pass."""
    optimizer.zero_grad(set_to_none=True)
    x_grad = x.detach().requires_grad_(True)
    logits = model(x_grad)
    ce = F.cross_entropy(logits, y)
    first = ce + (extra_loss(model) if extra_loss is not None else 0.0)
    first.backward(retain_graph=not config.detach_target)  # keep the clean graph if the KL trains it too
    saliency = -x_grad.grad  # dCE/dx = -(1/N) d log p_y / dx
    masked, mask = mask_features(x, saliency, config.fraction, least=True, abs=config.abs, generator=generator)
    kl = kl_to_masked(logits.detach() if config.detach_target else logits, model(masked))
    (config.lam * kl).backward(inputs=trainable(model))
    optimizer.step()
    return SGTStep(first.item() + config.lam * kl.item(), ce.item(), kl.item(), mask)


def trainable(model: nn.Module) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def check_labels(y):
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.is_floating_point():
        raise ValueError("saliency-guided training needs one integer class label per image (multi-class "
                         f"targets); got {_describe(y)}")


# ----------------------------------------------------------------------------- cost

def standard_step(model, x, y, optimizer, extra_loss=None) -> float:
    """A plain cross-entropy step, the unit SGT's cost is measured in."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y) + (extra_loss(model) if extra_loss is not None else 0.0)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_step_seconds(model: nn.Module, config: SGTConfig, batches, rounds: int = 3, lr: float = 1e-4,
                       extra_loss: Callable | None = None, clock: Callable = time.perf_counter) -> dict:
    """Median seconds per step of a standard, a naive SGT and a fused SGT step on the same batches.

    Each variant trains its own copy of `model` with AdamW over `batches` (a list of (x, y)), `rounds`
    times, interleaved and in rotating order so that a background load slows all three alike; one
    warm-up step each is not timed. clock: wall time by default; time.process_time counts this process's
    CPU time only, steadier on a busy machine when torch runs one thread. Returns {"standard_s",
    "naive_s", "fused_s", "naive_ratio", "fused_ratio", "rounds": {...}}, ratios relative to the standard step.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("train_step_seconds needs at least one (x, y) batch")
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    naive_cfg = SGTConfig(**{**config.to_dict(), "step": "naive"})
    fused_cfg = SGTConfig(**{**config.to_dict(), "step": "fused", "saliency_mode": "train"})
    steps = {"standard": lambda m, x, y, o: standard_step(m, x, y, o, extra_loss),
             "naive": lambda m, x, y, o: sgt_step(m, x, y, o, naive_cfg, extra_loss),
             "fused": lambda m, x, y, o: sgt_step(m, x, y, o, fused_cfg, extra_loss)}
    models = {k: copy.deepcopy(model).train() for k in steps}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=lr) for k, m in models.items()}
    times = {k: [] for k in steps}
    for k in steps:  # warm-up: allocator, autograd graph, thread pool
        steps[k](models[k], *batches[0], optimizers[k])
    names = list(steps)
    for i in range(rounds):
        for k in names[i % 3:] + names[:i % 3]:
            t0 = clock()
            for x, y in batches:
                steps[k](models[k], x, y, optimizers[k])
            times[k].append((clock() - t0) / len(batches))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"standard_s": med["standard"], "naive_s": med["naive"], "fused_s": med["fused"],
            "naive_ratio": med["naive"] / med["standard"], "fused_ratio": med["fused"] / med["standard"],
            "rounds": times}


def compare_steps(model: nn.Module, x, y, config: SGTConfig, seed: int = 0) -> dict:
    """Run one naive (train-mode saliency) and one fused step from the same weights and RNG state on the same
    batch: {"same_mask", "ce_naive", "ce_fused", "mask_naive", "mask_fused"}. The proof that the fused step
    is the naive one, cheaper."""
    out = {}
    for name in STEPS:
        cfg = SGTConfig(**{**config.to_dict(), "step": name, "saliency_mode": "train"})
        m = copy.deepcopy(model).train()
        torch.manual_seed(seed)  # the same dropout masks and replacement noise for both
        result = sgt_step(m, x, y, torch.optim.SGD(m.parameters(), lr=0.0), cfg)
        out[f"ce_{name}"], out[f"mask_{name}"] = result.ce, result.mask
    out["same_mask"] = bool(torch.equal(out["mask_naive"], out["mask_fused"]))
    return out


def _describe(t) -> str:
    return f"a {t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
