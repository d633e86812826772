"""From a PACT-trained model to a deployable ONNX model: QDQ with the learned clipping levels as scales.

    path = export_qat_onnx(qat_model, "pact_w4a4.onnx", example)  # example: a batch of real inputs
    clf = OnnxClassifier(path)                                     # runs in ONNX Runtime, int8 kernels
    executed_ops(path)                                             # what ONNX Runtime actually runs

`quantize_onnx` (int8.py) lets ONNX Runtime *choose* every scale from calibration data. A QAT model
has already learned its grids, so this exporter writes them down instead, piece by piece:

- PACT(k bits, alpha) -> uint8 codes with scale alpha / (2^k - 1) and zero point 0: QuantizeLinear
  saturates at code 0 (the ReLU) and, for k = 8, at code 255 = alpha (the clip), so a Q/DQ pair *is*
  PACT. Below 8 bits uint8 saturates too late (at 255, not 2^k - 1), so a Clip of the uint8 codes to
  [0, 2^k - 1] sits between Q and DQ: the 2^k levels stored in int8 QDQ, clipped on integers.
- Weights -> int8 codes and float scales with w_q = codes * scale exactly, from the model's own
  weight quantizer: symmetric k-bit codes as they are; DoReFa's w_q = (2 c - n) / n (c in [0, n],
  n = 2^k - 1) as the odd integers m = 2 c - n with scale 1 / n. A BatchNorm after the conv is folded
  into the per-channel scale (and the bias), which keeps the codes untouched; codes of fewer than 8
  bits are then spread over int8 (m * K with scale / K, K = 127 // max|m|: the same weights on a finer
  grid, which int32 biases need). DoReFa at 8 bits needs m up to +-255 (9 bits): such a layer is
  re-rounded to int8, symmetric per channel, and its metadata says so (where the file's weights are
  not the trained ones).
- Biases -> int32 with scale s_input * s_weight, as int8 kernels add them.
- The input -> uint8 over its 8-bit min-max range on `example` (or `input_range`), like PTQ does.
- A residual add's float inputs (a conv + BatchNorm output) -> uint8 over their min-max range on
  `example`, so that the convs before it run as int8 kernels and the add on uint8 (QLinearAdd).
- MaxPool and Flatten move codes without changing them: a Q/DQ pair with the same scale after each
  lets ONNX Runtime run them on uint8 directly.
Where a Conv/Gemm has Q/DQ on its inputs and a QuantizeLinear on its output, ONNX Runtime fuses the
pattern into one integer kernel (QLinearConv); `executed_ops` shows what it made of each layer.
"""
from __future__ import annotations

import copy
import json
import operator
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.fx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ..files import atomic_write
from .convert import QUANT_LAYERS, QATConfig, QuantConv2d, QuantLinear
from .int8 import INPUT_NAME, OUTPUT_NAME, OnnxClassifier, _session
from .pact import PACT
from .primitives import FLOAT_BITS, calc_qparams

OPSET = 17
PASS_THROUGH = (nn.Dropout, nn.Identity)          # nothing to compute in eval mode
KEEP_CODES = (nn.MaxPool2d, nn.Flatten)           # output values are input values: the grid survives
SUPPORTED = "QuantConv2d, QuantLinear, BatchNorm2d after a conv, PACT, ReLU, MaxPool2d, AdaptiveAvgPool2d(1), " \
            "Flatten, Dropout, Identity, + (residual add)"


# ----------------------------------------------------------------------------- weights as integers

def integer_weight(layer) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(m, scale, how): int64 codes m and float64 scale(s), w_q = m * scale exactly (per tensor: scale
    shape (); per channel: (C,)), and which quantizer they come from."""
    if layer.w_bits == FLOAT_BITS:
        raise ValueError("a 32-bit (float) weight has no integer codes")
    codes, scale = layer.weight_codes()
    if layer.weight_quant == "dorefa":  # w_q = codes * 2/n - 1 = (2 codes - n) / n
        n = 2**layer.w_bits - 1
        return 2 * codes - n, torch.tensor(1.0 / n, dtype=torch.float64), f"DoReFa {layer.w_bits}-bit"
    return codes, torch.as_tensor(scale, dtype=torch.float64), f"symmetric {layer.w_bits}-bit"


def _bn_affine(bn, bias, out_channels):
    """BN(z + b) = g z + shift per channel: g = gamma / sqrt(var + eps), shift = (b - mean) g + beta."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.affine else torch.ones_like(var)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(var)
    g = gamma / torch.sqrt(var + bn.eps)
    b = torch.zeros(out_channels, dtype=torch.float64) if bias is None else bias
    return g, (b - mean) * g + beta


def _per_channel(t, like):
    return t.reshape(-1, *[1] * (like.dim() - 1))


def _spread_codes(m, scale):
    """The same weights with codes m * K and scale / K, K = 127 // max|m| per output channel: int8 kernels
    add the bias as an int32 on the grid scale_input * scale_weight, so a K times finer weight grid rounds
    the bias K times more finely (at 4 bits, 0.5 * s_x * s_w would otherwise be a few % of an output step)."""
    scale = scale.expand(m.shape[0]) if not scale.dim() else scale
    k = (127 // m.flatten(1).abs().amax(1).clamp(min=1)).to(torch.int64)
    return m * _per_channel(k, m), scale / k.double(), f"{int(k.min())}..{int(k.max())}"


def _reround_int8(m, scale):
    """Codes that do not fit int8: symmetric int8 per output channel of the (exact) float weight."""
    w = m.double() * (_per_channel(scale, m) if scale.dim() else scale)
    new_scale = w.flatten(1).abs().amax(1).clamp(min=1e-12) / 127
    new_m = torch.round(w / _per_channel(new_scale, w)).to(torch.int64)
    # the largest change of a weight, in units of its new int8 step (at most 0.5: plain rounding)
    step_error = ((new_m * _per_channel(new_scale, w) - w).abs() / _per_channel(new_scale, w)).max().item()
    return new_m, new_scale, step_error


# ----------------------------------------------------------------------------- the graph builder

class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, name):
        return isinstance(m, QUANT_LAYERS + (PACT,)) or super().is_leaf_module(m, name)


class _Graph:
    """ONNX nodes and initializers, plus the quantization grid (scale, zero point) of each tensor that
    holds dequantized uint8 codes (tensors not in `grid` are plain float)."""

    def __init__(self):
        self.nodes, self.inits, self.grid = [], [], {}

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def qdq(self, x, grid, name):
        """QuantizeLinear -> DequantizeLinear on the uint8 grid (scale, zero point)."""
        scale, zero_point = grid
        s = self.const(f"{name}.scale", np.float32(scale))
        z = self.const(f"{name}.zero_point", np.uint8(zero_point))
        q = self.op("QuantizeLinear", [x, s, z], f"{name}.q")
        out = self.op("DequantizeLinear", [q, s, z], f"{name}.dq")
        self.grid[out] = (float(np.float32(scale)), int(zero_point))
        return out


def _weight_layer(g, name, layer, x, bn, layers_info):
    """Conv or Gemm with int8 weights (DQ), int32 bias (DQ) when its input is on a uint8 grid."""
    conv = isinstance(layer, QuantConv2d)
    out_channels = layer.weight.shape[0]
    bias = layer.bias.detach().double() if layer.bias is not None else None
    info = {"layer": name, "op": "Conv" if conv else "Gemm", "bn_folded": bn is not None}
    if bn is not None:
        bn_scale, bias = _bn_affine(bn, bias, out_channels)
    if layer.w_bits == FLOAT_BITS:
        w = layer.weight.detach().double()
        if bn is not None:
            w = w * _per_channel(bn_scale, w)
        weight_in = g.const(f"{name}.weight", w.float().numpy())
        info.update(weights="float32", exact=True)
    else:
        m, scale, how = integer_weight(layer)
        if bn is not None:  # into the per-channel scale; a negative factor flips that channel's codes instead
            m = m * _per_channel(torch.where(bn_scale < 0, -1, 1), m)
            scale = scale.expand(out_channels) * bn_scale.abs()
        info.update(weights=f"int8 codes of {how} weights", exact=True)
        if m.abs().max() > 127:
            m, scale, error = _reround_int8(m, scale)
            info.update(weights=f"{how} weights re-rounded to int8 (they need 9 bits)", exact=False,
                        reround_max_error_steps=round(error, 3))
        else:
            m, scale, spread = _spread_codes(m, scale)
            info["code_multiplier"] = spread
        per_channel = scale.dim() == 1
        info["weight_scale"] = "per channel" if per_channel else "per tensor"
        w_scale = g.const(f"{name}.weight_scale", scale.float().numpy())
        w_zero = g.const(f"{name}.weight_zero_point",
                         np.zeros(scale.shape, dtype=np.int8) if per_channel else np.int8(0))
        codes = g.const(f"{name}.weight_codes", m.to(torch.int8).numpy())
        weight_in = g.op("DequantizeLinear", [codes, w_scale, w_zero], f"{name}.weight_dq",
                         **({"axis": 0} if per_channel else {}))
    inputs = [x, weight_in]
    if bias is not None:
        if x in g.grid and layer.w_bits != FLOAT_BITS:
            b_scale = (g.grid[x][0] * scale.expand(out_channels)).float()
            b_codes = torch.round(bias / b_scale.double()).to(torch.int32)
            inputs.append(g.op("DequantizeLinear", [g.const(f"{name}.bias_codes", b_codes.numpy()),
                                                    g.const(f"{name}.bias_scale", b_scale.numpy()),
                                                    g.const(f"{name}.bias_zero_point", np.zeros(out_channels, np.int32))],
                               f"{name}.bias_dq", axis=0))
            info["bias"] = "int32"
        else:
            inputs.append(g.const(f"{name}.bias", bias.float().numpy()))
            info["bias"] = "float32"
    info["input"] = f"uint8 (scale {g.grid[x][0]:.4g})" if x in g.grid else "float32"
    layers_info.append(info)
    if conv:
        attrs = dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride), dilations=list(layer.dilation),
                     group=layer.groups, pads=[*layer.padding, *layer.padding])
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            raise ValueError(f"export_qat_onnx: {name} uses padding={layer.padding!r}, padding_mode="
                             f"{layer.padding_mode!r}; only explicit zero padding is supported")
        return g.op("Conv", inputs, f"{name}.conv", **attrs)
    return g.op("Gemm", inputs, f"{name}.gemm", transB=1)


def _pact(g, name, act, x, layers_info):
    alpha = act.alpha.detach().item()
    if act.bits == FLOAT_BITS:
        out = g.op("Clip", [x, g.const(f"{name}.lo", np.float32(0)), g.const(f"{name}.hi", np.float32(alpha))],
                   f"{name}.clip")
        layers_info.append({"layer": name, "op": "PACT", "activations": f"float32, clipped at {alpha:.4g}"})
        return out
    levels = 2**act.bits - 1
    scale = alpha / levels
    s = g.const(f"{name}.scale", np.float32(scale))
    z = g.const(f"{name}.zero_point", np.uint8(0))
    codes = g.op("QuantizeLinear", [x, s, z], f"{name}.q")  # uint8 saturates at 0: the ReLU; at 255 = alpha for k = 8
    if act.bits < 8:  # below 8 bits the clip at alpha is code 2^k - 1: clip the codes, in uint8
        codes = g.op("Clip", [codes, g.const(f"{name}.code_min", np.uint8(0)),
                              g.const(f"{name}.code_max", np.uint8(levels))], f"{name}.clip")
    out = g.op("DequantizeLinear", [codes, s, z], f"{name}.dq")
    g.grid[out] = (float(np.float32(scale)), 0)
    layers_info.append({"layer": name, "op": "PACT",
                        "activations": f"uint8 codes 0..{levels}, scale alpha/{levels} = {scale:.4g} (alpha {alpha:.4g})"})
    return out


def _observed_ranges(model, graph, example, nodes) -> dict:
    """(min, max) of the given fx nodes' outputs when `model` runs on `example`."""
    ranges = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n in nodes:
                ranges[n] = (min(out.min().item(), 0.0), max(out.max().item(), 0.0))
            return out

    Recorder(torch.fx.GraphModule(model, graph)).run(example)
    return ranges


def _build(model, chw, input_scale_zp, example, quantize_residuals):
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    adds = [n for n in graph.nodes if n.op == "call_function" and n.target in (operator.add, torch.add)]
    add_inputs = {a for n in adds for a in n.args if isinstance(a, torch.fx.Node)}
    ranges = _observed_ranges(model, graph, example, add_inputs) if adds and quantize_residuals else {}
    g, layers_info, names = _Graph(), [], {}
    folded = {}  # conv node -> the BatchNorm module folded into it
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
            src = node.args[0]
            if not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                    and isinstance(modules[src.target], QuantConv2d) and len(src.users) == 1):
                raise ValueError(f"export_qat_onnx folds each BatchNorm2d into the conv before it, but "
                                 f"{node.target} does not directly follow a convolution")
            folded[src] = node
    for node in graph.nodes:
        if node.op == "placeholder":
            if input_scale_zp is None:
                names[node] = INPUT_NAME
                continue
            scale, zero_point = input_scale_zp
            s, z = g.const("input.scale", np.float32(scale)), g.const("input.zero_point", np.uint8(zero_point))
            q = g.op("QuantizeLinear", [INPUT_NAME, s, z], "input.q")
            names[node] = g.op("DequantizeLinear", [q, s, z], "input.dq")
            g.grid[names[node]] = (float(np.float32(scale)), int(zero_point))
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node):
                raise ValueError("export_qat_onnx exports classifiers that return one tensor of logits")
            g.nodes.append(helper.make_node("Identity", [names[result]], [OUTPUT_NAME], name="logits"))
            continue
        args = [names[a] for a in node.args if isinstance(a, torch.fx.Node)]
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, QUANT_LAYERS):
                bn = modules[folded[node].target] if node in folded else None
                out = _weight_layer(g, node.target, m, args[0], bn, layers_info)
            elif isinstance(m, nn.BatchNorm2d):
                out = args[0]  # folded into the conv that produced args[0]
            elif isinstance(m, PACT):
                out = _pact(g, node.target, m, args[0], layers_info)
            elif isinstance(m, PASS_THROUGH):
                out = args[0]
            elif isinstance(m, nn.ReLU):
                on_codes = g.grid.get(args[0], (None, None))[1] == 0  # uint8 codes with zero point 0 are >= 0
                out = args[0] if on_codes else g.op("Relu", args, f"{node.target}.relu")
            elif isinstance(m, KEEP_CODES):
                if isinstance(m, nn.MaxPool2d):
                    if m.ceil_mode or m.dilation not in (1, (1, 1)):
                        raise ValueError(f"export_qat_onnx: {node.target} uses ceil_mode/dilation, not supported")
                    k, s, p = (v if isinstance(v, tuple) else (v, v) for v in (m.kernel_size, m.stride, m.padding))
                    out = g.op("MaxPool", args, f"{node.target}.maxpool", kernel_shape=list(k), strides=list(s),
                               pads=[*p, *p])
                else:
                    if m.start_dim != 1 or m.end_dim != -1:
                        raise ValueError(f"export_qat_onnx: {node.target} must flatten from dim 1 to the end")
                    out = g.op("Flatten", args, f"{node.target}.flatten", axis=1)
                if args[0] in g.grid:  # the same grid again, so that the runtime moves uint8 codes
                    out = g.qdq(out, g.grid[args[0]], node.target)
            elif isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
                out = g.op("GlobalAveragePool", args, f"{node.target}.avgpool")
            else:
                raise ValueError(f"export_qat_onnx cannot export {node.target} ({type(m).__name__}); it supports "
                                 f"{SUPPORTED}")
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(args) == 2:
            inputs = []
            for i, (src, name) in enumerate(zip(node.args, args)):
                if name not in g.grid and src in ranges:  # a float conv output: 8-bit over its range on the example
                    scale, zero_point = calc_qparams(*ranges[src], 8, symmetric=False, signed=False)
                    name = g.qdq(name, (scale.item(), int(zero_point)), f"{node.name}.input{i}")
                inputs.append(name)
            out = g.op("Add", inputs, f"{node.name}.add")
            layers_info.append({"layer": node.name, "op": "Add", "activations": "float inputs as uint8 over their range "
                                "on the example" if ranges else "float32"})
        elif node.op == "call_function" and node.target is torch.flatten and node.args[1:] == (1,):
            out = g.op("Flatten", args, f"{node.name}.flatten", axis=1)
        else:
            what = getattr(node.target, "__name__", str(node.target))
            on = ", ".join(str(a) for a in node.args if isinstance(a, torch.fx.Node))
            raise ValueError(f"export_qat_onnx cannot export the operation `{what}` (on {on}); it supports {SUPPORTED}")
        names[node] = out

    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *chw])
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", None])
    proto = helper.make_model(helper.make_graph(g.nodes, "qat_qdq", [inp], [out], g.inits),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qsal_lab")
    proto.ir_version = 8
    return proto, layers_info


# ----------------------------------------------------------------------------- export

def check_qat_model(model):
    """Raise a clear error unless `model` is a PACT QAT model from quantize_model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_qat_onnx needs a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "qsal_config", None)
    if config is not None and not isinstance(config, QATConfig):
        raise ValueError("export_qat_onnx exports quantization-aware (PACT) models; this one comes from ptq_model. "
                         "For int8 PTQ use export_onnx(float_model, ...) and then quantize_onnx(...)")
    if config is None or not any(isinstance(m, PACT) for m in model.modules()):
        raise ValueError("export_qat_onnx needs a model from quantize_model(model, QATConfig(...)) (PACT QAT), but "
                         "this one is not quantized; for a float model use export_onnx, and quantize_onnx for int8 PTQ")
    return config


def export_qat_onnx(model: nn.Module, path, example: torch.Tensor, input_range=None, quantize_input: bool = True,
                    quantize_residuals: bool = True, metadata: dict | None = None) -> Path:
    """Write a PACT QAT model as an ONNX QDQ file that ONNX Runtime runs with integer kernels.

    example: a batch (N, C, H, W) of real inputs. It fixes the input shape; it gives the input's 8-bit
    range (min-max over the batch, unless `input_range=(lo, hi)` is given; `quantize_input=False`
    leaves the input, and so the first layer's arithmetic, in float32) and that of the float inputs of
    residual adds (`quantize_residuals=False` keeps those adds, and the convs before them, in float32);
    and it checks the file against the fake-quant model. Small differences are expected (the input's
    and the residuals' rounding, int32 biases, re-rounded 9-bit weights); a file that predicts another
    class on half of the example is a bug, and is not written. The file's metadata records, per layer, how its weights and activations are
    stored (`qdq_layers(path)` reads it back) and the check's agreement and max |logit difference|.
    """
    config = check_qat_model(model)
    if not isinstance(example, torch.Tensor) or example.ndim != 4 or not example.is_floating_point() or not len(example):
        raise ValueError(f"example must be a float (N, C, H, W) batch of real inputs, got "
                         f"{tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__}")
    path = Path(path)
    model = copy.deepcopy(model).cpu().eval()
    example = example.detach().float().cpu()
    lo, hi = (example.min().item(), example.max().item()) if input_range is None else map(float, input_range)
    scale, zero_point = calc_qparams(lo, hi, 8, symmetric=False, signed=False)
    input_qparams = (scale.item(), int(zero_point)) if quantize_input else None
    with torch.no_grad():
        proto, layers_info = _build(model, tuple(example.shape[1:]), input_qparams, example, quantize_residuals)
        expected = model(example)
    props = {"input_name": INPUT_NAME, "input_shape": json.dumps(list(example.shape[1:])), "input_dtype": "float32",
             "num_classes": str(expected.shape[1]), "model_class": type(model).__name__, "producer": "qsal_lab",
             "torch_version": torch.__version__,
             "quantization": f"PACT QAT W{config.w_bits}A{config.a_bits} as QDQ: int8 weights ({config.weight_quant}), "
                             f"uint8 activations with scale alpha / (2^a_bits - 1)",
             "input_quantization": (f"uint8 scale {scale.item():.6g} zero point {int(zero_point)} (range {lo:.4g}..{hi:.4g})"
                                    if quantize_input else "none (float32 input)"),
             "qdq_layers": json.dumps(layers_info)}
    props.update({str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()})
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)

    got = torch.from_numpy(_session(proto.SerializeToString(), threads=1, providers=None)
                           .run(None, {INPUT_NAME: example.numpy()})[0])
    agreement = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    max_diff = (got - expected).abs().max().item()
    if not agreement >= 0.5:
        raise RuntimeError(f"the QDQ export of {type(model).__name__} predicts the fake-quant model's class on only "
                           f"{agreement:.1%} of the example (max |logit difference| {max_diff:.3g}); {path} was not written")
    onnx.helper.set_model_props(proto, {**props, "check_agreement": f"{agreement:.6f}",
                                        "check_max_abs_logit_diff": f"{max_diff:.6g}",
                                        "check_images": str(len(example))})
    atomic_write(path, lambda tmp: onnx.save_model(proto, tmp), suffix=".tmp.onnx")
    return path


def qdq_layers(path) -> list[dict]:
    """The per-layer record export_qat_onnx stored in the file: how each layer's weights and activations are kept."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "qdq_layers" not in props:
        raise ValueError(f"{path} was not written by export_qat_onnx (no 'qdq_layers' metadata)")
    return json.loads(props["qdq_layers"])


_SAME_TYPE_OPS = {"MaxPool", "Flatten", "Clip", "Relu", "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze"}
_CONVERSIONS = {"QuantizeLinear", "DequantizeLinear"}
_TYPE_NAMES = {TensorProto.FLOAT: "float32", TensorProto.UINT8: "uint8", TensorProto.INT8: "int8",
               TensorProto.INT32: "int32"}


def executed_ops(path) -> list[dict]:
    """What ONNX Runtime runs for the file after its graph optimizations, in order: one dict per node
    with its `op` (fused integer kernels show up as QLinearConv, QGemm, ...), `name` and the element
    type of its main input, `input` ("uint8", "int8" or "float32")."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # fusions, not layouts
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    types = {t.name: t.data_type for t in graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in graph.input})
    ops = []
    for n in graph.node:  # the saved graph is topologically sorted; propagate element types along it
        first = types.get(n.input[0], TensorProto.FLOAT)
        if n.op_type == "QuantizeLinear":
            out = types.get(n.input[2], TensorProto.UINT8) if len(n.input) > 2 else TensorProto.UINT8
        elif n.op_type in ("QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearGlobalAveragePool"):
            out = types.get(n.input[-1] if n.op_type != "QLinearConv" else n.input[7], TensorProto.UINT8)
        elif n.op_type == "QGemm":  # float output unless it has y_scale / y_zero_point
            out = types.get(n.input[8], TensorProto.UINT8) if len(n.input) > 8 and n.input[8] else TensorProto.FLOAT
        elif n.op_type in _SAME_TYPE_OPS:
            out = first
        else:
            out = TensorProto.FLOAT
        for o in n.output:
            types[o] = out
        ops.append({"op": n.op_type, "name": n.name, "input": _TYPE_NAMES.get(first, str(first))})
    return ops


def precision_summary(ops: list[dict]) -> dict:
    """executed_ops grouped: which ops compute on integers, which on float32, and the conversions
    between them, each as 'Op x count' in order of first appearance."""
    groups = {"integer": [], "float32": [], "conversions": []}
    for o in ops:
        kind = "conversions" if o["op"] in _CONVERSIONS else ("integer" if o["input"] in ("uint8", "int8") else "float32")
        groups[kind].append(o["op"])
    return {k: ", ".join(f"{op} x{v.count(op)}" for op in dict.fromkeys(v)) or "none" for k, v in groups.items()}


@torch.no_grad()
def compare_with_torch(clf, model: nn.Module, loader) -> dict:
    """An ONNX classifier against a torch model on a DataLoader of (x, y): both accuracies, how often they
    predict the same class (agreement) and the largest |logit difference|."""
    if not isinstance(clf, OnnxClassifier):
        clf = OnnxClassifier(clf)
    model = model.eval()
    device = next(model.parameters()).device
    hits_onnx = hits_torch = same = n = 0
    max_diff = 0.0
    for x, y in loader:
        a, b = clf(x), model(x.to(device)).float().cpu()
        y = torch.as_tensor(y)
        hits_onnx += (a.argmax(1) == y).sum().item()
        hits_torch += (b.argmax(1) == y).sum().item()
        same += (a.argmax(1) == b.argmax(1)).sum().item()
        max_diff = max(max_diff, (a - b).abs().max().item())
        n += len(y)
    if n == 0:
        raise ValueError("the loader yielded no batches")
    return {"accuracy": hits_onnx / n, "torch_accuracy": hits_torch / n, "agreement": same / n,
            "max_abs_logit_diff": max_diff, "n": n}
