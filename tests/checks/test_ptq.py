"""The chapter 3 (post-training quantization) exercise checks: right answers pass, typical mistakes
fail with the message that explains them."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.ptq import (check_asymmetric_qparams, check_minmax_observer, check_observer_calibration,
                                 check_percentile_observer)
from qsal_lab.models import build_model


def good_qparams(lo, hi, bits):
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, int(round(-lo / scale))


class GoodMinMax:
    def __init__(self):
        self.min_val = self.max_val = None

    def update(self, x):
        lo, hi = x.min().item(), x.max().item()
        self.min_val = lo if self.min_val is None else min(self.min_val, lo)
        self.max_val = hi if self.max_val is None else max(self.max_val, hi)

    def compute(self, bits):
        return good_qparams(self.min_val, self.max_val, bits)


class GoodPercentile:
    def __init__(self, percentile=99.99):
        self.percentile, self.lows, self.highs = percentile, [], []

    def update(self, x):
        flat = x.detach().flatten().float()
        self.lows.append(torch.quantile(flat, 1 - self.percentile / 100).item())
        self.highs.append(torch.quantile(flat, self.percentile / 100).item())

    def compute(self, bits):
        return good_qparams(sum(self.lows) / len(self.lows), sum(self.highs) / len(self.highs), bits)


class Untouched:  # what the exercise template does before the learner fills it in
    def __init__(self, *args):
        pass

    def update(self, x):
        ...

    def compute(self, bits):
        ...


def test_check_asymmetric_qparams_both_directions(capsys):
    check_asymmetric_qparams(good_qparams)
    assert "✅ check_asymmetric_qparams passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"asymmetric_qparams\(\) returned None"):
        check_asymmetric_qparams(lambda lo, hi, bits: None)

    def no_zero(lo, hi, bits):  # the range is not widened to include 0
        scale = (hi - lo) / (2**bits - 1)
        return scale, round(-lo / scale)
    with pytest.raises(CheckFailed, match=r"all-positive range \[0.5, 3\].*include 0"):
        check_asymmetric_qparams(no_zero)

    def unrounded(lo, hi, bits):
        scale, _ = good_qparams(lo, hi, bits)
        return scale, -min(lo, 0.0) / scale
    with pytest.raises(CheckFailed, match=r"at 4 bits: expected scale=0.133333, zero_point=2 but got scale=0.133333, "
                                          r"zero_point=2.25. The zero-point must be an integer code"):
        check_asymmetric_qparams(unrounded)

    def two_to_the_k(lo, hi, bits):
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / 2**bits
        return scale, round(-lo / scale)
    with pytest.raises(CheckFailed, match="2\\^8 - 1 = 255 steps"):
        check_asymmetric_qparams(two_to_the_k)

    def wrong_sign(lo, hi, bits):
        scale, zero_point = good_qparams(lo, hi, bits)
        return scale, -zero_point
    with pytest.raises(CheckFailed, match="wrong sign"):
        check_asymmetric_qparams(wrong_sign)
    with pytest.raises(CheckFailed, match="return a pair"):
        check_asymmetric_qparams(lambda lo, hi, bits: 0.1)

    def todo(lo, hi, bits):
        raise NotImplementedError
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_asymmetric_qparams(todo)


def test_check_minmax_observer_both_directions(capsys):
    check_minmax_observer(GoodMinMax)
    assert "✅ check_minmax_observer passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"compute\(\) returned None"):
        check_minmax_observer(Untouched)

    class LastBatchOnly(GoodMinMax):
        def update(self, x):
            self.min_val, self.max_val = x.min().item(), x.max().item()
    with pytest.raises(CheckFailed, match="expected scale=0.0176471, zero_point=28.*only remembers the last batch"):
        check_minmax_observer(LastBatchOnly)

    class FirstBatchOnly(GoodMinMax):
        def update(self, x):
            if self.min_val is None:
                super().update(x)
    with pytest.raises(CheckFailed, match="only remembers the first batch"):
        check_minmax_observer(FirstBatchOnly)

    class PerColumn(GoodMinMax):  # x.min(dim=0): one value per column instead of one per tensor
        def compute(self, bits):
            return torch.full((3,), 0.01), torch.zeros(3)
    with pytest.raises(CheckFailed, match="scale tensor of shape \\(3,\\).*over ALL elements"):
        check_minmax_observer(PerColumn)

    class NoZero(GoodMinMax):  # clip range not widened to 0: all-positive data gets a negative zero-point
        def compute(self, bits):
            scale = (self.max_val - self.min_val) / (2**bits - 1)
            return scale, round(-self.min_val / scale)
    with pytest.raises(CheckFailed, match="all-positive|include 0"):
        check_minmax_observer(NoZero)

    class Hardcoded8Bits(GoodMinMax):
        def compute(self, bits):
            return good_qparams(self.min_val, self.max_val, 8)
    with pytest.raises(CheckFailed, match="at 4 bits: expected"):
        check_minmax_observer(Hardcoded8Bits)

    class ComputeResets(GoodMinMax):
        def compute(self, bits):
            out = super().compute(bits)
            self.min_val = self.max_val = None
            return out
    with pytest.raises(CheckFailed, match="called after 2 of 3 batches"):
        check_minmax_observer(ComputeResets)


def test_check_percentile_observer_both_directions(capsys):
    check_percentile_observer(GoodPercentile)
    assert "✅ check_percentile_observer passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"compute\(\) returned None"):
        check_percentile_observer(Untouched)

    class GlobalPercentile(GoodPercentile):  # percentiles of all batches pooled, not averaged per batch
        def update(self, x):
            self.seen = torch.cat([getattr(self, "seen", torch.zeros(0)), x.flatten()])
            self.lows = [torch.quantile(self.seen, 1 - self.percentile / 100).item()]
            self.highs = [torch.quantile(self.seen, self.percentile / 100).item()]
    with pytest.raises(CheckFailed, match="two batches.*percentiles of all batches together"):
        check_percentile_observer(GlobalPercentile)

    class MinMaxInstead(GoodPercentile):
        def update(self, x):
            self.lows.append(x.min().item())
            self.highs.append(x.max().item())
    with pytest.raises(CheckFailed, match="min/max instead of the percentiles"):
        check_percentile_observer(MinMaxInstead)

    class FractionConfused(GoodPercentile):  # percentile used as a fraction: 99 -> clamps to the max
        def update(self, x):
            flat = x.flatten().float()
            self.lows.append(torch.quantile(flat, 0.01 * (1 - self.percentile / 100)).item())
            self.highs.append(torch.quantile(flat, min(1.0, self.percentile / 1000 + 0.9)).item())
    with pytest.raises(CheckFailed, match="expected scale="):
        check_percentile_observer(FractionConfused)

    class NoZero(GoodPercentile):
        def compute(self, bits):
            lo, hi = sum(self.lows) / len(self.lows), sum(self.highs) / len(self.highs)
            scale = (hi - lo) / (2**bits - 1)
            return scale, round(-lo / scale)
    with pytest.raises(CheckFailed, match="all-positive batch.*include 0"):
        check_percentile_observer(NoZero)


@pytest.fixture(scope="module")
def tiny_ptq_setup():
    torch.manual_seed(0)
    model = build_model("smallcnn").eval()
    x = torch.randn(48, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (48,), generator=torch.Generator().manual_seed(2))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    return model, loader


def test_check_observer_calibration_both_directions(tiny_ptq_setup, capsys):
    model, loader = tiny_ptq_setup
    result = check_observer_calibration(GoodMinMax, model, loader, loader, bits=4, num_batches=3)
    out = capsys.readouterr().out
    assert "✅ check_observer_calibration passed: your observer calibrated all 5 activation quantizers" in out
    assert "W4A4 PTQ test accuracy" in out
    assert result["quantizers"] == 5 and result["accuracy"] == result["reference_accuracy"]
    with pytest.raises(CheckFailed, match=r"compute\(\) returned None"):
        check_observer_calibration(Untouched, model, loader)

    class LastBatchOnly(GoodMinMax):
        def update(self, x):
            self.min_val, self.max_val = x.min().item(), x.max().item()
    # the hand-made cases run first: the mistake gets their message, never a pass on the real model
    with pytest.raises(CheckFailed, match="only remembers the last batch"):
        check_observer_calibration(LastBatchOnly, model, loader, num_batches=3)

    class LastBigBatchOnly(GoodMinMax):  # right on the hand-made batches, wrong on a model's activations
        def update(self, x):
            if x.numel() > 1000:
                self.min_val = self.max_val = None
            super().update(x)
    with pytest.raises(CheckFailed, match="MinMaxObserver gives scale=.* on the same 3 batches"):
        check_observer_calibration(LastBigBatchOnly, model, loader, num_batches=3)


def test_check_asymmetric_qparams_catches_a_truncated_zero_point():
    def truncated(lo, hi, bits):
        scale, _ = good_qparams(lo, hi, bits)
        return scale, int(-min(float(lo), 0.0) / scale)
    # [-0.35, 1] at 4 bits: scale 0.09, -lo / scale = 3.89 -> 4; int() gives 3
    with pytest.raises(CheckFailed, match=r"\[-0\.35, 1\] at 4 bits: expected scale=0\.09, zero_point=4 but got "
                                          r"scale=0\.09, zero_point=3\. -lo / scale = 3\.889 and your zero_point is 3: "
                                          r"the zero_point was truncated/floored .* Use round\(\)"):
        check_asymmetric_qparams(truncated)


def test_check_minmax_observer_names_zero_points_off_by_one():
    class Truncated(GoodMinMax):
        def compute(self, bits):
            scale, _ = good_qparams(self.min_val, self.max_val, bits)
            return scale, int(-min(self.min_val, 0.0) / scale)
    with pytest.raises(CheckFailed, match=r"at 4 bits: .*zero_point=5\. -lo / scale = 5\.551 and your zero_point is 5: "
                                          r"the zero_point was truncated/floored"):
        check_minmax_observer(Truncated)

    class OneTooMany(GoodMinMax):
        def compute(self, bits):
            scale, zero_point = good_qparams(self.min_val, self.max_val, bits)
            return scale, zero_point + 1 if zero_point < 2**bits - 1 else zero_point - 1
    with pytest.raises(CheckFailed, match=r"The zero_point is off by one: -lo / scale = 85, so zero_point = "
                                          r"round\(-lo / scale\) = 85"):
        check_minmax_observer(OneTooMany)


class PerChannelMinMax(GoodMinMax):  # x.amin(dim=0): one value per channel
    def update(self, x):
        lo, hi = x.amin(dim=0), x.amax(dim=0)
        self.min_val = lo if self.min_val is None else torch.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else torch.maximum(self.max_val, hi)


def test_minmax_observer_checks_name_a_per_channel_state(tiny_ptq_setup):
    message = (r"after update\(\), observer\.min_val is a tensor of shape \(3, 4, 4\), one value per channel "
               r"\(x\.amin\(dim=\.\.\.\) or x\.min\(dim=\.\.\.\)\)\. The observer keeps one number per tensor")
    with pytest.raises(CheckFailed, match=message):
        check_minmax_observer(PerChannelMinMax)
    model, loader = tiny_ptq_setup
    with pytest.raises(CheckFailed, match=r"observer\.min_val is a tensor of shape \(3, 4, 4\), one value per "
                                          r"channel"):
        check_observer_calibration(PerChannelMinMax, model, loader, num_batches=3)

    class MinWithDim(GoodMinMax):  # x.min(dim=0) returns (values, indices)
        def update(self, x):
            self.min_val, self.max_val = x.min(dim=0), x.max(dim=0)
    with pytest.raises(CheckFailed, match=r"observer\.min_val is a min \(values, indices\)"):
        check_minmax_observer(MinWithDim)


def test_check_percentile_observer_hint_uses_ordinals():
    class WrongPercentile(GoodPercentile):  # 90th instead of 99th: matches neither min/max nor pooled percentiles
        def update(self, x):
            flat = x.flatten().float()
            self.lows.append(torch.quantile(flat, 0.1).item())
            self.highs.append(torch.quantile(flat, 0.9).item())
    with pytest.raises(CheckFailed, match=r"Per batch, lo is the 1st and hi the 99th percentile of all its values"):
        check_percentile_observer(WrongPercentile)


def test_check_observer_calibration_prints_a_table_per_quantizer(tiny_ptq_setup, capsys):
    model, loader = tiny_ptq_setup
    check_observer_calibration(GoodMinMax, model, loader, bits=4, num_batches=3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["activation", "quantizer", "bits", "min", "max", "scale", "zero_point"]
    rows = [line.split() for line in lines[1:6]]
    # the first and the last layer keep 8-bit inputs; the others get bits=4
    assert [(name, int(b)) for name, b, *_ in rows] == [
        ("features.0.input_quant", 8), ("features.4.input_quant", 4), ("features.8.input_quant", 4),
        ("classifier.2.input_quant", 4), ("classifier.5.input_quant", 8)]
    for name, qbits, lo, hi, scale, zero_point in rows:
        lo, hi, scale, qmax = float(lo), float(hi), float(scale), 2**int(qbits) - 1
        # min-max: scale = (max(hi, 0) - min(lo, 0)) / (2^bits - 1), zero_point = round(-min(lo, 0) / scale)
        assert scale == pytest.approx((max(hi, 0) - min(lo, 0)) / qmax, rel=2e-3, abs=1e-5)
        assert int(zero_point) == round(-min(lo, 0) / scale)
