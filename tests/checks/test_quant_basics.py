"""The chapter-2 exercise checks: a correct implementation passes, and the untouched exercise
(None) and the typical bugs fail with a message that names the bug."""
import pytest
import torch

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.quant_basics import (check_dequantize, check_qparams_minmax, check_quantization_roundtrip,
                                          check_quantize)


# ----------------------------------------------------------------------------- correct answers

def good_quantize(x, scale, zero_point, qmin, qmax):
    return (torch.round(x / scale) + zero_point).clamp(qmin, qmax).to(torch.int64)


def good_dequantize(q, scale, zero_point):
    return (q - zero_point) * scale


def good_qparams(x, bits):
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, int(round(-lo / scale))


def todo(*args):
    raise NotImplementedError


# ----------------------------------------------------------------------------- quantize

def test_check_quantize_passes_a_correct_implementation(capsys):
    check_quantize(good_quantize)
    assert "✅ check_quantize passed" in capsys.readouterr().out


def test_check_quantize_passes_int32_codes_and_round_half_up():
    check_quantize(lambda x, s, z, lo, hi: (torch.round(x / s) + z).clamp(lo, hi).int())
    check_quantize(lambda x, s, z, lo, hi: (torch.floor(x / s + 0.5) + z).clamp(lo, hi).long())


@pytest.mark.parametrize("bad, message", [
    (lambda x, s, z, lo, hi: None, r"quantize\(\) returned None: fill in its TODO"),
    (todo, "not implemented yet"),
    (lambda x, s, z, lo, hi: 3, r"returned a value of type int; return a torch tensor \(a tensor of integer codes\)"),
    (lambda x, s, z, lo, hi: good_quantize(x, s, z, lo, hi).flatten(), "shape"),
    # forgot the clamp: 4-bit case, x=-1.37 -> round(-6.85) + 5 = -2, expected 0
    (lambda x, s, z, lo, hi: (torch.round(x / s) + z).long(),
     r"for x=-1\.37 \(element 0\) expected code 0, got -2\. Some codes lie outside \[qmin, qmax\]"),
    # forgot the round
    (lambda x, s, z, lo, hi: (x / s + z).clamp(lo, hi),
     r"for x=-0\.62 \(element 1\) expected code 2, got 1\.9.*not whole numbers: round"),
    # .long() truncates toward zero: x=-0.13 -> trunc(-0.65) = 0 -> 5, expected round -> -1 -> 4
    (lambda x, s, z, lo, hi: ((x / s).long() + z).clamp(lo, hi),
     r"for x=-0\.13 \(element 2\) expected code 4, got 5\. .*truncates toward zero"),
    (lambda x, s, z, lo, hi: (torch.floor(x / s) + z).clamp(lo, hi).long(), "It looks like floor"),
    (lambda x, s, z, lo, hi: (torch.round(x / s) - z).clamp(lo, hi).long(), "zero point has the wrong sign"),
    (lambda x, s, z, lo, hi: (torch.round(x * s) + z).clamp(lo, hi).long(), "Divide x by the scale"),
    (lambda x, s, z, lo, hi: torch.round(x / s).clamp(lo, hi).long() + z, "Clamp after adding the zero point"),
    # right codes, float dtype
    (lambda x, s, z, lo, hi: (torch.round(x / s) + z).clamp(lo, hi),
     r"right codes but as torch\.float32.*\.to\(torch\.int64\)"),
    # clamps to a wrong range that no single variant explains
    (lambda x, s, z, lo, hi: (torch.round(x / s) + z).clamp(lo + 1, hi).long(),
     r"expected code 0, got 1\. Compute clamp\(round\(x / scale\) \+ zero_point, qmin, qmax\)"),
    (lambda x, s, z, lo, hi: 1 / 0, "quantize\\(\\) raised ZeroDivisionError"),
])
def test_check_quantize_names_the_bug(bad, message):
    with pytest.raises(CheckFailed, match=message):
        check_quantize(bad)


def test_check_quantize_does_not_let_the_learner_change_its_cases():
    def in_place(x, s, z, lo, hi):
        x.mul_(0)  # a learner who modifies x in place must not break the next check
        return torch.zeros_like(x, dtype=torch.int64)
    with pytest.raises(CheckFailed, match="element 1\\) expected code 2, got 0"):
        check_quantize(in_place)
    check_quantize(good_quantize)


# ----------------------------------------------------------------------------- dequantize

def test_check_dequantize_passes_a_correct_implementation(capsys):
    check_dequantize(good_dequantize)
    check_dequantize(lambda q, s, z: (q.float() - z) * s)
    assert "✅ check_dequantize passed" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    (lambda q, s, z: None, r"dequantize\(\) returned None: fill in its TODO"),
    (todo, "not implemented yet"),
    # first case: scale 0.2, zero point 5, q=0 -> expected -1
    (lambda q, s, z: q * s - z, r"for code q=0 \(element 0\) expected -1, got -5\. Subtract the zero point .* before"),
    (lambda q, s, z: (q + z) * s, r"expected -1, got 1\. The zero point has the wrong sign"),
    (lambda q, s, z: (q - z) / s, r"expected -1, got -25\. Multiply by the scale"),
    (lambda q, s, z: q * s, r"expected -1, got 0\. The zero point is missing"),
    (lambda q, s, z: ((q - z) * s).long(), r"for code q=3 \(element 1\) expected -0\.4, got 0\. .*drops the fraction"),
    (lambda q, s, z: q - z, r"expected -1, got -5\. Compute \(q - zero_point\) \* scale"),
])
def test_check_dequantize_names_the_bug(bad, message):
    with pytest.raises(CheckFailed, match=message):
        check_dequantize(bad)


def test_check_dequantize_accepts_any_float_dtype():
    check_dequantize(lambda q, s, z: ((q - z) * s).to(torch.float64))


# ----------------------------------------------------------------------------- qparams_minmax

def test_check_qparams_minmax_passes_a_correct_implementation(capsys):
    check_qparams_minmax(good_qparams)
    # tensors (like calc_qparams returns) and a float zero point with an integer value are fine too
    check_qparams_minmax(lambda x, bits: tuple(torch.tensor(v) for v in good_qparams(x, bits)))
    check_qparams_minmax(lambda x, bits: (good_qparams(x, bits)[0], float(good_qparams(x, bits)[1])))
    assert "✅ check_qparams_minmax passed" in capsys.readouterr().out


def no_zero_in_range(x, bits):
    lo, hi = x.min().item(), x.max().item()
    scale = (hi - lo) / (2**bits - 1)
    return scale, int(round(-lo / scale))


@pytest.mark.parametrize("bad, message", [
    (lambda x, bits: None, r"qparams_minmax\(\) returned None: fill in its TODO"),
    (todo, "not implemented yet"),
    (lambda x, bits: 0.1, "return a pair"),
    (lambda x, bits: (0.1, 2, 3), "return a pair"),
    # case 2 is all positive (min 0.5, max 3): 3 bits, expected scale 3/7
    (no_zero_in_range, r"returned scale 0\.357143 for a tensor with min 0\.5 and max 3 at 3 bits .*expected "
                       r"0\.428571\. The range must contain 0"),
    (lambda x, bits: (good_qparams(x, bits)[0] * (2**bits - 1) / 2**bits, good_qparams(x, bits)[1]),
     r"expected 0\.202\. 4 bits give 2\^4 = 16 codes but only 15 steps"),
    (lambda x, bits: (good_qparams(x, bits)[0] * (2**bits - 1), 0), "Divide the range"),
    (lambda x, bits: (good_qparams(x, bits)[0], -good_qparams(x, bits)[1]),
     r"returned zero_point -3 .*expected 3\. The sign is flipped"),
    (lambda x, bits: (good_qparams(x, bits)[0], -min(x.min().item(), 0) / good_qparams(x, bits)[0]),
     r"returned zero_point 3\.06931 .*round it"),
    (lambda x, bits: (good_qparams(x, bits)[0], good_qparams(x, bits)[1] + 1), r"expected 3\. zero_point = -round"),
])
def test_check_qparams_minmax_names_the_bug(bad, message):
    with pytest.raises(CheckFailed, match=message):
        check_qparams_minmax(bad)


# ----------------------------------------------------------------------------- the round trip on real data

def real_data():
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.2


def test_check_quantization_roundtrip_passes_and_returns_the_errors(capsys):
    mse = check_quantization_roundtrip(good_quantize, good_dequantize, good_qparams, real_data())
    out = capsys.readouterr().out
    assert "✅ check_quantization_roundtrip passed" in out and "SQNR" in out
    assert list(mse) == [2, 3, 4, 5, 6, 7, 8]
    assert all(a > b for a, b in zip(mse.values(), list(mse.values())[1:])), "error must shrink with more bits"
    # uniform rounding error: MSE ~ scale^2 / 12 (no clipping with a min/max range)
    x = real_data()
    scale8 = (x.max() - x.min()).item() / 255
    assert mse[8] == pytest.approx(scale8**2 / 12, rel=0.1)


def test_check_quantization_roundtrip_on_the_untouched_exercise():
    with pytest.raises(CheckFailed, match=r"^quantize\(\) returned None"):
        check_quantization_roundtrip(lambda *a: None, lambda *a: None, lambda *a: None, real_data())


@pytest.mark.parametrize("quantize_fn, dequantize_fn, message", [
    (lambda *a: None, good_dequantize, r"quantize\(\) returned None"),
    (good_quantize, lambda *a: None, r"dequantize\(\) returned None"),
    # a function that fails its own check fails here too, with that check's message
    (good_quantize, lambda q, s, z: (q + z) * s, r"dequantize\(\) is not right yet .* wrong sign"),
])
def test_check_quantization_roundtrip_reports_the_broken_part(quantize_fn, dequantize_fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_quantization_roundtrip(quantize_fn, dequantize_fn, good_qparams, real_data())


# ----------------------------------------------------------------------------- more named mistakes

@pytest.mark.parametrize("bad, message", [
    # no round, converted after the clamp: the fraction is cut off (floor and trunc agree on case 1 after the
    # clamp at 0; the signed case tells them apart)
    (lambda x, s, z, lo, hi: (x / s + z).clamp(lo, hi).to(torch.int64),
     r"for x=-0\.62 \(element 1\) expected code 2, got 1\. It looks like the fraction was cut off: \.long\(\), "
     r"\.int\(\) or \.to\(torch\.int64\) truncates toward zero instead of rounding"),
    # right codes, but uint8 cannot hold -128: it wraps around to 128
    (lambda x, s, z, lo, hi: (torch.round(x / s) + z).clamp(lo, hi).to(torch.uint8),
     r"qmin=-128, qmax=127: for x=-9 \(element 0\) expected code -128, got 128\. Your codes are torch\.uint8, which "
     r"holds only 0\.\.255: codes outside that range wrapped around .* Return torch\.int64 codes"),
])
def test_check_quantize_names_truncation_and_wrap_around(bad, message):
    with pytest.raises(CheckFailed, match=message):
        check_quantize(bad)


def test_check_quantize_floor_is_still_called_floor():
    with pytest.raises(CheckFailed, match=r"It looks like floor\(\): use torch\.round\(\)\.$"):
        check_quantize(lambda x, s, z, lo, hi: (torch.floor(x / s) + z).clamp(lo, hi).long())


def truncated_zero_point(x, bits):
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, int(-lo / scale)


def per_channel_qparams(x, bits):
    lo, hi = x.amin(dim=0).clamp(max=0), x.amax(dim=0).clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, torch.round(-lo / scale)


def test_check_qparams_minmax_catches_a_truncated_zero_point():
    # 4th case: min -0.35, max 1 at 4 bits, scale 0.09, -min / scale = 3.89 -> 4, truncated 3
    with pytest.raises(CheckFailed, match=r"returned zero_point 3 for a tensor with min -0\.35 and max 1 at 4 bits "
                                          r".*expected 4\. -min / scale = 3\.889: the zero_point was "
                                          r"truncated/floored .* Use round\(\)"):
        check_qparams_minmax(truncated_zero_point)


def test_check_qparams_minmax_names_a_per_channel_range():
    # case 1 is 1-D (amin(dim=0) is one number); case 2 is 2x2, so one value per column
    with pytest.raises(CheckFailed, match=r"returned a scale tensor of shape \(2,\); return one number \(one number "
                                          r"per tensor: take the min/max over ALL elements"):
        check_qparams_minmax(per_channel_qparams)


def test_check_quantization_roundtrip_prints_what_the_questions_ask_about(capsys):
    x = torch.tensor([-0.35, 0.0, 0.2, 1.0, 0.65, -0.1])
    mse = check_quantization_roundtrip(good_quantize, good_dequantize, good_qparams, x, bit_widths=(3, 4))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["bits", "scale", "-min/scale", "zero_point", "MSE", "s^2/12", "shrink", "SQNR", "(dB)"]
    # 4 bits: scale 1.35 / 15 = 0.09, -min / scale = 3.889, zero point 4, s^2/12 = 6.75e-04
    assert lines[2].split()[:4] == ["4", "0.09000", "3.889", "4"]
    assert lines[2].split()[5] == "6.75e-04"
    assert lines[2].split()[6] == f"{mse[3] / mse[4]:.1f}x"
    assert len(lines[1].split()) == 7  # the first row has no shrink factor
