"""Checks for chapter 4's exercise (PACT quantization-aware training): the learner's PACT forward,
its autograd Function (x- and alpha-gradients), and QAT with it."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .common import CheckFailed, allclose, as_tensor, call, close, mismatches, passed, quietly


def _cases():
    """(x, alpha, bits) on hand-made inputs: negatives, zero, values inside, exactly alpha, above alpha.
    Inside values stay clear of rounding ties, so any correct formula gives the same levels."""
    x = torch.tensor([-1.5, -0.2, 0.0, 0.3, 0.55, 0.9, 1.27, 1.61, 1.95, 2.0, 2.4, 7.0])
    return [(x, 2.0, 2), (x, 2.0, 3), (x * 0.75, 1.5, 4), (x * 3.0, 6.0, 8)]


def _first_mismatch(got, want, x, what):
    """'at x=.., expected .. but got ..' for the first element where got and want differ, or None."""
    bad = mismatches(got, want)
    if len(bad) == 0:
        return None
    i = int(bad[0])
    return (f"{what} at element {i} (x = {x[i].item():g}): expected {want[i].item():.6g}, got {got[i].item():.6g} "
            f"({len(bad)} of {len(x)} elements differ)")


def _tensor(value, x, name):
    return as_tensor(value, name, x, "the fake-quantized activations",
                     why_same_shape="PACT works elementwise, so the output has the shape of x.").detach().float()


def _forward_hint(got, x, alpha, bits):
    """Name the usual forward bug when the learner's output matches it exactly."""
    n = 2**bits - 1
    y = x.clamp(0.0, alpha)
    candidates = [
        (torch.round(x * n / alpha) * alpha / n, "Outputs fall outside [0, alpha]: you forgot to clip x to [0, alpha] "
                                                 "before rounding (x.clamp(0, alpha))."),
        (torch.round(x.clamp(min=0.0) * n / alpha) * alpha / n,
         "The output is not clipped at alpha: inputs above alpha must give alpha. Clip to [0, alpha] "
         "(x.clamp(0, alpha), not only relu / clamp(min=0)) before rounding."),
        (torch.round(x.clamp(max=alpha) * n / alpha) * alpha / n,
         "Negative inputs must give 0: clip at 0 too, x.clamp(0, alpha), before rounding."),
        (torch.round(y * 2**bits / alpha) * alpha / 2**bits, f"You used 2^k = {2**bits} steps; k bits give 2^k levels, "
                                                             f"i.e. 2^k - 1 = {n} steps between 0 and alpha."),
        (torch.round(y * (2**bits + 1) / alpha) * alpha / (2**bits + 1), f"You used 2^k + 1 steps; use 2^k - 1 = {n}."),
        (y, "The output is clipped but not quantized: round y * (2^k - 1) / alpha to an integer, then scale back."),
        (torch.round(y * n / alpha), "The output is the integer code: multiply it back by alpha / (2^k - 1)."),
        (torch.floor(y * n / alpha) * alpha / n, "You rounded down (floor); use torch.round, to the nearest level."),
    ]
    for wrong, hint in candidates:
        if allclose(got, wrong):
            return " " + hint
    return " PACT: y = clip(x, 0, alpha), then round(y * (2^k - 1) / alpha) * alpha / (2^k - 1)."


def check_pact_forward(pact_forward_fn):
    """pact_forward_fn(x, alpha: float, bits) -> clip(x, 0, alpha) quantized to 2^bits levels in [0, alpha]."""
    from ..quant import pact_quantize

    for x, alpha, bits in _cases():
        want = pact_quantize(x, alpha, bits)
        got = _tensor(call(pact_forward_fn, "pact_forward", x.clone(), alpha, bits), x, "pact_forward")
        problem = _first_mismatch(got, want, x, f"pact_forward(x, alpha={alpha:g}, bits={bits})")
        if problem:
            raise CheckFailed(problem + "." + _forward_hint(got, x, alpha, bits))
    passed(f"check_pact_forward passed: your pact_forward() matches qsal_lab.quant.pact_quantize on "
            f"{len(_cases())} hand-made tensors (2, 3, 4 and 8 bits).")


class _PactSavedContext:
    """Stands in for autograd's ctx, to call a Function's backward directly."""

    def __init__(self, *saved):
        self.saved_tensors = saved
        self.needs_input_grad = (True, True, False)


def _function_outputs(function, x, alpha, bits, grad):
    """(y, x.grad, alpha.grad) through autograd, backward's raw return value, and whether backward changed
    its `grad` argument in place. `grad` itself is never handed to the learner's code: an in-place edit
    (grad_x = grad; grad_x[...] = 0) would otherwise corrupt the numbers the hints are computed from."""
    x = x.clone().requires_grad_(True)
    a = torch.tensor(float(alpha), requires_grad=True)
    y = call(function.apply, "PACTFunction.apply", x, a, bits)
    if y is None:
        raise CheckFailed("PACTFunction.apply(x, alpha, bits) returned None: its forward returns pact_forward(...), "
                          "so finish pact_forward first (check_pact_forward must pass).")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise CheckFailed(f"PACTFunction.apply(x, alpha, bits) returned {type(y).__name__} "
                          f"{tuple(getattr(y, 'shape', ()))}; it must return a tensor the shape of x.")
    if not y.requires_grad:
        raise CheckFailed("PACTFunction.apply(...) returned a tensor without a gradient: forward must not detach "
                          "or leave the autograd graph (return a tensor computed from x).")
    handed = grad.clone()
    try:  # backward's raw return value, to see a per-element alpha gradient that autograd would sum silently
        raw = function.backward(_PactSavedContext(x.detach(), a.detach()), handed)
    except Exception:  # e.g. it reads something else from ctx; the autograd call below reports real errors
        raw = ()
    edited_in_place = not torch.equal(handed, grad)
    if raw is None:
        raise CheckFailed("PACTFunction.backward() returned None: fill in its TODO so that it returns "
                          "(grad_x, grad_alpha, None).")
    try:
        y.backward(grad.clone())
    except Exception as e:  # wrong number, type or shape of gradients
        hint = ""
        raw_parts = raw if isinstance(raw, (tuple, list)) else ()
        if "incorrect number of gradients" in str(e):
            hint = (" backward must return one gradient per input of forward(ctx, x, alpha, bits): "
                    "(grad_x, grad_alpha, None), None for bits.")
        elif len(raw_parts) > 1 and isinstance(raw_parts[1], (int, float)) or "got float" in str(e):
            hint = (" The gradient for alpha must be a tensor, like alpha itself: return (grad * (x >= alpha)).sum() "
                    "without .item() or float().")
        elif len(raw_parts) > 2 and raw_parts[2] is not None or "at position 3" in str(e):
            hint = (" bits is a Python int, not a tensor, so it has no gradient: return None in its place "
                    "(not 0): (grad_x, grad_alpha, None).")
        raise CheckFailed(f"backward failed: {type(e).__name__}: {e}.{hint}") from None
    return y.detach(), x.grad, a.grad, raw, edited_in_place


def check_pact_function(function):
    """function: a torch.autograd.Function with forward(ctx, x, alpha, bits) and backward(ctx, grad) ->
    (grad_x, grad_alpha, None), compared with qsal_lab.quant.pact_quantize's autograd on hand-made inputs."""
    from ..quant import pact_quantize

    if not (isinstance(function, type) and issubclass(function, torch.autograd.Function)):
        raise CheckFailed(f"check_pact_function needs the class itself (a torch.autograd.Function subclass), "
                          f"got {type(function).__name__}.")
    for x, alpha, bits in _cases():
        grad = torch.arange(1.0, len(x) + 1)  # distinct upstream gradients: a wrong mask shows up in the sum
        xr, ar = x.clone().requires_grad_(True), torch.tensor(alpha, requires_grad=True)
        want_y = pact_quantize(xr, ar, bits)
        want_y.backward(grad)
        want_gx, want_ga = xr.grad, ar.grad
        y, gx, ga, raw, edited_in_place = _function_outputs(function, x, alpha, bits, grad)
        where = f"(alpha={alpha:g}, bits={bits}, upstream gradient 1..{len(x)})"

        problem = _first_mismatch(y, want_y.detach(), x, f"forward {where}")
        if problem:
            raise CheckFailed(problem + "." + _forward_hint(y, x, alpha, bits))

        if gx is None:
            raise CheckFailed(f"backward returned None as the gradient for x {where}: return grad where "
                              f"0 <= x < alpha and 0 elsewhere.")
        problem = _first_mismatch(gx, want_gx, x, f"gradient for x {where}")
        if problem:
            hint = " The straight-through estimator passes grad where 0 <= x < alpha and 0 elsewhere."
            if allclose(gx, grad):
                hint = " You passed the gradient everywhere; zero it where x was clipped (x < 0 or x >= alpha)."
            elif allclose(gx, grad * (x < alpha)):
                hint = " Zero the gradient where x < 0 too: the clip to 0 is flat there."
            elif allclose(gx, grad * (x >= 0)):
                hint = " Zero the gradient where x >= alpha: those outputs are alpha, whatever x is (alpha gets that gradient)."
            elif allclose(gx, grad * ((x > 0) & (x < alpha))):
                hint = " Keep the gradient at x == 0 exactly (PACT's mask is 0 <= x < alpha)."
            elif allclose(gx, grad * ((x >= 0) & (x <= alpha))):
                hint = " At x == alpha the output is clipped: its gradient goes to alpha, not to x (use x < alpha)."
            raise CheckFailed(problem + "." + hint)

        raw_ga = raw[1] if isinstance(raw, (tuple, list)) and len(raw) > 1 else None
        if isinstance(raw_ga, torch.Tensor) and raw_ga.numel() == x.numel() and x.numel() > 1:
            raise CheckFailed(f"backward returned a gradient for alpha of shape {tuple(raw_ga.shape)}, one value per "
                              f"element of x; alpha is one number shared by all elements, so sum over them: "
                              f"(grad * (x >= alpha)).sum().")
        if ga is None:
            raise CheckFailed(f"backward returned None as the gradient for alpha {where}: return the sum of grad "
                              f"over the elements where x >= alpha.")
        got, want = ga.item(), want_ga.item()
        if not close(got, want, like=(ga,)):
            hint = " d y / d alpha is 1 where x >= alpha (the output is alpha there) and 0 elsewhere; sum grad times that mask."
            if edited_in_place:
                hint = (" Your backward changed grad in place: grad_x = grad does not copy, so setting grad_x[...] = 0 "
                        "also zeroed grad where x >= alpha, before the alpha gradient was summed from it. Build a new "
                        "tensor instead, grad_x = grad * ((x >= 0) & (x < alpha)) (or start from grad.clone()).")
            elif close(got, -want, like=(ga,)):
                hint = " The sign is flipped: d y / d alpha = +1 where x >= alpha."
            elif close(got, (grad * (x > alpha)).sum().item(), like=(ga,)):
                hint = " Include x == alpha in the mask (x >= alpha): the output there is alpha too."
            elif close(got, (grad * (x < alpha)).sum().item(), like=(ga,)) or \
                    close(got, (grad * ((x >= 0) & (x < alpha))).sum().item(), like=(ga,)):
                hint = " The mask is inverted: alpha gets the gradient where x >= alpha (the clipped elements)."
            elif close(got, grad.sum().item(), like=(ga,)):
                hint = " You summed grad over all elements; keep only those where x >= alpha."
            raise CheckFailed(f"gradient for alpha {where}: expected {want:g}, got {got:g}.{hint}")
    passed(f"check_pact_function passed: outputs, x-gradients and alpha-gradients match qsal_lab.quant.PACT on "
            f"{len(_cases())} hand-made tensors.")


# a loss and its gradients through a whole SmallCNN: float32 rounding adds up over its layers, and a different (but
# right) order of operations in the learner's PACT may move an activation sitting on a rounding tie by one level
MODEL_SCALE = 16


class _PactLearnerModule(nn.Module):
    """A PACT activation that runs the learner's autograd Function."""

    def __init__(self, function, bits, alpha):
        super().__init__()
        self.function, self.bits = function, bits
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x):
        return self.function.apply(x, self.alpha, self.bits)


def check_pact_qat(function, train_ds, test_ds, bits: int = 2, steps: int = 60, min_accuracy: float = 0.95,
                   batch_size: int = 128, lr: float = 1e-3, alpha_lr_scale: float = 30.0):
    """Fine-tune the pretrained SmallCNN at W{bits}A{bits} with the learner's PACT Function in every activation.

    First one batch must give the same loss and alpha gradients as the library's PACT; then `steps`
    AdamW steps of QAT must keep test accuracy >= min_accuracy. As in chapter 4, the alphas get an optimizer
    group of their own (no weight decay, learning rate lr * alpha_lr_scale). Prints the learned alphas.
    """
    from ..data import make_loader
    from ..pretrained import load_pretrained
    from ..quant import PACT, QATConfig, pact_alpha_l2, quantize_model
    from ..train import cross_entropy_loss, evaluate, make_optimizer

    config = QATConfig(w_bits=bits, a_bits=bits, pact_alpha=2.0)
    float_model, _ = load_pretrained("mnist_smallcnn")
    reference = quantize_model(copy.deepcopy(float_model), config).train()
    model = quantize_model(copy.deepcopy(float_model), config).train()
    names = [n for n, m in model.named_modules() if isinstance(m, PACT)]
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, _PactLearnerModule(function, bits, config.pact_alpha))

    def loss_fn(m, x, y):
        return cross_entropy_loss(m, x, y) + config.alpha_l2 * pact_alpha_l2_any(m)

    def pact_alpha_l2_any(m):
        return sum(mod.alpha.pow(2) for mod in m.modules() if isinstance(mod, (PACT, _PactLearnerModule)))

    with quietly():  # the hand-made cases first: a mistake is named there, and never trains here
        check_pact_function(function)
    torch.manual_seed(0)
    x, y = next(iter(make_loader(train_ds, batch_size=batch_size, train=True, seed=0)))
    model.eval(), reference.eval()  # no dropout, BN running stats: the two forwards are comparable
    try:
        loss = loss_fn(model, x, y)
    except Exception as e:
        raise CheckFailed(f"running SmallCNN with your PACTFunction raised {type(e).__name__}: {e}") from None
    if not isinstance(loss, torch.Tensor):
        raise CheckFailed("PACTFunction.apply returned None inside the model: finish pact_forward first "
                          "(check_pact_forward must pass).")
    want = cross_entropy_loss(reference, x, y) + config.alpha_l2 * pact_alpha_l2(reference)
    loss.backward()
    want.backward()
    if not close(loss.item(), want.item(), scale=MODEL_SCALE):
        raise CheckFailed(f"SmallCNN with your PACT gives loss {loss.item():.5f} on a batch, the library's PACT "
                          f"{want.item():.5f}; run check_pact_function first.")
    for name in names:
        got, ref = model.get_submodule(name).alpha.grad, reference.get_submodule(name).alpha.grad
        if got is None or not close(got.item(), ref.item(), scale=8 * MODEL_SCALE):
            raise CheckFailed(f"alpha gradient of activation {name!r}: expected {ref.item():.5g}, got "
                              f"{None if got is None else round(got.item(), 5)}; run check_pact_function first.")
    # a short QAT run with the learner's PACT
    model.zero_grad(set_to_none=True)
    model.train()
    opt = make_optimizer(model, "adamw", lr, 0.0, alpha_lr_scale=alpha_lr_scale)
    torch.manual_seed(0)  # dropout
    done = 0
    while done < steps:
        for xb, yb in make_loader(train_ds, batch_size=batch_size, train=True, seed=done):
            opt.zero_grad(set_to_none=True)
            loss_fn(model, xb, yb).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    acc = evaluate(model, make_loader(test_ds, batch_size=512))["accuracy"]
    learned = {n: model.get_submodule(n).alpha.item() for n in names}
    alphas = ", ".join(f"{n}: {a:.3f} ({a - config.pact_alpha:+.3f})" for n, a in learned.items())
    if acc < min_accuracy:
        raise CheckFailed(f"after {steps} QAT steps with your PACT, W{bits}A{bits} SmallCNN reaches {acc:.2%} test "
                          f"accuracy, below {min_accuracy:.0%}; learned alphas: {alphas}.")
    passed(f"check_pact_qat passed: same loss and alpha gradients as the library on a batch; after {steps} QAT "
            f"steps your W{bits}A{bits} SmallCNN reaches {acc:.2%} on {len(test_ds):,} test images. "
            f"Learned alphas (all started at {config.pact_alpha:g}; learning rate {lr * alpha_lr_scale:g}, "
            f"{alpha_lr_scale:g}x the weights'): {alphas}.")
