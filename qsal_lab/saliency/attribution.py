"""Attributions: one call for every method, for float, PACT (fake-quant) and int8 ONNX models alike.

    maps = attribute(model, x, y, method="ig")                      # a tensor of x's shape
    maps = attribute(OnnxClassifier("int8.onnx"), x, y, method="occlusion")

The methods (captum does the work):

    saliency    |d logit_y / d x|: the vanilla gradient (Simonyan et al. 2014); abs=False keeps the sign
    ig          Integrated Gradients (Sundararajan et al. 2017) from the black image, i.e. pixel value 0
                in the model's normalised input space (see `black_baseline`)
    smoothgrad  the mean gradient over noisy copies of x (Smilkov et al. 2017; captum's NoiseTunnel)
    gradcam     Grad-CAM (Selvaraju et al. 2017) on the last conv layer, upsampled bilinearly to the input
                and repeated over its channels; the ReLU of Grad-CAM leaves a map all zero where no evidence
                is positive (a few MNIST digits get one)
    occlusion   how much the target logit drops when a sliding patch is set to the baseline (Zeiler & Fergus 2014)

Gradient methods differentiate the model as it computes: for a PACT model that is the gradient of the
straight-through estimator's surrogate (PACT passes the gradient where 0 <= x < alpha, rounding counts as
the identity), not of the step function itself, whose gradient is zero almost everywhere. An ONNX model
(`OnnxClassifier`) has no gradients at all, so it gets the perturbation methods only.

Every attribution runs in eval mode (BatchNorm's running statistics, no dropout); the model's mode is
restored afterwards.
"""
from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from ..data import dataset_info

GRADIENT_METHODS = ("saliency", "ig", "smoothgrad", "gradcam")
PERTURBATION_METHODS = ("occlusion",)
METHODS = GRADIENT_METHODS + PERTURBATION_METHODS
ROWS_PER_FORWARD = 512  # batch rows per forward pass when a method evaluates many copies of x


# ----------------------------------------------------------------------------- the one call

def attribute(model, x: torch.Tensor, target, method: str = "saliency", **options) -> torch.Tensor:
    """Attribution maps of `model`'s logit for class `target` of each image in `x`, shaped like `x`.

    model: a torch module (float, PACT or PTQ), or any callable from an (N, C, H, W) tensor to (N, classes)
    logits such as `OnnxClassifier` (perturbation methods only). target: a tensor (or list) of N class
    indices, or one int for all. options, by method (see `method_options`):
      saliency:   abs=True
      ig:         baseline="black" | number | tensor, dataset=None, n_steps=50, internal_batch_size
      smoothgrad: nt_samples=16, noise_level=0.15 (noise std / the batch's value range), stdevs, abs=False,
                  seed=None, nt_samples_batch_size
      gradcam:    layer=None (the last conv; a module or its name), relu_attributions=True,
                  interpolate_mode="bilinear"
      occlusion:  window=None (about side/7 pixels), stride=None (window // 2), baseline="black",
                  dataset=None, perturbations_per_eval, show_progress=False
    """
    method = check_method(method)
    check_options(method, options)
    is_module = isinstance(model, nn.Module)
    if not is_module:
        if not callable(model):
            raise TypeError(f"attribute needs a torch module or a callable returning logits, got {type(model).__name__}")
        if method in GRADIENT_METHODS:
            raise TypeError(f"method {method!r} needs gradients, and {type(model).__name__} (not a torch module, "
                            f"e.g. an ONNX model) has none; use one of: {', '.join(PERTURBATION_METHODS)}, "
                            f"or attribute the torch model it was exported from")
    x = check_images(x)
    device = _device_of(model) if is_module else torch.device("cpu")
    inputs = x.detach().to(device, torch.float32).clone().requires_grad_(method in GRADIENT_METHODS)
    forward = model if is_module else _tensor_forward(model)
    with eval_mode(model):
        with torch.no_grad():
            logits = forward(inputs)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or len(logits) != len(inputs):
            raise ValueError(f"attribute expects the model to return (N, classes) logits for N={len(inputs)} "
                             f"images, got {_describe(logits)}")
        target = check_target(target, len(inputs), logits.shape[1], device)
        maps = _ATTRIBUTORS[method](forward, model, inputs, target, **options)
    return maps.detach().float().to(x.device)


def _saliency(forward, model, x, target, abs=True):
    from captum.attr import Saliency  # lazy: captum takes seconds to import (scipy)

    return Saliency(forward).attribute(x, target=target, abs=abs)


def _integrated_gradients(forward, model, x, target, baseline="black", dataset=None, n_steps=50,
                          internal_batch_size=None):
    from captum.attr import IntegratedGradients  # lazy: slow

    base = make_baseline(x, baseline, dataset)
    rows = internal_batch_size or max(len(x), ROWS_PER_FORWARD)
    return IntegratedGradients(forward).attribute(x, baselines=base, target=target, n_steps=n_steps,
                                                  internal_batch_size=rows)


def _smoothgrad(forward, model, x, target, nt_samples=16, noise_level=0.15, stdevs=None, abs=False, seed=None,
                nt_samples_batch_size=None):
    from captum.attr import NoiseTunnel, Saliency  # lazy: slow

    if stdevs is None:  # SmoothGrad's noise level: sigma / (x_max - x_min), 10-20 % works best in the paper
        stdevs = float(noise_level) * (x.max() - x.min()).item()
    per_batch = nt_samples_batch_size or max(1, ROWS_PER_FORWARD // len(x))
    with _seeded(seed):
        return NoiseTunnel(Saliency(forward)).attribute(
            x, nt_type="smoothgrad", nt_samples=nt_samples, nt_samples_batch_size=per_batch, stdevs=stdevs,
            target=target, abs=abs)


def _gradcam(forward, model, x, target, layer=None, relu_attributions=True, interpolate_mode="bilinear"):
    from captum.attr import LayerAttribution, LayerGradCam  # lazy: slow

    layer = last_conv_layer(model) if layer is None else _resolve_layer(model, layer)
    cam = LayerGradCam(forward, layer).attribute(x, target=target, relu_attributions=relu_attributions)
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode=interpolate_mode)
    return cam.expand_as(x).contiguous()


def _occlusion(forward, model, x, target, window=None, stride=None, baseline="black", dataset=None,
               perturbations_per_eval=None, show_progress=False):
    from captum.attr import Occlusion  # lazy: slow

    c, h, w = x.shape[1:]
    window = window or max(2, round(min(h, w) / 7))
    stride = stride or max(1, window // 2)
    per_eval = perturbations_per_eval or max(1, ROWS_PER_FORWARD // len(x))
    with torch.no_grad():
        return Occlusion(forward).attribute(x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                                            baselines=make_baseline(x, baseline, dataset), target=target,
                                            perturbations_per_eval=per_eval, show_progress=show_progress)


_ATTRIBUTORS = {"saliency": _saliency, "ig": _integrated_gradients, "smoothgrad": _smoothgrad,
                "gradcam": _gradcam, "occlusion": _occlusion}


def method_options(method: str) -> tuple[str, ...]:
    """The options `attribute` accepts for `method`."""
    params = inspect.signature(_ATTRIBUTORS[check_method(method)]).parameters
    return tuple(params)[4:]  # after (forward, model, x, target)


# ----------------------------------------------------------------------------- baselines and layers

def black_baseline(x: torch.Tensor, dataset: str | None = None) -> torch.Tensor:
    """The black image (pixel value 0) in the normalised input space, shaped like x.

    With `dataset` (e.g. "mnist") that is exactly (0 - mean) / std per channel, from its normalisation.
    Without, it is each image's darkest value per channel: the same thing for any image with a black
    pixel in every channel (every MNIST digit), and a dark image otherwise.
    """
    if dataset is not None:
        info = dataset_info(dataset)
        if len(info.mean) != x.shape[1]:
            raise ValueError(f"{info.display_name} images have {len(info.mean)} channels, x has {x.shape[1]}")
        mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return ((0.0 - mean) / std).expand_as(x).contiguous()
    return x.amin(dim=(2, 3), keepdim=True).expand_as(x).contiguous()


def make_baseline(x: torch.Tensor, baseline="black", dataset: str | None = None) -> torch.Tensor:
    """A baseline shaped like x: "black" (see `black_baseline`), a number, or a tensor broadcastable to x."""
    x = x.detach()
    if isinstance(baseline, str):
        if baseline != "black":
            raise ValueError(f"unknown baseline {baseline!r}; use 'black', a number or a tensor shaped like x")
        return black_baseline(x, dataset)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.to(x.device, x.dtype).expand_as(x).contiguous()
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to x's "
                             f"{tuple(x.shape)}") from None
    raise TypeError(f"baseline must be 'black', a number or a tensor, got {type(baseline).__name__}")


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last nn.Conv2d in module order (QuantConv2d is one too): Grad-CAM's default layer."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer for Grad-CAM; pass layer=<a module>")
    return convs[-1]


def _resolve_layer(model, layer):
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
            raise ValueError(f"{type(model).__name__} has no layer {layer!r}; its conv layers: {', '.join(names)}") from None
    raise TypeError(f"layer must be a module or its name, got {type(layer).__name__}")


# ----------------------------------------------------------------------------- normalisation

def normalize_maps(maps: torch.Tensor, abs: bool = True, percentile: float = 99.0) -> torch.Tensor:
    """Each map scaled on its own: |map| clipped at its `percentile`-th percentile and divided by it, so
    [0, 1] (abs=False keeps the sign: divided by the percentile of |map|, clipped to [-1, 1]).

    Clipping a few extreme pixels keeps one hot pixel from turning the rest of the map black. An all-zero
    map stays zero. Shape is kept.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    maps = maps.detach().float()
    flat = maps.flatten(1).abs()
    top = torch.quantile(flat, percentile / 100, dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    top = top.view(-1, *[1] * (maps.ndim - 1))
    if abs:
        return (maps.abs() / top).clamp(0, 1)
    return (maps / top).clamp(-1, 1)


# ----------------------------------------------------------------------------- checks and helpers

def check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of: {', '.join(METHODS)}")
    return method


def check_options(method: str, options: dict):
    valid = method_options(method)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"attribute(method={method!r}) got unknown option(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(valid)}")


def check_images(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of images (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point() or len(x) == 0:
        raise ValueError(f"x must be a non-empty float batch of images (N, C, H, W), got {x.dtype} of shape "
                         f"{tuple(x.shape)}; add a batch dimension with x[None] for one image")
    return x


def check_target(target, n: int, num_classes: int, device=None) -> torch.Tensor:
    """`target` as a long tensor of n class indices in [0, num_classes), or a ValueError saying why not."""
    if isinstance(target, bool) or target is None:
        raise TypeError(f"target must be class indices (a tensor or list of {n} ints, or one int), got {target!r}")
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got a {t.dtype} tensor")
    t = t.long().flatten() if t.ndim else t.long().expand(n)
    if len(t) != n:
        raise ValueError(f"target has {len(t)} class indices for {n} images; give one per image (or one int)")
    bad = t[(t < 0) | (t >= num_classes)]
    if len(bad):
        raise ValueError(f"target {bad[0].item()} is out of range: the model has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return t.to(device) if device is not None else t


@contextlib.contextmanager
def eval_mode(model):
    """Run with `model` in eval mode, then restore its train/eval mode (a non-module passes through)."""
    if not isinstance(model, nn.Module):
        yield model
        return
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _seeded(seed):
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tensor_forward(model):
    """A callable on numpy/ONNX made to look like a module's forward: torch tensor in, float tensor out."""
    def forward(x):
        out = model(x.detach().cpu())
        return torch.as_tensor(out).float().to(x.device)
    return forward


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _describe(out) -> str:
    return f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
