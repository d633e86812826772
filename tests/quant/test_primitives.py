"""Uniform quantization primitives against hand-computed values."""
import pytest
import torch

from qsal_lab.quant.primitives import (calc_qparams, dequantize, fake_quantize, qrange, quantize, round_ste,
                                       validate_bits)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8, 32])
def test_validate_bits_accepts_2_to_8_and_32(bits):
    assert validate_bits(bits) == bits


@pytest.mark.parametrize("bad", [5.5, 1, 9, 16, 0, -4, True, "4", None, 4.0])
def test_validate_bits_rejects_everything_else(bad):
    with pytest.raises(ValueError, match="use an integer from 2 to 8, or 32 for float"):
        validate_bits(bad)


def test_validate_bits_message_names_value_and_setting():
    with pytest.raises(ValueError, match=r"invalid bit width 5\.5 for w_bits: use an integer from 2 to 8, or 32 for float"):
        validate_bits(5.5, "w_bits")


def test_qrange():
    assert qrange(4, signed=True) == (-8, 7)
    assert qrange(4, signed=True, narrow=True) == (-7, 7)
    assert qrange(2, signed=True, narrow=True) == (-1, 1)
    assert qrange(4, signed=False) == (0, 15)
    assert qrange(8, signed=False) == (0, 255)
    assert qrange(8, signed=True) == (-128, 127)
    with pytest.raises(ValueError, match="32 bits means float"):
        qrange(32, signed=True)


def test_calc_qparams_asymmetric_uint8():
    scale, zp = calc_qparams(-1.0, 3.0, 8, symmetric=False, signed=False)
    assert scale.item() == pytest.approx(4 / 255)
    assert zp.item() == 64  # round(1 / (4/255)) = round(63.75)
    assert zp.dtype == torch.int64


def test_calc_qparams_widens_range_to_contain_zero():
    scale, zp = calc_qparams(0.5, 2.0, 2, symmetric=False, signed=False)
    assert scale.item() == pytest.approx(2 / 3) and zp.item() == 0
    scale, zp = calc_qparams(-3.0, -1.0, 2, symmetric=False, signed=False)
    assert scale.item() == pytest.approx(1.0) and zp.item() == 3


def test_calc_qparams_symmetric():
    scale, zp = calc_qparams(-2.0, 1.0, 8, symmetric=True, signed=True, narrow=True)
    assert scale.item() == pytest.approx(2 / 127) and zp.item() == 0
    scale, zp = calc_qparams(-2.0, 1.0, 8, symmetric=True, signed=False)
    assert scale.item() == pytest.approx(2 / 127.5) and zp.item() == 128


def test_calc_qparams_per_channel():
    scale, zp = calc_qparams(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 4.0]), 4, symmetric=True, narrow=True)
    assert torch.allclose(scale, torch.tensor([1 / 7, 4 / 7]))
    assert zp.tolist() == [0, 0]


def test_calc_qparams_all_zero_range_gives_usable_scale():
    scale, zp = calc_qparams(0.0, 0.0, 8, symmetric=False, signed=False)
    assert scale.item() > 0
    assert fake_quantize(torch.zeros(3), scale, zp, 8, signed=False).tolist() == [0.0, 0.0, 0.0]


def test_calc_qparams_bad_input():
    with pytest.raises(ValueError, match="larger than max_val"):
        calc_qparams(2.0, 1.0, 8, symmetric=False, signed=False)
    with pytest.raises(ValueError, match="NaN"):
        calc_qparams(float("nan"), 1.0, 8, symmetric=False, signed=False)
    with pytest.raises(ValueError, match="shape"):
        calc_qparams(torch.zeros(2), torch.ones(3), 8, symmetric=False, signed=False)


# scale 0.25, zero point 2, 3-bit unsigned codes 0..7: representable values -0.5 .. 1.25
X = [-1.0, -0.26, 0.0, 0.24, 0.5, 3.0, 0.125, 0.375]
CODES = [0, 1, 2, 3, 4, 7, 2, 4]  # x/s = -4, -1.04, 0, .96, 2, 12, .5 (half to even: 0), 1.5 (-> 2)
VALUES = [-0.5, -0.25, 0.0, 0.25, 0.5, 1.25, 0.0, 0.5]
INSIDE = [0, 1, 1, 1, 1, 0, 1, 1]  # unclamped codes -2 and 14 fall outside 0..7


def test_quantize_dequantize_hand_example():
    q = quantize(torch.tensor(X), 0.25, 2, bits=3, signed=False)
    assert q.tolist() == CODES and q.dtype == torch.int64
    assert dequantize(q, 0.25, 2).tolist() == VALUES


def test_fake_quantize_values_and_ste_gradient():
    x = torch.tensor(X, requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.25), torch.tensor(2), bits=3, signed=False)
    assert y.tolist() == VALUES
    y.backward(torch.arange(1.0, 9.0))
    assert x.grad.tolist() == [i * g for i, g in zip(INSIDE, range(1, 9))]


def test_per_channel_quantize():
    x = torch.tensor([[1.0, -1.0, 0.3], [1.0, -1.0, 0.3]])
    q = quantize(x, torch.tensor([1.0, 0.5]), torch.tensor([0, 0]), bits=4, signed=True, axis=0)
    assert q.tolist() == [[1, -1, 0], [2, -2, 1]]
    q = quantize(x.T, torch.tensor([1.0, 0.5]), torch.tensor([0, 0]), bits=4, signed=True, axis=1)
    assert q.T.tolist() == [[1, -1, 0], [2, -2, 1]]
    assert dequantize(q.T, torch.tensor([1.0, 0.5]), torch.tensor([0, 0]), axis=0).tolist() == [[1, -1, 0], [1, -1, 0.5]]


def test_shape_mismatch_errors_are_clear():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"needs shape \(2,\)"):
        quantize(x, torch.ones(3), torch.zeros(3, dtype=torch.long), 8, True, axis=0)
    with pytest.raises(ValueError, match="axis=None"):
        fake_quantize(x, torch.ones(2), torch.zeros(2, dtype=torch.long), 8, True)
    with pytest.raises(ValueError, match="out of range"):
        quantize(x, torch.ones(2), torch.zeros(2, dtype=torch.long), 8, True, axis=2)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_asymmetric_uniform_has_2_to_the_k_levels(bits):
    x = torch.linspace(-3.0, 5.0, 20001)
    scale, zp = calc_qparams(x.min(), x.max(), bits, symmetric=False, signed=False)
    assert fake_quantize(x, scale, zp, bits, signed=False).unique().numel() == 2**bits


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_narrow_symmetric_has_2_to_the_k_minus_1_levels(bits):
    x = torch.linspace(-1.0, 1.0, 20001)
    scale, zp = calc_qparams(x.min(), x.max(), bits, symmetric=True, signed=True, narrow=True)
    assert fake_quantize(x, scale, zp, bits, signed=True, narrow=True).unique().numel() == 2**bits - 1


@pytest.mark.parametrize("bits", [2, 4, 5, 8])
def test_fake_quantize_is_idempotent(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(6, 50, generator=g) * 3
    scale, zp = calc_qparams(x.min(), x.max(), bits, symmetric=False, signed=False)
    once = fake_quantize(x, scale, zp, bits, signed=False)
    assert torch.equal(fake_quantize(once, scale, zp, bits, signed=False), once)
    amax = x.abs().amax(dim=1)
    scale, zp = calc_qparams(-amax, amax, bits, symmetric=True, signed=True, narrow=True)
    once = fake_quantize(x, scale, zp, bits, signed=True, axis=0, narrow=True)
    assert torch.equal(fake_quantize(once, scale, zp, bits, signed=True, axis=0, narrow=True), once)


def test_fake_quantize_equals_dequantize_of_quantize():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g)
    scale, zp = calc_qparams(-1.5, 2.0, 4, symmetric=False, signed=False)
    assert torch.equal(fake_quantize(x, scale, zp, 4, False), dequantize(quantize(x, scale, zp, 4, False), scale, zp))


def test_round_ste():
    x = torch.tensor([0.4, 0.5, 1.5, -2.6], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 0.0, 2.0, -3.0]
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]
