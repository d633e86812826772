"""Size accounting, bit packing and the packed file format (exact round trips, real file sizes)."""
import math
import os

import pytest
import torch
from torch import nn

from qsal_lab.models import build_model
from qsal_lab.quant import (PTQConfig, QATConfig, QuantConv2d, QuantLinear, load_packed, model_size_bytes,
                            pack_bits, ptq_model, quantize_model, save_packed, state_dict_bytes, unpack_bits)


def test_pack_bits_by_hand():
    # lowest bits first: 1 | 2 << 2 | 3 << 4 | 0 << 6 = 57
    assert pack_bits(torch.tensor([1, 2, 3, 0]), 2).tolist() == [57]
    assert pack_bits(torch.tensor([0xA, 0x5, 0x1]), 4).tolist() == [0x5A, 0x01]
    assert pack_bits(torch.tensor([200, 7]), 8).tolist() == [200, 7]
    assert pack_bits(torch.tensor([5, 5, 5]), 3).tolist() == [0b01101101, 0b1]  # 101 101 101, LSB first


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("count", [1, 13, 1000])
def test_pack_unpack_round_trip(bits, count):
    codes = torch.randint(0, 2**bits, (count,), generator=torch.Generator().manual_seed(bits + count))
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(count * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, count), codes)


def test_pack_bits_errors():
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack_bits(torch.tensor([16]), 4)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        pack_bits(torch.tensor([-1]), 2)
    with pytest.raises(TypeError, match="integer codes"):
        pack_bits(torch.tensor([1.0]), 4)
    with pytest.raises(ValueError, match="32-bit"):
        pack_bits(torch.tensor([1]), 32)
    with pytest.raises(ValueError, match="at most"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 4, 3)


def _mlp():
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 5))


def test_model_size_bytes_by_hand():
    assert model_size_bytes(_mlp()) == 4 * (220 + 420 + 105)
    config = QATConfig(w_bits=4, first_last_bits=8, weight_quant="symmetric")
    # weights 200 B (8 bit) + 200 B (4 bit) + 100 B (8 bit); per-channel scales 4 B x (20 + 20 + 5);
    # biases 4 B x 45; two PACT alphas 4 B each
    assert model_size_bytes(quantize_model(_mlp(), config)) == 500 + 180 + 180 + 8
    assert model_size_bytes(quantize_model(_mlp(), QATConfig(w_bits=4))) == 500 + 180 + 8  # DoReFa: no scales


def _trained_looking(model, seed=0):
    """Non-trivial BatchNorm statistics, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _quantized_weights(model):
    return {n: m.quantized_weight().detach() for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}


@pytest.mark.parametrize("weight_quant", ["dorefa", "symmetric"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_packed_qat_model_round_trips_exactly(tmp_path, weight_quant, bits):
    torch.manual_seed(bits)
    config = QATConfig(w_bits=bits, a_bits=bits, weight_quant=weight_quant)
    model = quantize_model(_trained_looking(build_model("smallcnn")), config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 0:  # PACT alphas: moved away from their initial value, as after training
                p.fill_(2.5)
    path = tmp_path / "model.qsal"
    size = save_packed(model, path)
    assert size == os.path.getsize(path)

    restored = load_packed(path, build_model("smallcnn"))
    assert restored.qsal_config == config and not restored.training
    ours, theirs = _quantized_weights(model), _quantized_weights(restored)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
    if bits != 4:
        return
    # saving the restored model again writes the same codes
    assert save_packed(restored, tmp_path / "again.qsal") == size
    again = load_packed(tmp_path / "again.qsal", build_model("smallcnn"))
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_packed_ptq_model_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    model = _trained_looking(build_model("smallcnn")).eval()
    calib = [(torch.randn(8, 1, 28, 28), None) for _ in range(2)]
    qmodel = ptq_model(model, PTQConfig(w_bits=4, a_bits=8), calib, progress=False)
    save_packed(qmodel, tmp_path / "ptq.qsal", build={"name": "smallcnn"})
    restored = load_packed(tmp_path / "ptq.qsal")  # the architecture comes from the stored build arguments
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(restored(x), qmodel(x))


def test_packed_file_sizes(tmp_path):
    float_model = build_model("smallcnn")
    float_file = tmp_path / "float.pt"
    torch.save(float_model.state_dict(), float_file)
    assert os.path.getsize(float_file) == pytest.approx(state_dict_bytes(float_model), abs=2000)
    ratios = {}
    for bits in (2, 4, 8):
        model = quantize_model(build_model("smallcnn"), QATConfig(w_bits=bits, a_bits=bits))
        ratios[bits] = save_packed(model, tmp_path / f"w{bits}.qsal") / os.path.getsize(float_file)
        # the file holds what model_size_bytes counts + BatchNorm running statistics + a small index
        assert save_packed(model, tmp_path / "x.qsal") <= model_size_bytes(model) + 6000
    assert ratios[4] <= 0.14
    assert ratios[2] <= 0.075
    assert 0.2 < ratios[8] <= 0.26


def test_load_packed_errors(tmp_path):
    model = quantize_model(build_model("smallcnn"), QATConfig())
    save_packed(model, tmp_path / "m.qsal")
    with pytest.raises(ValueError, match="does not record its architecture"):
        load_packed(tmp_path / "m.qsal")
    with pytest.raises(ValueError, match="same architecture"):
        load_packed(tmp_path / "m.qsal", build_model("smallcnn", num_classes=5))
    with pytest.raises(ValueError, match="skeleton was quantized with"):
        load_packed(tmp_path / "m.qsal", quantize_model(build_model("smallcnn"), QATConfig(w_bits=2)))
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a qsal-packed file"):
        load_packed(tmp_path / "other.pt", build_model("smallcnn"))
    with pytest.raises(ValueError, match="needs a quantized model"):
        save_packed(build_model("smallcnn"), tmp_path / "f.qsal")
