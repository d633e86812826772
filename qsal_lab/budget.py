"""Compute budgets: one switch, `QSAL_BUDGET=ci|book|full`, sizes every chapter and CLI run.

- `ci`:   each chapter executes in about a minute, for the tests (numbers are not meaningful).
- `book`: what the rendered book shows; the whole book builds in <= 20 minutes on 2 CPU cores.
- `full`: the paper-scale recipe (a GPU, or patience).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

BUDGETS = ("ci", "book", "full")


def current_budget(budget: str | None = None) -> str:
    """The budget in force: the argument, else `$QSAL_BUDGET`, else 'book'."""
    name = (budget or os.environ.get("QSAL_BUDGET") or "book").lower()
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; choose one of: {', '.join(BUDGETS)} (set QSAL_BUDGET or --budget)")
    return name


def pick(ci, book, full, budget: str | None = None):
    """The value for the budget in force, e.g. `epochs = pick(ci=1, book=3, full=12)`."""
    return {"ci": ci, "book": book, "full": full}[current_budget(budget)]


@dataclass(frozen=True)
class Recipe:
    """How to train one model on one dataset: everything a chapter or `qsal train` needs."""
    epochs: int
    lr: float
    batch_size: int = 128
    optimizer: str = "adamw"        # "adamw" or "sgd" (momentum 0.9, nesterov)
    weight_decay: float = 1e-4
    train_subset: int | None = None  # None = the whole split
    test_subset: int | None = None
    augment: bool = False
    schedule: str = "onecycle"      # "onecycle" (warm-up, then cosine decay) or "cosine" (decay only)

    def to_dict(self):
        return asdict(self)


# Why each recipe is what it is (timings, the stand-in's history): ARCHITECTURE.md, "Recipes".
_RECIPES = {
    ("smallcnn", "ci"): Recipe(epochs=1, lr=3e-3, train_subset=4000, test_subset=2000),
    ("smallcnn", "book"): Recipe(epochs=3, lr=3e-3),
    ("smallcnn", "full"): Recipe(epochs=12, lr=3e-3),
    ("resnet20", "ci"): Recipe(epochs=1, lr=0.1, optimizer="sgd", weight_decay=5e-4, train_subset=2000,
                               test_subset=1000, augment=True),
    # book: trained until it stops improving (the shipped stand-in model's metrics.json shows the curve)
    ("resnet20", "book"): Recipe(epochs=10, lr=0.1, optimizer="sgd", weight_decay=5e-4, train_subset=20000,
                                 augment=True),
    # full: the paper recipe (He et al. 2016; PACT's float baseline), for a GPU
    ("resnet20", "full"): Recipe(epochs=200, lr=0.1, optimizer="sgd", weight_decay=5e-4, augment=True,
                                 schedule="cosine"),
    # MedMNIST v2's recipe: ResNet-18, Adam 1e-3, 100 epochs.
    ("resnet18", "ci"): Recipe(epochs=1, lr=1e-3, train_subset=1000, test_subset=500),
    ("resnet18", "book"): Recipe(epochs=4, lr=1e-3),
    ("resnet18", "full"): Recipe(epochs=100, lr=1e-3),
}


def recipe(model: str, budget: str | None = None, **overrides) -> Recipe:
    """The training recipe for `model` at a budget; keyword overrides replace single fields."""
    key = (model.lower().replace("-", ""), current_budget(budget))
    if key not in _RECIPES:
        raise ValueError(f"no recipe for model {model!r}; known: {sorted({m for m, _ in _RECIPES})}")
    r = replace(_RECIPES[key], **{k: v for k, v in overrides.items() if v is not None})
    if r.schedule not in ("onecycle", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {r.schedule!r}; choose 'onecycle' or 'cosine'")
    if r.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"unknown optimizer {r.optimizer!r}; choose 'adamw' or 'sgd'")
    for name in ("epochs", "batch_size"):
        if not (isinstance(getattr(r, name), int) and getattr(r, name) >= 1):
            raise ValueError(f"{name} must be a positive integer, got {getattr(r, name)!r}")
    if not r.lr > 0:
        raise ValueError(f"lr (the learning rate) must be > 0, got {r.lr!r}")
    return r
