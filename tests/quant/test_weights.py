"""DoReFa and symmetric weight quantizers: values, levels, STE gradients, codes round trip."""
import math

import pytest
import torch

from qsal_lab.quant.weights import (dorefa_codes, dorefa_from_codes, dorefa_weight, symmetric_codes,
                                    symmetric_from_codes, symmetric_weight)


def test_dorefa_by_hand_2_bits():
    # tanh(+-3) = +-0.995 is the max, so w_n = 0, 0.495, 0.505, 1 -> x3 = 0, 1.485, 1.515, 3
    w = torch.tensor([-3.0, -0.01, 0.01, 3.0])
    assert torch.allclose(dorefa_weight(w, 2), torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    codes, scale = dorefa_codes(w, 2)
    assert codes.tolist() == [0, 1, 2, 3] and scale == pytest.approx(2 / 3)


def test_dorefa_by_hand_4_bits():
    w = torch.tensor([0.2, -0.5, 1.0, 0.0])
    t = [math.tanh(v) for v in w.tolist()]
    expected = [2 * round(15 * (v / (2 * max(map(abs, t))) + 0.5)) / 15 - 1 for v in t]
    assert torch.allclose(dorefa_weight(w, 4), torch.tensor(expected), atol=1e-6)


def _dorefa_reference(w, bits):
    """The paper's formula with the usual detach() STE, differentiated by autograd."""
    n = 2**bits - 1
    w_t = torch.tanh(w)
    w_n = w_t / (2 * w_t.abs().max()) + 0.5
    r = w_n * n
    r = r + (r.round() - r).detach()
    return 2 * (r / n) - 1


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("sign", [1.0, -1.0])  # the max|tanh(w)| sits on a positive or a negative weight
def test_dorefa_values_and_gradient_match_autograd_of_the_formula(bits, sign):
    g = torch.Generator().manual_seed(bits)
    w = sign * torch.randn(16, 3, 3, 3, generator=g, dtype=torch.float64) * 0.3
    w[0, 0, 0, 0] = sign * 2.0  # a unique max
    upstream = torch.randn(w.shape, generator=g, dtype=torch.float64)
    w_ref, w_ours = w.clone().requires_grad_(), w.clone().requires_grad_()
    ref, ours = _dorefa_reference(w_ref, bits), dorefa_weight(w_ours, bits)
    assert torch.allclose(ours, ref, atol=1e-12)
    ref.backward(upstream)
    ours.backward(upstream)
    assert torch.allclose(w_ours.grad, w_ref.grad, atol=1e-12)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dorefa_has_2_to_the_k_levels_in_minus1_1(bits):
    w = torch.linspace(-0.5, 0.5, 4001)
    w_q = dorefa_weight(w, bits)
    assert w_q.unique().numel() == 2**bits
    assert w_q.min().item() == -1.0 and w_q.max().item() == pytest.approx(1.0)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_dorefa_codes_round_trip_is_bit_exact(bits):
    w = torch.randn(32, 16, generator=torch.Generator().manual_seed(1)) * 0.1
    codes, _ = dorefa_codes(w, bits)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    assert torch.equal(dorefa_from_codes(codes, bits), dorefa_weight(w, bits))


def test_dorefa_is_not_idempotent():
    # why load_packed must use the stored quantized weight instead of re-quantizing it
    w_q = dorefa_weight(torch.linspace(-1, 1, 101), 4)
    assert not torch.equal(dorefa_weight(w_q, 4), w_q)


def test_symmetric_per_channel_by_hand():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.1, -0.3, 0.2]])
    # 2 bits: codes {-1, 0, 1}, scale = max|w| per row = 1.0 and 0.3; -0.5 rounds half to even -> 0
    assert torch.allclose(symmetric_weight(w, 2), torch.tensor([[1.0, 0.0, 0.0], [0.0, -0.3, 0.3]]))
    codes, scale = symmetric_codes(w, 2)
    assert codes.tolist() == [[1, 0, 0], [0, -1, 1]] and torch.allclose(scale, torch.tensor([1.0, 0.3]))
    # 4 bits: codes in [-7, 7]; scale 7/7 = 1 exactly, so w/scale = 7, -3.5 (-> -4), 1.75 (-> 2), 2.5 (-> 2)
    codes, scale = symmetric_codes(torch.tensor([[7.0, -3.5, 1.75, 2.5]]), 4)
    assert codes.tolist() == [[7, -4, 2, 2]] and scale.tolist() == [1.0]


def test_symmetric_per_tensor():
    w = torch.tensor([[1.0, -0.5], [0.1, -2.0]])
    codes, scale = symmetric_codes(w, 3, per_channel=False)
    assert scale.dim() == 0 and scale.item() == pytest.approx(2 / 3)
    assert codes.tolist() == [[2, -1], [0, -3]]  # 1.5 -> 2, -0.75 -> -1, 0.15 -> 0, -3


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_symmetric_has_2_to_the_k_minus_1_levels(bits):
    w = torch.linspace(-1.0, 1.0, 4001).reshape(1, -1)
    assert symmetric_weight(w, bits).unique().numel() == 2**bits - 1


@pytest.mark.parametrize("per_channel", [True, False])
def test_symmetric_ste_gradient_is_identity_and_codes_round_trip(per_channel):
    w = (torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(2)) * 0.2).requires_grad_()
    upstream = torch.randn(w.shape)
    w_q = symmetric_weight(w, 4, per_channel)
    w_q.backward(upstream)
    assert torch.equal(w.grad, upstream)
    codes, scale = symmetric_codes(w, 4, per_channel)
    assert codes.abs().max() <= 7
    assert torch.equal(symmetric_from_codes(codes, scale), w_q.detach())
    assert torch.equal(symmetric_weight(w_q.detach(), 4, per_channel), w_q.detach())  # idempotent


def test_32_bits_is_float_and_bad_bits_fail():
    w = torch.randn(4, 4)
    assert dorefa_weight(w, 32) is w and symmetric_weight(w, 32) is w
    with pytest.raises(ValueError, match="invalid bit width 1"):
        dorefa_weight(w, 1)
    with pytest.raises(ValueError, match="no codes"):
        symmetric_codes(w, 32)
