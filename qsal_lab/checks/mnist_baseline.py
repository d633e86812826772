"""Checks for chapter 1's exercise (MNIST baseline): the learner's accuracy, training step and a
whole training run."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .common import CheckFailed, allclose, as_float, call, close, passed, quietly


# errors that the usual accuracy() mistakes raise, and what to do about them
_ACCURACY_ERROR_HINTS = [
    ("could not infer output dtype", "A comparison gives a bool tensor, which has no mean: convert it with "
                                     ".float() before .mean(), e.g. (pred == labels).float().mean()."),
    ("must match the size of tensor", "Take the argmax over the classes, logits.argmax(dim=1): one prediction "
                                      "per row (dim=0 gives one per class)."),
]


def _accuracy_value(accuracy_fn, logits, labels):
    return as_float(call(accuracy_fn, "accuracy", logits, labels, hints=_ACCURACY_ERROR_HINTS), "accuracy")


def _accuracy_hint(got, want, logits, labels, otherwise):
    """Name the usual mistake when the learner's wrong accuracy is exactly what that mistake gives."""
    # a softmax over dim=0 normalises each class over the batch (the columns), which can change the
    # largest entry of a row; on the hand-made batches it happens not to, on the random one it does
    softmax_dim0 = (logits.softmax(dim=0).argmax(dim=1) == labels).float().mean().item()
    if len(labels) > 1 and close(got, want * len(labels)):
        return " It looks like a count: divide by the number of rows."
    if close(got, want * 100):
        return " It looks like a percentage: return a fraction between 0 and 1 (do not multiply by 100)."
    if close(got, softmax_dim0) and not close(softmax_dim0, want):
        return (" That is what a softmax over dim=0 gives: softmax(dim=0) normalises each class over the batch, "
                "not each row over the classes, and changes which class is largest in a row. Use softmax(dim=1), "
                "or no softmax at all: it does not change which logit of a row is largest.")
    return " " + otherwise


def check_accuracy(accuracy_fn):
    """accuracy_fn(logits [N, C], labels [N]) -> fraction of rows whose largest logit is the label."""
    logits = torch.tensor([[2.0, 1.0, 0.1], [0.1, 3.0, 0.2], [0.3, 0.2, 5.0], [4.0, 0.0, 1.0]])
    cases = [
        (torch.tensor([0, 1, 2, 0]), 1.0, "every row right"),
        (torch.tensor([0, 1, 0, 2]), 0.5, "2 of 4 rows right"),
        (torch.tensor([1, 0, 0, 1]), 0.0, "no row right"),
    ]
    for labels, want, what in cases:
        got = _accuracy_value(accuracy_fn, logits, labels)
        if not close(got, want):
            hint = _accuracy_hint(got, want, logits, labels,
                                  "Compare logits.argmax(dim=1) with labels and take the mean of the matches.")
            raise CheckFailed(f"accuracy() returned {got:g} for a batch with {what}; expected {want:g}.{hint}")
    # a large random batch: a common bug is reducing over the wrong dimension
    big = torch.randn(257, 10, generator=torch.Generator().manual_seed(0))
    labels = big.argmax(1).clone()
    labels[:57] = (labels[:57] + 1) % 10
    got = _accuracy_value(accuracy_fn, big, labels)
    if not close(got, 200 / 257):
        hint = _accuracy_hint(got, 200 / 257, big, labels, "Did you take argmax over dim=1 (the classes)?")
        raise CheckFailed(f"accuracy() returned {got:.4f} on 257 rows of which 200 are right; expected "
                          f"{200 / 257:.4f}.{hint}")
    passed("check_accuracy passed: your accuracy() agrees on 4 hand-made batches.")


def check_train_step(train_step_fn):
    """train_step_fn(model, x, y, optimizer) -> loss (float): zero grads, forward, cross-entropy,
    backward, optimizer step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    want_loss = F.cross_entropy(reference(x), y).item()

    got_loss = as_float(call(train_step_fn, "train_step", model, x, y, opt), "train_step")
    if all(torch.equal(b, p) for b, p in zip(before, model.parameters())):
        if all(p.grad is None or not p.grad.any() for p in model.parameters()):
            # zero_grad() between backward() and step(), or no backward() at all
            raise CheckFailed("train_step() did not change the model's parameters: the gradients were empty "
                              "when optimizer.step() ran. The order is optimizer.zero_grad() -> loss.backward() "
                              "-> optimizer.step(): zero_grad() clears the gradients, so it comes before "
                              "backward(), never between backward() and step().")
        raise CheckFailed("train_step() did not change the model's parameters: call loss.backward() and then "
                          "optimizer.step().")
    if not close(got_loss, want_loss):
        raise CheckFailed(f"train_step() returned loss {got_loss:.5f}; the cross-entropy of the model's output "
                          f"before the update is {want_loss:.5f}. Use F.cross_entropy(model(x), y) and return "
                          f"loss.item().")
    # a second step exposes gradients that were never cleared
    call(train_step_fn, "train_step", model, x, y, opt)
    for _ in range(2):
        ref_opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        ref_opt.step()
    if not all(allclose(p, r) for p, r in zip(model.parameters(), reference.parameters())):
        raise CheckFailed("after two calls, train_step() moved the parameters differently from a correct step. "
                          "Did you call optimizer.zero_grad() before loss.backward()? Without it, gradients "
                          "from the previous step are added to the new ones.")
    passed("check_train_step passed: your step matches a reference SGD step, loss and all.")


def check_training_run(train_step_fn, accuracy_fn, train_ds, test_ds, epochs: int = 1, min_accuracy: float = 0.8):
    """Train a fresh SmallCNN with the learner's own train_step and measure it with their own
    accuracy; passes when the model learns (test accuracy >= min_accuracy). Returns None: the pass
    message states the accuracy, and a returned number would be shown again below it in a notebook."""
    from tqdm.auto import tqdm

    from ..data import make_loader
    from ..models import build_model

    # the hand-made checks first: an unfinished or wrong function is named before a whole epoch runs
    with quietly():
        check_accuracy(accuracy_fn)
        check_train_step(train_step_fn)
    torch.manual_seed(0)
    model = build_model("smallcnn", in_channels=train_ds.info.in_channels, num_classes=train_ds.info.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        model.train()
        for x, y in tqdm(make_loader(train_ds, 128, train=True, epoch=epoch), desc=f"epoch {epoch + 1}"):
            loss = call(train_step_fn, "train_step", model, x, y, optimizer)
            if loss is None:
                raise CheckFailed("train_step() returned None: finish its TODO (and pass check_train_step) first.")
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in make_loader(test_ds, 512)])
    labels = test_ds.labels
    acc = _accuracy_value(accuracy_fn, logits, labels)
    true_acc = (logits.argmax(1) == labels).float().mean().item()
    if not close(acc, true_acc):
        raise CheckFailed(f"accuracy() says {acc:.4f} but the model's real test accuracy is {true_acc:.4f}.")
    if acc < min_accuracy:
        raise CheckFailed(f"after {epochs} epoch(s) with your train_step the test accuracy is {acc:.2%}, "
                          f"below {min_accuracy:.0%}: the model is not learning. Check the loss and the "
                          f"order zero_grad -> backward -> step.")
    passed(f"check_training_run passed: your loop trained SmallCNN to {acc:.2%} test accuracy.")
