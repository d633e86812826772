"""Real int8: PyTorch -> ONNX -> onnxruntime static quantization -> an int8 model you can run.

Fake quantization (PACT, PTQ) only *simulates* 8-bit arithmetic in float32. To get a file that is
4x smaller and runs int8 kernels we hand the trained float model to ONNX Runtime:

    export_onnx(model, "fp32.onnx", input_shape=(1, 1, 28, 28))      # BN folded, batch dynamic
    quantize_onnx("fp32.onnx", "int8.onnx", calib_loader)            # QDQ, per-channel int8 weights
    int8 = OnnxClassifier("int8.onnx")                               # callable like a model
    logits = int8(x)                                                 # torch tensor in, torch tensor out

The int8 file is QDQ format: int8 weights stored once, with QuantizeLinear/DequantizeLinear
pairs around every quantized tensor; ONNX Runtime fuses each pair with its Conv/Gemm into an
integer kernel. Weights are int8 with one scale per output channel, activations uint8 with
one (scale, zero point) per tensor, measured on a few calibration batches.

Every file carries its expected input shape and dtype in its metadata, so `OnnxClassifier`
can refuse wrong inputs with a clear message instead of returning garbage.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from tqdm.auto import tqdm

from ..files import atomic_write

INPUT_NAME, OUTPUT_NAME = "input", "logits"
RESERVED_METADATA = {"input_name", "input_shape", "input_dtype", "num_classes", "model_class", "producer",
                     "torch_version"}
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


# ----------------------------------------------------------------------------- export

def export_onnx(model: nn.Module, path, input_shape=(1, 1, 28, 28), opset: int | None = None,
                metadata: dict | None = None) -> Path:
    """Export `model` (in eval mode) to one self-contained .onnx file and check it.

    input_shape is (N, C, H, W); only (C, H, W) is fixed, the batch dimension stays dynamic.
    `metadata` (e.g. {"model_name": "smallcnn", "dataset": "mnist"}) is stored in the file next
    to the input shape, dtype and class count. The file is written only if onnx.checker accepts
    it and ONNX Runtime reproduces PyTorch's logits on a random batch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx needs a torch.nn.Module, got {type(model).__name__}")
    chw = _check_input_shape(input_shape)
    clashes = set(map(str, metadata or {})) & RESERVED_METADATA
    if clashes:
        raise ValueError(f"metadata keys {sorted(clashes)} are set by export_onnx itself; rename them")
    path = Path(path)
    was_training = model.training
    model.eval()  # BN uses running statistics (and can be folded), Dropout is off
    try:
        device = next(model.parameters(), torch.empty(0)).device
        check_x = torch.randn(3, *chw, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model(check_x.to(device))
        if not isinstance(expected, torch.Tensor) or expected.ndim != 2:
            raise ValueError(f"export_onnx exports classifiers: {type(model).__name__} must return one "
                             f"(N, num_classes) tensor of logits, got {_describe(expected)}")
        expected = expected.float().cpu().numpy()
        # Batch 2, not 1: torch.export would specialise a batch of 1 into a constant.
        proto = _torch_to_onnx(model, torch.randn(2, *chw, device=device), opset)
    finally:
        model.train(was_training)

    _strip_debug_metadata(proto)
    props = {"input_name": INPUT_NAME, "input_shape": json.dumps(list(chw)), "input_dtype": "float32",
             "num_classes": str(expected.shape[1]), "model_class": type(model).__name__,
             "producer": "qsal_lab", "torch_version": torch.__version__}
    props.update({str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()})
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)

    # Batch 3 differs from the export batch of 2, so this also proves the batch is dynamic.
    session = _session(proto.SerializeToString(), threads=1, providers=None)
    got = session.run(None, {INPUT_NAME: check_x.numpy()})[0]
    if got.shape != expected.shape:
        raise RuntimeError(f"ONNX export of {type(model).__name__} gives logits of shape {got.shape} for a batch "
                           f"of 3, PyTorch {expected.shape}; {path} was not written")
    error, tolerance = np.abs(got - expected).max(), 1e-4 * max(1.0, np.abs(expected).max())
    if not error <= tolerance:  # `not <=` also catches NaN
        raise RuntimeError(f"ONNX export of {type(model).__name__} does not reproduce PyTorch: max |onnx - torch| "
                           f"= {error:.2e} > {tolerance:.1e}; {path} was not written")
    atomic_write(path, lambda tmp: onnx.save_model(proto, tmp), suffix=".tmp.onnx")
    return path


def _torch_to_onnx(model, example, opset):
    """The torch.export-based exporter (torch's default, folds BN); the old TorchScript one as
    a fallback for models torch.export cannot trace (e.g. Python `if` on tensor values)."""
    try:
        with _quiet():
            program = torch.onnx.export(
                model, (example,), dynamo=True, external_data=False, verbose=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},))
        return program.model_proto
    except Exception as dynamo_error:  # noqa: BLE001 - we retry, then report both
        buffer = io.BytesIO()
        try:
            with _quiet():
                torch.onnx.export(
                    model, (example,), buffer, dynamo=False, opset_version=opset or 17,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        except Exception as legacy_error:
            raise RuntimeError(f"could not export {type(model).__name__} to ONNX.\n torch.export-based "
                               f"exporter: {dynamo_error}\n TorchScript exporter: {legacy_error}") from legacy_error
        warnings.warn(f"torch.export could not trace {type(model).__name__} ({type(dynamo_error).__name__}); "
                      "exported with the legacy TorchScript exporter instead", stacklevel=3)
        return onnx.load_model_from_string(buffer.getvalue())


@contextlib.contextmanager
def _quiet():
    """Exporters print graph dumps, log and warn (deprecations, tracer warnings) on their way;
    the exception, and our check against PyTorch's output, say what matters."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _strip_debug_metadata(proto):
    """The exporter tags every node with stack traces and local file paths: drop them (smaller
    files that do not leak where they were built)."""
    graph = proto.graph
    for item in [*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del item.metadata_props[:]
    del proto.metadata_props[:]


# ----------------------------------------------------------------------------- quantization

def quantize_onnx(fp32_path, out_path, calib_loader, num_batches: int = 8, method: str = "minmax",
                  per_channel: bool = True, progress: bool = True) -> Path:
    """Static int8 quantization of an fp32 .onnx file with ONNX Runtime (QDQ format).

    Weights: int8, symmetric, one scale per output channel (per_channel=True).
    Activations: uint8 with a scale and zero point per tensor, from the ranges seen on
    `num_batches` batches of `calib_loader` (a DataLoader of (x, y)), summarised by `method`:
    'minmax' (full observed range), 'percentile' (clip the 0.001 % tails) or 'entropy'
    (the clipping that keeps the histogram's KL divergence smallest). progress=False: no calibration bar.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # lazy: slow
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of: {', '.join(CALIBRATION_METHODS)}")
    if not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"no ONNX model at {fp32_path}; create it with export_onnx(model, path)")
    if fp32_path.resolve() == out_path.resolve():
        raise ValueError(f"out_path must differ from fp32_path ({fp32_path}): keep the fp32 model")
    reader = _LoaderReader(calib_loader, num_batches, OnnxClassifier(fp32_path), progress)

    def write(tmp):
        pre = Path(tmp).with_suffix(".pre.onnx")
        try:
            quant_pre_process(fp32_path, pre)  # shape inference + graph optimisation first
            with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print() a lot
                quantize_static(pre, tmp, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]))
        finally:
            reader.progress.close()
            pre.unlink(missing_ok=True)
        proto = onnx.load_model(tmp)
        props = {p.key: p.value for p in proto.metadata_props if not p.key.startswith("onnx.")}
        props.update(quantization="int8 QDQ: weights QInt8 " + ("per-channel" if per_channel else "per-tensor")
                     + ", activations QUInt8 per-tensor", calibration_method=method,
                     calibration_batches=str(reader.batches_read))
        onnx.helper.set_model_props(proto, props)
        onnx.save_model(proto, tmp)

    atomic_write(out_path, write, suffix=".tmp.onnx")
    return out_path


class _LoaderReader:
    """Feeds ONNX Runtime's calibrator the first `num_batches` inputs of a torch DataLoader."""

    def __init__(self, loader, num_batches, fp32_model, progress=True):
        self.batches = iter(loader)
        self.num_batches, self.batches_read, self.model = num_batches, 0, fp32_model
        total = min(num_batches, len(loader)) if hasattr(loader, "__len__") else num_batches
        self.progress = tqdm(total=total, desc="calibrate", leave=False, disable=not progress)

    def get_next(self):
        if self.batches_read == self.num_batches:
            return None
        batch = next(self.batches, None)
        if batch is None:
            if self.batches_read == 0:
                raise ValueError("calib_loader yielded no batches; calibration needs a few batches of real inputs")
            return None
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        self.batches_read += 1
        self.progress.update(1)
        return {INPUT_NAME: self.model.check_input(x)}


# ----------------------------------------------------------------------------- inference

class OnnxClassifier:
    """An .onnx classifier that behaves like a model: `logits = clf(x)`, torch in, torch out.

    x is a (N, C, H, W) torch tensor or numpy array of floats; anything else raises ValueError
    naming the shape the file expects. `input_shape` is that (C, H, W). Runs on the CPU by
    default; `threads` caps ONNX Runtime's intra-op threads (default: all cores).
    """

    def __init__(self, path, threads: int | None = None, providers=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}; create it with export_onnx or quantize_onnx")
        self.session = _session(str(self.path), threads, providers)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if "input_shape" in self.metadata:
            self.input_shape = tuple(json.loads(self.metadata["input_shape"]))
        else:  # a file not made by export_onnx: trust the graph's declared shape
            self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape[1:])
        if inp.type != "tensor(float)":
            raise ValueError(f"{self.path.name} takes {inp.type} inputs; OnnxClassifier handles float32 models only")

    @property
    def file_size_bytes(self) -> int:
        return self.path.stat().st_size

    def check_input(self, x) -> np.ndarray:
        """x as a contiguous float32 (N, C, H, W) array, or a ValueError saying what was expected."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self.path.name} takes a torch.Tensor or numpy array, got {type(x).__name__}")
        shape_ok = x.ndim == 1 + len(self.input_shape) and all(
            want is None or want == got for want, got in zip(self.input_shape, x.shape[1:]))
        if not shape_ok or not np.issubdtype(x.dtype, np.floating):
            want = ", ".join(["N"] + [str(d) if d is not None else "?" for d in self.input_shape])
            raise ValueError(f"{self.path.name} expects input of shape ({want}) float32, "
                             f"got {tuple(x.shape)} {x.dtype}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, x) -> torch.Tensor:
        logits = self.session.run(None, {self.input_name: self.check_input(x)})[0]
        return torch.from_numpy(logits)

    def predict(self, loader):
        """(logits, labels) over a DataLoader of (x, y): for accuracy and fp32/int8 agreement."""
        logits, labels = [], []
        for x, y in loader:
            logits.append(self(x))
            labels.append(torch.as_tensor(y))
        return torch.cat(logits), torch.cat(labels)

    def __repr__(self):
        return f"OnnxClassifier({str(self.path)!r}, input_shape={self.input_shape}, {self.file_size_bytes / 1e6:.2f} MB)"


# ----------------------------------------------------------------------------- helpers

def _session(model, threads, providers):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no "removing initializer" chatter
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])


def _describe(out) -> str:
    return f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"


def _check_input_shape(input_shape) -> tuple:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be 4 positive integers (N, C, H, W), e.g. (1, 1, 28, 28); "
                         f"got {input_shape!r}")
    return shape[1:]
