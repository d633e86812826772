"""PACT forward, the STE gradient for x and the paper's gradient for alpha, by hand."""
import pytest
import torch
from torch import nn

from qsal_lab.quant.pact import PACT, pact_alpha_l2, pact_alphas, pact_backward_reference, pact_quantize

# alpha = 2, 2 bits: levels 0, 2/3, 4/3, 2; y * 3/2 is rounded (half to even)
X = [-1.0, 0.0, 0.3, 0.34, 1.0, 1.9, 2.0, 5.0]
Y = [0.0, 0.0, 0.0, 2 / 3, 4 / 3, 2.0, 2.0, 2.0]  # 0.45 -> 0, 0.51 -> 1, 1.5 -> 2, 2.85 -> 3
GRAD_X = [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]  # upstream 1..8 kept where 0 <= x < alpha
GRAD_ALPHA = 7.0 + 8.0  # upstream summed where x >= alpha


def test_pact_forward_and_gradients_by_hand():
    x = torch.tensor(X, requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    y = pact_quantize(x, alpha, bits=2)
    assert torch.allclose(y, torch.tensor(Y))
    y.backward(torch.arange(1.0, 9.0))
    assert x.grad.tolist() == GRAD_X
    assert alpha.grad.item() == GRAD_ALPHA


def test_pact_module_matches_function_and_learns_alpha():
    act = PACT(bits=2, alpha=2.0)
    assert isinstance(act.alpha, nn.Parameter) and act.alpha.item() == 2.0
    x = torch.tensor(X, requires_grad=True)
    y = act(x)
    assert torch.allclose(y, torch.tensor(Y))
    y.backward(torch.arange(1.0, 9.0))
    assert act.alpha.grad.item() == GRAD_ALPHA


def test_gradient_masks_are_exact_at_the_boundaries():
    alpha = torch.tensor(1.5, requires_grad=True)
    below_zero = torch.nextafter(torch.tensor(0.0), torch.tensor(-1.0)).item()
    below_alpha = torch.nextafter(torch.tensor(1.5), torch.tensor(0.0)).item()
    x = torch.tensor([below_zero, 0.0, below_alpha, 1.5], requires_grad=True)
    pact_quantize(x, alpha, bits=4).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert alpha.grad.item() == 1.0


def _naive_pact(x, alpha, bits):
    """The formula as written in the paper, for comparison."""
    y = torch.clamp(x, 0.0, alpha)
    n = 2**bits - 1
    return torch.round(y * n / alpha) * alpha / n


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pact_matches_the_paper_formula_and_has_2_to_the_k_levels(bits):
    x = torch.linspace(-1.0, 12.0, 100001)
    y = pact_quantize(x, 10.0, bits)
    assert torch.allclose(y, _naive_pact(x, 10.0, bits), atol=1e-5)
    assert y.unique().numel() == 2**bits
    assert y.min().item() == 0.0 and y.max().item() == pytest.approx(10.0)


def test_pact_32_bits_only_clips():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(1000, generator=g) * 4).requires_grad_()
    alpha = torch.tensor(3.0, requires_grad=True)
    y = pact_quantize(x, alpha, 32)
    assert torch.equal(y, x.detach().clamp(0, 3.0))
    y.sum().backward()
    assert torch.equal(x.grad, ((x >= 0) & (x < 3.0)).float())
    assert alpha.grad.item() == (x >= 3.0).sum().item()


def test_alpha_gradient_sign_pushes_alpha_up_when_clipping_hurts():
    # loss = -sum(y): larger outputs are better, so gradient descent should raise alpha
    act = PACT(bits=4, alpha=1.0)
    (-act(torch.tensor([0.5, 3.0, 4.0]))).sum().backward()
    assert act.alpha.grad.item() == -2.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="invalid bit width 5.5"):
        PACT(bits=5.5)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        PACT(bits=4, alpha=0.0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        pact_quantize(torch.ones(3), torch.tensor(-1.0), 4)
    with pytest.raises(ValueError, match="single number"):
        pact_quantize(torch.ones(3), torch.ones(2), 4)


def test_alpha_l2_and_alpha_logging():
    model = nn.Sequential(nn.Linear(2, 2), PACT(4, alpha=2.0), nn.Linear(2, 2), PACT(4, alpha=3.0))
    penalty = pact_alpha_l2(model)
    assert penalty.item() == pytest.approx(13.0)
    penalty.backward()
    assert model[1].alpha.grad.item() == pytest.approx(4.0) and model[3].alpha.grad.item() == pytest.approx(6.0)
    assert pact_alphas(model) == {"1": 2.0, "3": 3.0}
    assert pact_alpha_l2(nn.Linear(2, 2)).item() == 0.0


@pytest.mark.parametrize("alpha", [0.7, 2.0, 3.3])
def test_fused_backward_equals_the_plain_masks_reference(alpha):
    g = torch.Generator().manual_seed(1)
    below = lambda v: torch.nextafter(torch.tensor(v), torch.tensor(-9.0)).item()
    edges = torch.tensor([below(0.0), 0.0, below(alpha), alpha, 2 * alpha])  # both sides of both bounds
    x = torch.cat([torch.randn(10_000, generator=g) * alpha, edges]).requires_grad_()
    a = torch.tensor(alpha, requires_grad=True)
    upstream = torch.randn(x.shape, generator=g)
    pact_quantize(x, a, bits=3).backward(upstream)
    grad_x, grad_alpha = pact_backward_reference(upstream, x.detach(), a.detach())
    assert torch.equal(x.grad, grad_x)
    assert torch.allclose(a.grad, grad_alpha, rtol=1e-5, atol=1e-4)
    assert x.grad[-5:].tolist() == [0.0, upstream[-4].item(), upstream[-3].item(), 0.0, 0.0]
