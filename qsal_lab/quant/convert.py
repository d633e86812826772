"""One call to make a float model quantization-aware: `quantize_model(model, QATConfig(...))`.

Every nn.Conv2d / nn.Linear becomes a QuantConv2d / QuantLinear that keeps the trained weight
(the very same Parameter, so an existing optimizer still sees it) and quantizes it in forward;
every nn.ReLU becomes a PACT activation. As in the PACT paper, the first and the last weight
layer (in module order) keep 8-bit weights: they are small and the most sensitive. Any layer may
get its own bit width by name (`layer_bits`, for mixed precision), which wins over both rules.

The same two layer classes serve post-training quantization (ptq.py): there they also carry an
input activation quantizer, and a layer restored from a packed file (packing.py) holds its
already-quantized weight (`prequantized=True`) instead of re-quantizing it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from .pact import PACT
from .primitives import FLOAT_BITS, validate_bits
from .weights import (WEIGHT_QUANTIZERS, dorefa_codes, dorefa_weight, symmetric_codes,
                      symmetric_weight)


@dataclass
class QATConfig:
    """Quantization-aware training settings (bits: 2..8, or 32 = leave in float).

    weight_quant: "dorefa" (as in the PACT paper) or "symmetric" (uniform, narrow range, per output
    channel when per_channel). alpha_l2: lambda for the PACT alpha penalty; the training loop adds
    alpha_l2 * pact_alpha_l2(model) to the loss. alpha_lr_scale: the alphas' learning rate relative
    to the weights' (AdamW moves each parameter about one learning rate per step, so a clipping level
    of order 1-10 barely moves in a short fine-tuning unless it learns faster). layer_bits: per-layer
    bit widths by module name, e.g. {"layers.2.0.conv1": 2} (that conv's weights) or {"layers.2.0.relu1": 2}
    (that activation); they win over w_bits, a_bits and first_last_bits. quantize_model checks the names
    against the model and lists the valid ones.
    """

    w_bits: int = 4
    a_bits: int = 4
    first_last_bits: int = 8
    weight_quant: str = "dorefa"
    pact_alpha: float = 10.0
    alpha_l2: float = 2e-4
    alpha_lr_scale: float = 1.0
    per_channel: bool = True
    layer_bits: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self):
        for name in ("w_bits", "a_bits", "first_last_bits"):
            validate_bits(getattr(self, name), f"QATConfig.{name}")
        self.layer_bits = check_layer_bits_values(self.layer_bits, "QATConfig")
        check_weight_quant(self.weight_quant)
        if not float(self.pact_alpha) > 0:
            raise ValueError(f"QATConfig.pact_alpha must be > 0 (PACT's initial clipping level), got {self.pact_alpha!r}")
        if not float(self.alpha_l2) >= 0:
            raise ValueError(f"QATConfig.alpha_l2 must be >= 0, got {self.alpha_l2!r}")
        if not float(self.alpha_lr_scale) > 0:
            raise ValueError(f"QATConfig.alpha_lr_scale must be > 0, got {self.alpha_lr_scale!r}")


def check_layer_bits_values(layer_bits, owner: str, pairs: bool = False) -> dict:
    """layer_bits as a plain {name: bits} dict with valid bit widths (pairs: bits may be (w_bits, a_bits))."""
    if layer_bits is None:
        return {}
    if not isinstance(layer_bits, dict) or not all(isinstance(k, str) for k in layer_bits):
        raise TypeError(f"{owner}.layer_bits maps layer names to bit widths, e.g. {{'layers.2.0.conv1': 2}}; "
                        f"got {layer_bits!r}")
    out = {}
    for name, bits in layer_bits.items():
        if pairs and isinstance(bits, (tuple, list)):
            if len(bits) != 2:
                raise ValueError(f"{owner}.layer_bits[{name!r}] must be bits or (w_bits, a_bits), got {bits!r}")
            out[name] = (validate_bits(bits[0], f"{owner}.layer_bits[{name!r}] w_bits"),
                         validate_bits(bits[1], f"{owner}.layer_bits[{name!r}] a_bits"))
        else:
            out[name] = validate_bits(bits, f"{owner}.layer_bits[{name!r}]")
    return out


def check_layer_names(layer_bits: dict, valid: list[str], owner: str):
    """Raise a ValueError naming every unknown layer in layer_bits and listing the valid names."""
    unknown = [n for n in layer_bits if n not in valid]
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{owner}.layer_bits names no layer of this model: {', '.join(map(repr, unknown))}{hint}; "
                         f"valid names: {', '.join(valid)}")


def layer_names(model: nn.Module) -> dict[str, list[str]]:
    """The names layer_bits may use: {'weights': every Conv2d/Linear, 'activations': every ReLU (or PACT)}."""
    return {"weights": [n for n, _ in weight_layers(model)],
            "activations": [n for n, m in model.named_modules() if isinstance(m, (nn.ReLU, PACT))]}


def check_weight_quant(name):
    if name not in WEIGHT_QUANTIZERS:
        raise ValueError(f"unknown weight quantizer {name!r}; choose one of: {', '.join(WEIGHT_QUANTIZERS)}")
    return name


class _QuantWeight:
    """Weight quantization shared by QuantConv2d and QuantLinear (mixed into the nn layer class)."""

    def _setup(self, w_bits, weight_quant, per_channel, input_quant):
        self.w_bits = validate_bits(w_bits, "w_bits")
        self.weight_quant = check_weight_quant(weight_quant)
        self.per_channel = bool(per_channel)
        self.prequantized = False  # True once restored from a packed file: weight holds w_q itself
        self.input_quant = input_quant  # a module (PTQ's ActQuantizer) or None

    def quantized_weight(self) -> torch.Tensor:
        if self.w_bits == FLOAT_BITS or self.prequantized:
            return self.weight
        if self.weight_quant == "dorefa":
            return dorefa_weight(self.weight, self.w_bits)
        return symmetric_weight(self.weight, self.w_bits, self.per_channel)

    def weight_codes(self):
        """(codes, scale) of the quantized weight: see weights.dorefa_codes / weights.symmetric_codes."""
        if self.w_bits == FLOAT_BITS:
            raise ValueError("this layer keeps float weights (w_bits=32): there are no codes")
        w, n = self.weight.detach(), 2**self.w_bits - 1
        if self.weight_quant == "dorefa":
            if self.prequantized:  # w is already code * 2/n - 1: invert that (exactly, after rounding)
                return torch.round((w + 1.0) * (n / 2.0)).to(torch.int64), 2.0 / n
            return dorefa_codes(w, self.w_bits)
        scale = self.weight_scale if self.prequantized else None
        return symmetric_codes(w, self.w_bits, self.per_channel, scale=scale)

    def restore_quantized(self, weight: torch.Tensor, scale=None):
        """Hold an already-quantized weight (from a packed file) and use it as is from now on."""
        with torch.no_grad():
            self.weight.copy_(weight)
        if self.weight_quant == "symmetric":
            self.register_buffer("weight_scale", torch.as_tensor(scale, dtype=torch.float32).clone())
        self.prequantized = True

    def _quant_repr(self):
        parts = [f"w_bits={self.w_bits}"]
        if self.w_bits != FLOAT_BITS:
            parts.append(f"weight_quant={self.weight_quant}")
            if self.weight_quant == "symmetric":
                parts.append("per_channel" if self.per_channel else "per_tensor")
        if self.prequantized:
            parts.append("prequantized")
        return ", ".join(parts)


class QuantConv2d(_QuantWeight, nn.Conv2d):
    """nn.Conv2d whose weight is quantized in forward (and optionally its input, for PTQ)."""

    def __init__(self, *args, w_bits=8, weight_quant="symmetric", per_channel=True, input_quant=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(w_bits, weight_quant, per_channel, input_quant)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, **quant) -> "QuantConv2d":
        """Wrap a trained conv: the new layer shares its weight and bias Parameters."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, device="meta", **quant)
        q.weight, q.bias = conv.weight, conv.bias
        return q.train(conv.training)

    def forward(self, x):
        if self.input_quant is not None:
            x = self.input_quant(x)
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self):
        return super().extra_repr() + ", " + self._quant_repr()


class QuantLinear(_QuantWeight, nn.Linear):
    """nn.Linear whose weight is quantized in forward (and optionally its input, for PTQ)."""

    def __init__(self, *args, w_bits=8, weight_quant="symmetric", per_channel=True, input_quant=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(w_bits, weight_quant, per_channel, input_quant)

    @classmethod
    def from_float(cls, linear: nn.Linear, **quant) -> "QuantLinear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta", **quant)
        q.weight, q.bias = linear.weight, linear.bias
        return q.train(linear.training)

    def forward(self, x):
        if self.input_quant is not None:
            x = self.input_quant(x)
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self):
        return super().extra_repr() + ", " + self._quant_repr()


QUANT_LAYERS = (QuantConv2d, QuantLinear)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Conv2d and Linear, in module (registration) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def replace_module(model: nn.Module, name: str, new: nn.Module):
    parent_name, _, child = name.rpartition(".")
    if not child:
        raise ValueError("cannot replace the model itself; wrap the layer in an nn.Module")
    setattr(model.get_submodule(parent_name), child, new)


def check_float_model(model: nn.Module, verb: str):
    if not isinstance(model, nn.Module):
        raise TypeError(f"{verb} expects a torch.nn.Module, got {type(model).__name__}")
    if getattr(model, "qsal_config", None) is not None or any(isinstance(m, QUANT_LAYERS + (PACT,)) for m in model.modules()):
        raise ValueError(f"{verb} expects a float model, but this one is already quantized; start from the float model")


def quant_layer_from_float(layer: nn.Module, **quant) -> nn.Module:
    cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
    return cls.from_float(layer, **quant)


def _model_device(model: nn.Module):
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def quantize_model(model: nn.Module, config: QATConfig | None = None) -> nn.Module:
    """Make `model` quantization-aware in place (and return it): Quant layers + PACT activations.

    The trained weights are kept; the config is stored as `model.qsal_config`.
    """
    config = QATConfig() if config is None else config
    if not isinstance(config, QATConfig):
        raise TypeError(f"quantize_model needs a QATConfig, got {type(config).__name__}; "
                        f"for post-training quantization use ptq_model(model, PTQConfig(...), calib_loader)")
    config.validate()
    check_float_model(model, "quantize_model")
    layers = weight_layers(model)
    if not layers:
        raise ValueError("quantize_model found no nn.Conv2d or nn.Linear layer to quantize")
    names = layer_names(model)
    check_layer_names(config.layer_bits, names["weights"] + names["activations"], "QATConfig")
    edges = {layers[0][0], layers[-1][0]}
    for name, layer in layers:
        bits = config.layer_bits.get(name, config.first_last_bits if name in edges else config.w_bits)
        replace_module(model, name, quant_layer_from_float(layer, w_bits=bits, weight_quant=config.weight_quant,
                                                           per_channel=config.per_channel))
    device = _model_device(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.ReLU):
            replace_module(model, name, PACT(config.layer_bits.get(name, config.a_bits), config.pact_alpha).to(device))
    model.qsal_config = config
    return model


class QuantRow(NamedTuple):
    layer: str
    kind: str
    w_bits: int | None
    a_bits: int | None


def describe_quantization(model: nn.Module) -> list[QuantRow]:
    """One row per weight layer and activation quantizer: (layer, kind, w_bits, a_bits).

    w_bits=32 is a float weight; a_bits is the PACT bit width, or the input quantizer's bit width
    of a PTQ layer (None when the layer does not quantize its input).
    """
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, QUANT_LAYERS):
            a_bits = getattr(m.input_quant, "bits", None)
            kind = f"{type(m).__name__} ({m.weight_quant})" if m.w_bits != FLOAT_BITS else type(m).__name__
            rows.append(QuantRow(name, kind, m.w_bits, a_bits))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            rows.append(QuantRow(name, type(m).__name__, FLOAT_BITS, None))
        elif isinstance(m, PACT):
            rows.append(QuantRow(name, "PACT", None, m.bits))
    return rows
