"""BatchNorm folding, observers, activation quantizer and the PTQ driver."""
import pytest
import torch
from torch import nn

from qsal_lab.models import build_model
from qsal_lab.quant import (OBSERVERS, ActQuantizer, MinMaxObserver, MSEObserver, PercentileObserver, PTQConfig,
                            QATConfig, QuantConv2d, QuantLinear, describe_quantization, fold_batchnorm, make_observer,
                            ptq_model, quantize_model)
from qsal_lab.quant.primitives import calc_qparams, fake_quantize


def _with_random_bn_stats(model, seed=0):
    """BatchNorm layers with non-trivial statistics, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
    return model


@pytest.mark.parametrize("name,in_ch,size,side", [("smallcnn", 1, 28, 28), ("resnet20", 3, 32, 16), ("resnet18", 3, 28, 8)])
def test_fold_batchnorm_matches_the_eval_model(name, in_ch, size, side):
    torch.manual_seed(0)
    model = _with_random_bn_stats(build_model(name, in_channels=in_ch, image_size=size))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.Identity) for m in folded.modules()) == n_bn
    assert model.training and sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn  # untouched
    assert not folded.training
    x = torch.randn(2, in_ch, side, side)
    with torch.no_grad():
        expected, got = model.eval()(x), folded(x)
    assert torch.allclose(got, expected, atol=1e-5 * max(1.0, expected.abs().max().item()))


def test_fold_batchnorm_by_hand():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    conv.weight.data.fill_(2.0)
    bn = nn.BatchNorm2d(1, eps=0.0).eval()
    bn.running_mean.fill_(1.0), bn.running_var.fill_(4.0), bn.weight.data.fill_(3.0), bn.bias.data.fill_(0.5)
    folded = fold_batchnorm(nn.Sequential(conv, bn))
    # w' = 2 * 3 / sqrt(4) = 3; b' = (0 - 1) * 3 / 2 + 0.5 = -1
    assert folded[0].weight.item() == 3.0 and folded[0].bias.item() == -1.0
    assert isinstance(folded[1], nn.Identity)


def test_fold_skips_bn_whose_input_is_not_a_conv():
    model = nn.Sequential(nn.Linear(4, 4), nn.Unflatten(1, (4, 1, 1)), nn.BatchNorm2d(4))
    folded = fold_batchnorm(model)
    assert isinstance(folded[2], nn.BatchNorm2d)


def test_minmax_observer_is_exact():
    obs = MinMaxObserver()
    obs.update(torch.tensor([0.5, -1.0, 2.0]))
    obs.update(torch.tensor([3.0, 0.0]))
    assert (obs.min_val.item(), obs.max_val.item()) == (-1.0, 3.0)
    scale, zp = obs.compute(8, signed=False)
    assert scale.item() == pytest.approx(4 / 255) and zp.item() == 64


def _data_with_outliers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    x[:4] = torch.tensor([40.0, -30.0, 35.0, 50.0])
    return x


def test_percentile_observer_clips_outliers():
    x = _data_with_outliers()
    obs = PercentileObserver(99.9)
    for chunk in x.chunk(4):
        obs.update(chunk)
    lo, hi = obs.clip_range(8, False, False)
    assert 2.0 < hi < 5.0 and -5.0 < lo < -2.0  # the 0.1 % tails of N(0, 1), not +-50
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(percentile=30)


def test_mse_observer_beats_minmax_on_data_with_outliers_at_4_bits():
    x = _data_with_outliers()
    errors = {}
    for name, obs in [("minmax", MinMaxObserver()), ("mse", MSEObserver())]:
        for chunk in x.chunk(4):
            obs.update(chunk)
        scale, zp = obs.compute(4, signed=False)
        errors[name] = (fake_quantize(x, scale, zp, 4, signed=False) - x).square().mean().item()
    assert errors["mse"] < 0.5 * errors["minmax"]


def test_observer_registry_and_errors():
    assert set(OBSERVERS) == {"minmax", "percentile", "mse"}
    assert isinstance(make_observer("mse"), MSEObserver)
    with pytest.raises(ValueError, match="unknown observer 'kl'; choose one of: minmax, percentile, mse"):
        make_observer("kl")
    with pytest.raises(ValueError, match="choose one of"):
        PTQConfig(observer="histogram")
    with pytest.raises(RuntimeError, match="seen no data"):
        MinMaxObserver().compute(8)


def test_act_quantizer_calibrates_then_fake_quantizes():
    aq = ActQuantizer(bits=2)
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    assert torch.equal(aq(x), x)  # calibrating: records, passes through
    aq.freeze()
    assert bool(aq.frozen)
    scale, zp = calc_qparams(-1.0, 2.0, 2, symmetric=False, signed=False)
    assert aq.scale.item() == scale.item() and aq.zero_point.item() == zp.item() == 1
    assert aq(torch.tensor([-1.0, 0.4, 0.6, 5.0])).tolist() == [-1.0, 0.0, 1.0, 2.0]
    assert set(aq.state_dict()) == {"scale", "zero_point", "frozen"}


def _calib_batches(shape, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, *shape, generator=g), torch.zeros(16, dtype=torch.long)) for _ in range(n)]


def _relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_ptq_w8a8_is_close_and_w2a2_is_not():
    torch.manual_seed(0)
    model = _with_random_bn_stats(build_model("smallcnn")).eval()
    calib = _calib_batches((1, 28, 28))
    x = torch.randn(32, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        w8a8 = ptq_model(model, PTQConfig(w_bits=8, a_bits=8), calib, num_batches=4, progress=False)
        w2a2 = ptq_model(model, PTQConfig(w_bits=2, a_bits=2), calib, num_batches=4, progress=False)
        assert _relative_error(w8a8(x), expected) < 0.03
        assert _relative_error(w2a2(x), expected) > 0.3
    assert not w8a8.training and isinstance(w8a8.qsal_config, PTQConfig)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the float model is untouched
    rows = describe_quantization(w2a2)
    assert [(r.w_bits, r.a_bits) for r in rows] == [(8, 8), (2, 2), (2, 2), (2, 2), (8, 8)]
    layers = [m for m in w2a2.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert all(m.weight_quant == "symmetric" and m.per_channel and bool(m.input_quant.frozen) for m in layers)


@pytest.mark.parametrize("observer", ["percentile", "mse"])
def test_ptq_with_other_observers(observer):
    torch.manual_seed(0)
    model = _with_random_bn_stats(build_model("smallcnn")).eval()
    x = torch.randn(16, 1, 28, 28)
    qmodel = ptq_model(model, PTQConfig(observer=observer), _calib_batches((1, 28, 28), n=2), progress=False)
    with torch.no_grad():
        assert _relative_error(qmodel(x), model(x)) < 0.05


def test_ptq_calibrates_on_at_most_num_batches():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            if isinstance(x, torch.Tensor):  # fold_batchnorm's torch.fx trace passes a Proxy
                seen.append(x.shape[0])
            return x

    model = nn.Sequential(Recorder(), nn.Flatten(), nn.Linear(4, 2))
    batches = [(torch.randn(b, 4), None) for b in (3, 5, 7, 9)]
    ptq_model(model, PTQConfig(), batches, num_batches=2, progress=False)
    assert seen == [3, 5]
    with pytest.raises(ValueError, match="no batches"):
        ptq_model(model, PTQConfig(), [], progress=False)


def test_ptq_misuse_errors():
    with pytest.raises(TypeError, match="PTQConfig"):
        ptq_model(build_model("smallcnn"), QATConfig(), [])
    with pytest.raises(ValueError, match="already quantized"):
        fold_batchnorm(quantize_model(build_model("smallcnn")))
    with pytest.raises(ValueError, match=r"invalid bit width 9 for PTQConfig\.a_bits"):
        PTQConfig(a_bits=9)
