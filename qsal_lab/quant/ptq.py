"""Post-training quantization (PTQ): quantize a trained float model without retraining.

    folded = fold_batchnorm(model)           conv + BN -> one conv (what an int8 runtime runs)
    qmodel = ptq_model(model, PTQConfig(w_bits=8, a_bits=8), calib_loader)

ptq_model folds BatchNorm, swaps every Conv2d/Linear for a Quant layer with symmetric per-channel
weights and an input activation quantizer (per tensor, asymmetric, unsigned), runs a few
calibration batches through the model while observers record the activation ranges, then
freezes the quantizers. The first conv's quantized input is the image itself, as in
onnxruntime's QDQ format, so W8A8 here mimics onnxruntime's static int8 quantization
(U8 asymmetric activations, S8 symmetric per-channel weights).

Observers turn recorded activations into a clipping range:
    minmax      the full range seen (exact, but one outlier stretches the grid)
    percentile  the p-th percentile (default 99.99 %), averaged over batches: clips outliers
    mse         the range (a fraction of min..max) with the least quantization MSE on a sample
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
import torch.fx
from tqdm.auto import tqdm

from .convert import (check_float_model, check_layer_bits_values, check_layer_names, quant_layer_from_float,
                      replace_module, weight_layers)
from .primitives import FLOAT_BITS, calc_qparams, fake_quantize, qrange, validate_bits


# ----------------------------------------------------------------------------- BatchNorm folding

def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d):
    """w' = w * gamma / sqrt(var + eps);  b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
    with torch.no_grad():
        var, mean = bn.running_var.double(), bn.running_mean.double()
        gamma = bn.weight.double() if bn.affine else torch.ones_like(var)
        beta = bn.bias.double() if bn.affine else torch.zeros_like(var)
        factor = gamma / torch.sqrt(var + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
        conv.weight.copy_(conv.weight.double() * factor.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(((bias - mean) * factor + beta).to(conv.weight.dtype))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every Conv2d -> BatchNorm2d pair folded into the conv.

    Pairs are found on the torch.fx graph (the BN's input must be the conv's only use); each
    folded BN becomes nn.Identity, so module names stay the same. Outputs match the eval-mode
    original up to float rounding.
    """
    check_float_model(model, "fold_batchnorm")
    model = copy.deepcopy(model).eval()
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # fx cannot trace data-dependent control flow
        raise TypeError(f"fold_batchnorm finds conv -> BatchNorm pairs with torch.fx, which could not trace "
                        f"{type(model).__name__}: {e}") from e
    modules = dict(model.named_modules())
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        bn, src = modules[node.target], node.args[0]
        foldable = (isinstance(src, torch.fx.Node) and src.op == "call_module"
                    and isinstance(modules[src.target], nn.Conv2d) and len(src.users) == 1
                    and calls[src.target] == 1 and calls[node.target] == 1 and bn.running_var is not None)
        if foldable:
            _fold_conv_bn(modules[src.target], bn)
            replace_module(model, node.target, nn.Identity())
    return model


# ----------------------------------------------------------------------------- observers

class Observer:
    """Records tensors with `update(x)`; `compute(bits, signed)` returns (scale, zero_point)."""

    def update(self, x: torch.Tensor):
        raise NotImplementedError

    def clip_range(self, bits: int, signed: bool, symmetric: bool):
        raise NotImplementedError

    def compute(self, bits: int, signed: bool = False, symmetric: bool = False):
        if not getattr(self, "seen", 0):
            raise RuntimeError(f"{type(self).__name__} has seen no data: call update(x) on calibration batches first")
        lo, hi = self.clip_range(bits, signed, symmetric)
        return calc_qparams(lo, hi, bits, symmetric, signed)


class MinMaxObserver(Observer):
    """Clip to the smallest and largest value seen."""

    def __init__(self):
        self.min_val = self.max_val = None
        self.seen = 0

    def update(self, x):
        lo, hi = torch.aminmax(x.detach().float())
        self.min_val = lo if self.min_val is None else torch.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else torch.maximum(self.max_val, hi)
        self.seen += 1

    def clip_range(self, bits, signed, symmetric):
        return self.min_val, self.max_val


class PercentileObserver(Observer):
    """Clip to the (100 - p)-th and p-th percentiles of each batch, averaged over batches.

    Batches larger than `max_samples` values are randomly subsampled first (exact selection on
    millions of values per layer and batch would dominate calibration time).
    """

    def __init__(self, percentile: float = 99.99, max_samples: int = 2**20, seed: int = 0):
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100], got {percentile!r} (e.g. 99.99)")
        self.percentile, self.max_samples = percentile, max_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.lo_sum = self.hi_sum = 0.0
        self.seen = 0

    def update(self, x):
        flat = x.detach().float().flatten()
        if flat.numel() > self.max_samples:
            flat = flat[torch.randint(flat.numel(), (self.max_samples,), generator=self.generator).to(flat.device)]
        n = flat.numel()
        k_hi = min(n, max(1, math.ceil(self.percentile / 100 * n)))
        self.hi_sum += flat.kthvalue(k_hi).values.item()
        self.lo_sum += flat.kthvalue(n + 1 - k_hi).values.item()
        self.seen += 1

    def clip_range(self, bits, signed, symmetric):
        return self.lo_sum / self.seen, self.hi_sum / self.seen


class MSEObserver(Observer):
    """Grid search: the clipping range f * [min, max] (f in (0, 1]) with the smallest quantization MSE.

    The MSE is measured on a random sample of `samples_per_batch` values per batch (plus each
    batch's extremes), so calibration stays fast on large activations.
    """

    def __init__(self, num_candidates: int = 100, samples_per_batch: int = 16384, seed: int = 0):
        self.minmax = MinMaxObserver()
        self.num_candidates, self.samples_per_batch = num_candidates, samples_per_batch
        self.generator = torch.Generator().manual_seed(seed)
        self.samples = []
        self.seen = 0

    def update(self, x):
        flat = x.detach().float().flatten()
        self.minmax.update(flat)
        if flat.numel() > self.samples_per_batch:
            idx = torch.randint(flat.numel(), (self.samples_per_batch,), generator=self.generator).to(flat.device)
            flat = torch.cat([flat[idx], flat.min().reshape(1), flat.max().reshape(1)])
        self.samples.append(flat.cpu())
        self.seen += 1

    def clip_range(self, bits, signed, symmetric):
        x = torch.cat(self.samples)
        f = torch.linspace(1.0 / self.num_candidates, 1.0, self.num_candidates)
        lo, hi = self.minmax.min_val.cpu() * f, self.minmax.max_val.cpu() * f  # one candidate range per row
        scale, zero_point = calc_qparams(lo, hi, bits, symmetric, signed)
        qmin, qmax = qrange(bits, signed)
        errors = []
        for rows in torch.arange(self.num_candidates).split(8):  # 8 candidates at a time bounds the memory
            s, z = scale[rows, None], zero_point[rows, None]
            x_hat = (torch.round(x / s).add_(z).clamp_(qmin, qmax).sub_(z)).mul_(s)
            errors.append((x_hat - x).square_().mean(dim=1))
        best = int(torch.cat(errors).argmin())
        return lo[best], hi[best]


OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "mse": MSEObserver}


def make_observer(name: str) -> Observer:
    if name not in OBSERVERS:
        raise ValueError(f"unknown observer {name!r}; choose one of: {', '.join(OBSERVERS)}")
    return OBSERVERS[name]()


# ----------------------------------------------------------------------------- activation quantizer

class ActQuantizer(nn.Module):
    """Per-tensor asymmetric unsigned fake quantizer for activations.

    Until `freeze()` it only records its input (the model runs in float); afterwards it
    fake-quantizes with the frozen scale and zero_point, which live in the state_dict.
    """

    def __init__(self, bits: int = 8, observer: str = "minmax"):
        super().__init__()
        self.bits = validate_bits(bits, "a_bits")
        self.observer = make_observer(observer)
        self.observer_name = observer
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("frozen", torch.tensor(False))

    def forward(self, x):
        if self.bits == FLOAT_BITS:
            return x
        if not self.frozen:
            self.observer.update(x)
            return x
        return fake_quantize(x, self.scale, self.zero_point, self.bits, signed=False)

    @torch.no_grad()
    def freeze(self):
        if self.bits != FLOAT_BITS:
            scale, zero_point = self.observer.compute(self.bits, signed=False, symmetric=False)
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point)
        self.frozen.fill_(True)
        self.observer = make_observer(self.observer_name)  # drop the recorded samples

    def extra_repr(self):
        state = f"scale={self.scale.item():.4g}, zero_point={self.zero_point.item()}" if self.frozen else "calibrating"
        return f"bits={self.bits}, observer={self.observer_name}, {state}"


# ----------------------------------------------------------------------------- PTQ driver

@dataclass
class PTQConfig:
    """Post-training quantization settings (bits: 2..8, or 32 = leave in float).

    layer_bits: per-layer bit widths by weight-layer name, {"layers.2.0.conv1": 2} (that layer's weights and its
    input activation) or {"layers.2.0.conv1": (2, 8)} (w_bits, a_bits); they win over the other fields. With
    w_bits = a_bits = first_last_bits = 32 and one entry, only that layer is quantized (a sensitivity scan)."""

    w_bits: int = 8
    a_bits: int = 8
    observer: str = "minmax"
    first_last_bits: int = 8
    per_channel: bool = True
    layer_bits: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self):
        for name in ("w_bits", "a_bits", "first_last_bits"):
            validate_bits(getattr(self, name), f"PTQConfig.{name}")
        self.layer_bits = check_layer_bits_values(self.layer_bits, "PTQConfig", pairs=True)
        if self.observer not in OBSERVERS:
            raise ValueError(f"unknown observer {self.observer!r}; choose one of: {', '.join(OBSERVERS)}")


def prepare_ptq(model: nn.Module, config: PTQConfig) -> nn.Module:
    """Folded copy of `model` with Quant layers whose input quantizers are still calibrating."""
    if not isinstance(config, PTQConfig):
        raise TypeError(f"PTQ needs a PTQConfig, got {type(config).__name__}; for QAT use quantize_model(model, QATConfig(...))")
    config.validate()
    model = fold_batchnorm(model)
    layers = weight_layers(model)
    if not layers:
        raise ValueError("ptq_model found no nn.Conv2d or nn.Linear layer to quantize")
    check_layer_names(config.layer_bits, [n for n, _ in layers], "PTQConfig")
    edges = {layers[0][0], layers[-1][0]}
    device = next(model.parameters()).device
    for name, layer in layers:
        w_bits, a_bits = (config.first_last_bits,) * 2 if name in edges else (config.w_bits, config.a_bits)
        if name in config.layer_bits:
            bits = config.layer_bits[name]
            w_bits, a_bits = bits if isinstance(bits, tuple) else (bits, bits)
        act = ActQuantizer(a_bits, config.observer).to(device)
        replace_module(model, name, quant_layer_from_float(layer, w_bits=w_bits, weight_quant="symmetric",
                                                           per_channel=config.per_channel, input_quant=act))
    model.qsal_config = config
    return model.eval()


@torch.no_grad()
def calibrate(model: nn.Module, calib_loader, num_batches: int = 8, progress: bool = True) -> int:
    """Run up to `num_batches` batches ((x, y) or x) through the model; return how many ran."""
    if not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")
    model.eval()
    device = next(model.parameters()).device
    total = min(num_batches, len(calib_loader)) if hasattr(calib_loader, "__len__") else num_batches
    seen = 0
    for batch in tqdm(calib_loader, total=total, desc="calibrate", disable=not progress, leave=False):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        model(x.to(device))
        seen += 1
        if seen == num_batches:
            break
    if seen == 0:
        raise ValueError("the calibration loader yielded no batches")
    return seen


def freeze_quantizers(model: nn.Module):
    for m in model.modules():
        if isinstance(m, ActQuantizer):
            m.freeze()


def ptq_model(model: nn.Module, config: PTQConfig | None, calib_loader, num_batches: int = 8,
              progress: bool = True) -> nn.Module:
    """A new fake-quantized eval-mode model: fold BN, swap layers, calibrate, freeze. `model` is untouched."""
    config = PTQConfig() if config is None else config
    qmodel = prepare_ptq(model, config)
    calibrate(qmodel, calib_loader, num_batches, progress)
    freeze_quantizers(qmodel)
    return qmodel.eval()
