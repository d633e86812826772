"""How big is a quantized model, really? Size accounting and a bit-packed file format.

`model_size_bytes` counts what deployment needs: each quantized weight at its bit width plus its
float32 scales, every other parameter in float32. `save_packed` writes such a file for real:
k-bit weight codes packed 8/k to a byte (any k in 2..8), scales and all other tensors in
float32, a few concatenated blobs plus a small index, via torch.save. `load_packed` rebuilds
the model and holds the stored quantized weights directly (re-quantizing would not be safe:
DoReFa is not idempotent, w_q != dorefa(w_q)), so outputs match the saved model bit for bit.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from ..models import build_model
from .convert import QUANT_LAYERS, QATConfig, quantize_model
from .primitives import FLOAT_BITS, validate_bits
from .ptq import ActQuantizer, PTQConfig, prepare_ptq
from .weights import dorefa_from_codes, symmetric_from_codes

FORMAT = "qsal-packed"
VERSION = 1


# ----------------------------------------------------------------------------- size accounting

def _packed_layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS) and m.w_bits != FLOAT_BITS]


def model_size_bytes(model: nn.Module) -> int:
    """Deployed size in bytes: quantized weights at w_bits (+ 4 bytes per scale), all else float32.

    Counts parameters (a float model is 4 bytes per parameter) plus the scale/zero-point of frozen
    activation quantizers; BatchNorm running statistics are not counted (they fold into the conv).
    """
    total, quantized = 0, set()
    for _, m in _packed_layers(model):
        total += math.ceil(m.weight.numel() * m.w_bits / 8)
        if m.weight_quant == "symmetric":
            total += 4 * (m.weight.shape[0] if m.per_channel else 1)
        quantized.add(id(m.weight))
    total += sum(8 for m in model.modules() if isinstance(m, ActQuantizer) and m.bits != FLOAT_BITS)
    return total + 4 * sum(p.numel() for p in model.parameters() if id(p) not in quantized)


def state_dict_bytes(model: nn.Module) -> int:
    """Size of `torch.save(model.state_dict())`, the usual checkpoint file (within a few hundred
    bytes: torch.save names the records inside the file after the file name)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


# ----------------------------------------------------------------------------- bit packing

def _check_pack_bits(bits):
    bits = validate_bits(bits)
    if bits == FLOAT_BITS:
        raise ValueError("pack_bits packs 2..8-bit codes; 32-bit (float) tensors are stored as float32")
    return bits


def pack_bits(codes, bits: int) -> torch.Tensor:
    """Pack integer codes in [0, 2^bits - 1] into a uint8 tensor, `bits` bits per code, LSB first."""
    bits = _check_pack_bits(bits)
    codes = torch.as_tensor(codes).flatten()
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"pack_bits needs integer codes, got dtype {codes.dtype}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= 2**bits):
        raise ValueError(f"codes must lie in [0, {2**bits - 1}] for {bits} bits, got range "
                         f"[{codes.min().item()}, {codes.max().item()}]")
    c = codes.to(torch.uint8).cpu().numpy()
    bitplanes = (c[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, bits), lowest bit first
    return torch.from_numpy(np.packbits(bitplanes.reshape(-1), bitorder="little"))


def unpack_bits(packed, bits: int, count: int) -> torch.Tensor:
    """Inverse of pack_bits: the first `count` codes (int64)."""
    bits = _check_pack_bits(bits)
    p = torch.as_tensor(packed).cpu()
    if p.dtype != torch.uint8:
        raise TypeError(f"unpack_bits needs a uint8 tensor, got dtype {p.dtype}")
    if count * bits > p.numel() * 8:
        raise ValueError(f"{p.numel()} bytes hold at most {p.numel() * 8 // bits} codes of {bits} bits, asked for {count}")
    planes = np.unpackbits(p.numpy(), count=count * bits, bitorder="little").reshape(count, bits)
    codes = (planes << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)
    return torch.from_numpy(codes).to(torch.int64)


# ----------------------------------------------------------------------------- packed files

def _config_to_dict(config) -> dict:
    kind = "qat" if isinstance(config, QATConfig) else "ptq"
    return {"kind": kind, **asdict(config)}


def _config_from_dict(d: dict):
    d = dict(d)
    kind = d.pop("kind")
    return QATConfig(**d) if kind == "qat" else PTQConfig(**d)


def save_packed(model: nn.Module, path, build: dict | None = None) -> int:
    """Write the quantized model to `path` with bit-packed weights; return the file size in bytes.

    build: optional build_model(...) keyword arguments stored in the file, so that
    load_packed(path) can rebuild the architecture without a skeleton.
    """
    config = getattr(model, "qsal_config", None)
    if config is None:
        raise ValueError("save_packed needs a quantized model (from quantize_model or ptq_model); "
                         "for a float model use torch.save(model.state_dict(), path)")
    if any(isinstance(m, ActQuantizer) and not m.frozen for m in model.modules()):
        raise ValueError("this PTQ model still has calibrating activation quantizers; calibrate and freeze it first")
    packed, codes, scales, skip = [], [], [], set()
    for name, layer in _packed_layers(model):
        q, scale = layer.weight_codes()
        bits = layer.w_bits
        if layer.weight_quant == "symmetric":
            q = q + (2 ** (bits - 1) - 1)  # shift [-(2^(k-1)-1), 2^(k-1)-1] to [0, 2^k - 2]
            scales.append(scale.detach().float().cpu().reshape(-1))
            scale_shape = list(scale.shape)
        else:
            scale_shape = None  # DoReFa's scale is fixed by the bit width
        codes.append(pack_bits(q, bits))
        packed.append([name, bits, layer.weight_quant, list(layer.weight.shape), scale_shape])
        skip.update({f"{name}.weight", f"{name}.weight_scale"})
    tensors, floats, ints = [], [], []
    for key, t in model.state_dict().items():
        if key in skip:
            continue
        is_float = t.is_floating_point()
        tensors.append([key, list(t.shape), "f" if is_float else "i"])
        (floats if is_float else ints).append(t.detach().cpu().reshape(-1).to(torch.float32 if is_float else torch.int64))
    blob = {
        "format": FORMAT, "version": VERSION, "config": _config_to_dict(config), "build": build,
        "packed": packed, "tensors": tensors,
        "codes": torch.cat(codes) if codes else torch.zeros(0, dtype=torch.uint8),
        "scales": torch.cat(scales) if scales else torch.zeros(0),
        "floats": torch.cat(floats) if floats else torch.zeros(0),
        "ints": torch.cat(ints) if ints else torch.zeros(0, dtype=torch.int64),
    }
    torch.save(blob, path)
    return os.path.getsize(path)


def load_packed(path, skeleton: nn.Module | dict | None = None) -> nn.Module:
    """Rebuild a model saved by save_packed, in eval mode, with outputs equal to the saved model's.

    skeleton: the float architecture (e.g. build_model("smallcnn")), a dict of build_model
    arguments, an already-quantized model with the same config, or None if the file stores `build`.
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file written by save_packed")
    if blob["version"] != VERSION:
        raise ValueError(f"{path} has {FORMAT} version {blob['version']}; this qsal_lab reads version {VERSION}")
    config = _config_from_dict(blob["config"])
    if skeleton is None:
        if blob["build"] is None:
            raise ValueError(f"{path} does not record its architecture: pass a skeleton, e.g. build_model('smallcnn')")
        skeleton = blob["build"]
    if isinstance(skeleton, dict):
        skeleton = build_model(**skeleton)
    if not isinstance(skeleton, nn.Module):
        raise TypeError(f"skeleton must be an nn.Module or a dict of build_model arguments, got {type(skeleton).__name__}")
    model = skeleton
    if getattr(model, "qsal_config", None) is None:
        model = quantize_model(model, config) if isinstance(config, QATConfig) else prepare_ptq(model, config)
    elif model.qsal_config != config:
        raise ValueError(f"the skeleton was quantized with {model.qsal_config}, but {path} holds {config}")
    model = model.cpu()

    code_pos = scale_pos = 0
    restored, modules = set(), dict(model.named_modules())
    for name, bits, quant, shape, scale_shape in blob["packed"]:
        layer = modules.get(name)
        if not isinstance(layer, QUANT_LAYERS) or layer.w_bits != bits or layer.weight_quant != quant \
                or list(layer.weight.shape) != shape:
            raise ValueError(f"{path} stores {bits}-bit {quant} weights of shape {shape} for layer {name!r}, "
                             f"which the skeleton does not match; is it the same architecture?")
        count = math.prod(shape)
        nbytes = math.ceil(count * bits / 8)
        codes = unpack_bits(blob["codes"][code_pos:code_pos + nbytes], bits, count).reshape(shape)
        code_pos += nbytes
        if quant == "dorefa":
            layer.restore_quantized(dorefa_from_codes(codes, bits))
        else:
            n = math.prod(scale_shape)
            scale = blob["scales"][scale_pos:scale_pos + n].reshape(scale_shape)
            scale_pos += n
            layer.restore_quantized(symmetric_from_codes(codes - (2 ** (bits - 1) - 1), scale), scale)
        restored.update({f"{name}.weight", f"{name}.weight_scale"})

    state, pos = {}, {"f": 0, "i": 0}
    for key, shape, kind in blob["tensors"]:
        n = math.prod(shape)
        source = blob["floats"] if kind == "f" else blob["ints"]
        state[key] = source[pos[kind]:pos[kind] + n].reshape(shape)
        pos[kind] += n
    expected = set(model.state_dict()) - restored
    if set(state) != expected:
        raise ValueError(f"{path} does not match the skeleton: missing {sorted(expected - set(state))[:5]}, "
                         f"unexpected {sorted(set(state) - expected)[:5]}")
    model.load_state_dict(state, strict=False)
    return model.eval()
