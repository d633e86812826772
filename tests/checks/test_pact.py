"""Chapter 4's exercise checks: a correct PACT passes, each typical bug fails with the hint that names it."""
import re

import pytest
import torch

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.pact import check_pact_forward, check_pact_function, check_pact_qat


def good_forward(x, alpha, bits):
    levels = 2**bits - 1
    return torch.round(x.clamp(0.0, alpha) * levels / alpha) * alpha / levels


def make_function(backward, forward=good_forward):
    class PACTFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha, bits):
            ctx.save_for_backward(x, alpha)
            return forward(x, alpha.item(), bits)

        @staticmethod
        def backward(ctx, grad):
            x, alpha = ctx.saved_tensors
            return backward(grad, x, alpha)

    return PACTFunction


def good_backward(grad, x, alpha):
    return grad * ((x >= 0) & (x < alpha)), (grad * (x >= alpha)).sum(), None


def unfinished(*args):
    raise NotImplementedError


# ----------------------------------------------------------------------------- forward

def test_correct_forward_passes(capsys):
    check_pact_forward(good_forward)
    assert "check_pact_forward passed" in capsys.readouterr().out


@pytest.mark.parametrize("forward, message", [
    (lambda x, a, b: None, "pact_forward() returned None"),
    (unfinished, "pact_forward() is not implemented yet"),
    (lambda x, a, b: torch.round(x * (2**b - 1) / a) * a / (2**b - 1),
     "at element 0 (x = -1.5): expected 0, got -1.33333 (3 of 12 elements differ). Outputs fall outside "
     "[0, alpha]: you forgot to clip"),
    (lambda x, a, b: torch.round(x.clamp(0, a) * 2**b / a) * a / 2**b,
     "expected 0, got 0.5 (5 of 12 elements differ). You used 2^k = 4 steps"),
    (lambda x, a, b: x.clamp(0, a), "clipped but not quantized"),
    (lambda x, a, b: torch.floor(x.clamp(0, a) * (2**b - 1) / a) * a / (2**b - 1), "rounded down (floor)"),
    (lambda x, a, b: torch.round(x.clamp(0, a) * (2**b - 1) / a), "the integer code"),
    (lambda x, a, b: good_forward(x, a, b)[:3], "returned shape (3,) for x of shape (12,)"),
    (lambda x, a, b: good_forward(x, a, b).tolist(), "returned a value of type list; return a torch tensor"),
])
def test_forward_bugs_are_named(forward, message):
    with pytest.raises(CheckFailed) as e:
        check_pact_forward(forward)
    assert message in str(e.value)


# ----------------------------------------------------------------------------- autograd Function

def test_correct_function_passes(capsys):
    check_pact_function(make_function(good_backward))
    assert "check_pact_function passed" in capsys.readouterr().out


@pytest.mark.parametrize("backward, message", [
    (lambda g, x, a: None, "PACTFunction.backward() returned None"),
    (lambda g, x, a: (g, (g * (x >= a)).sum(), None),
     "gradient for x (alpha=2, bits=2, upstream gradient 1..12) at element 0 (x = -1.5): expected 0, got 1 "
     "(5 of 12 elements differ). You passed the gradient everywhere"),
    (lambda g, x, a: (g * (x < a), (g * (x >= a)).sum(), None), "Zero the gradient where x < 0 too"),
    (lambda g, x, a: (g * (x >= 0), (g * (x >= a)).sum(), None), "Zero the gradient where x >= alpha"),
    (lambda g, x, a: (g * ((x >= 0) & (x <= a)), (g * (x >= a)).sum(), None), "At x == alpha the output is clipped"),
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), g * (x >= a), None),
     "gradient for alpha of shape (12,), one value per element of x; alpha is one number shared by all "
     "elements, so sum over them"),
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), -(g * (x >= a)).sum(), None),
     "expected 33, got -33. The sign is flipped"),
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), (g * (x > a)).sum(), None),
     "expected 33, got 23. Include x == alpha in the mask"),
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), (g * (x < a)).sum(), None), "The mask is inverted"),
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), g.sum(), None), "You summed grad over all elements"),
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), (g * (x >= a)).sum()),
     "incorrect number of gradients (expected 3, got 2). backward must return one gradient per input"),
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), None, None), "backward returned None as the gradient for alpha"),
])
def test_backward_bugs_are_named(backward, message):
    with pytest.raises(CheckFailed) as e:
        check_pact_function(make_function(backward))
    assert message in str(e.value)


def in_place_backward(grad, x, alpha):
    grad_x = grad  # not a copy: the next line zeroes grad itself, before grad_alpha is summed from it
    grad_x[(x < 0) | (x >= alpha)] = 0
    grad_alpha = (grad * (x >= alpha)).sum()
    return grad_x, grad_alpha, None


def test_an_in_place_edit_of_grad_is_named():
    # the learner's mask is already x >= alpha: the hint must be about the in-place edit, not about the mask
    with pytest.raises(CheckFailed) as e:
        check_pact_function(make_function(in_place_backward))
    message = str(e.value)
    assert "expected 33, got 0. Your backward changed grad in place: grad_x = grad does not copy" in message
    assert "Include x == alpha" not in message


def test_an_in_place_edit_after_summing_the_alpha_gradient_passes(capsys):
    def edit_after_sum(grad, x, alpha):
        grad_alpha = (grad * (x >= alpha)).sum()
        grad[(x < 0) | (x >= alpha)] = 0
        return grad, grad_alpha, None
    check_pact_function(make_function(edit_after_sum))
    assert "check_pact_function passed" in capsys.readouterr().out


def test_function_check_reports_an_unfinished_forward_first():
    with pytest.raises(CheckFailed, match="returned None: its forward returns pact_forward"):
        check_pact_function(make_function(lambda g, x, a: None, forward=lambda x, a, b: None))


def test_function_check_reports_a_forward_bug_with_its_hint():
    no_clip = lambda x, a, b: torch.round(x * (2**b - 1) / a) * a / (2**b - 1)  # noqa: E731
    with pytest.raises(CheckFailed, match="forgot to clip"):
        check_pact_function(make_function(good_backward, forward=no_clip))


def test_function_check_wants_the_class():
    with pytest.raises(CheckFailed, match="needs the class itself"):
        check_pact_function(good_forward)


# ----------------------------------------------------------------------------- QAT with the learner's PACT

@pytest.fixture(scope="module")
def mnist_small(mnist_root):
    from qsal_lab.data import load_dataset

    return load_dataset("mnist", "train", subset=1000, seed=0), load_dataset("mnist", "test", subset=500, seed=0)


def test_qat_check_trains_with_a_correct_function(mnist_small, capsys):
    check_pact_qat(make_function(good_backward), *mnist_small, steps=8, min_accuracy=0.8)
    out = capsys.readouterr().out
    assert "check_pact_qat passed" in out and "features.2:" in out


def test_qat_check_catches_wrong_alpha_gradients(mnist_small):
    flipped = lambda g, x, a: (g * ((x >= 0) & (x < a)), -(g * (x >= a)).sum(), None)  # noqa: E731
    # the hand-made cases run first: the mistake gets their message before any training
    with pytest.raises(CheckFailed, match="gradient for alpha .* The sign is flipped"):
        check_pact_qat(make_function(flipped), *mnist_small, steps=8, min_accuracy=0.8)

    def flipped_on_images(g, x, a):  # right on the hand-made 1-D inputs, wrong on a model's 4-D activations
        sign = -1 if x.dim() == 4 else 1
        return g * ((x >= 0) & (x < a)), sign * (g * (x >= a)).sum(), None
    with pytest.raises(CheckFailed, match="alpha gradient of activation 'features.2'"):
        check_pact_qat(make_function(flipped_on_images), *mnist_small, steps=8, min_accuracy=0.8)


def test_qat_check_reports_an_unfinished_exercise(mnist_small):
    with pytest.raises(CheckFailed, match="returned None"):
        check_pact_qat(make_function(lambda g, x, a: None, forward=lambda x, a, b: None), *mnist_small, steps=8)


def test_qat_check_fails_below_the_accuracy_floor(mnist_small):
    with pytest.raises(CheckFailed, match=r"after 2 QAT steps with your PACT, W2A2 SmallCNN reaches .* below 100%"):
        check_pact_qat(make_function(good_backward), *mnist_small, steps=2, min_accuracy=1.0)


@pytest.mark.parametrize("forward, message", [
    # relu, no clip at alpha: x = 2.4 (element 10) gives 2.66667 at alpha=2, bits=2
    (lambda x, a, b: torch.round(torch.relu(x) * (2**b - 1) / a) * a / (2**b - 1),
     "at element 10 (x = 2.4): expected 2, got 2.66667 (2 of 12 elements differ). The output is not clipped at "
     "alpha: inputs above alpha must give alpha"),
    # clipped at alpha only: the negatives stay negative
    (lambda x, a, b: torch.round(x.clamp(max=a) * (2**b - 1) / a) * a / (2**b - 1),
     "at element 0 (x = -1.5): expected 0, got -1.33333 (1 of 12 elements differ). Negative inputs must give 0: "
     "clip at 0 too"),
])
def test_forward_clip_bugs_are_named(forward, message):
    with pytest.raises(CheckFailed) as e:
        check_pact_forward(forward)
    assert message in str(e.value)


@pytest.mark.parametrize("backward, message", [
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), (g * (x >= a)).sum().item(), None),
     "expected Variable or None (got float). The gradient for alpha must be a tensor, like alpha itself: "
     "return (grad * (x >= alpha)).sum() without .item()"),
    (lambda g, x, a: (g * ((x >= 0) & (x < a)), (g * (x >= a)).sum(), 0),
     "bits is a Python int, not a tensor, so it has no gradient: return None in its place (not 0)"),
])
def test_backward_gradient_type_bugs_are_named(backward, message):
    with pytest.raises(CheckFailed) as e:
        check_pact_function(make_function(backward))
    assert message in str(e.value)


def test_qat_check_alphas_visibly_move(mnist_small, capsys):
    # alphas get their own AdamW group (lr x 30, no weight decay): after 8 steps they have left 2 behind;
    # with one AdamW group at lr 1e-3 they would move by at most ~0.01
    check_pact_qat(make_function(good_backward), *mnist_small, steps=8, min_accuracy=0.8)
    out = capsys.readouterr().out
    moves = [float(m) for m in re.findall(r"\w+\.\d+: [\d.]+ \(([+-][\d.]+)\)", out)]
    assert len(moves) == 4, out
    assert max(abs(m) for m in moves) > 0.1, out
    assert "learning rate 0.03, 30x the weights'" in out
