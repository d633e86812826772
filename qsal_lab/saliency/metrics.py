"""Saliency metrics, so that interpretability is a number.

    faithfulness    remove the most salient p % of each image's pixels (p = 0, 10, ..., 90) without retraining
                    (the SGT paper's modified ROAR), replaced as in training (masking.mask_features), and
                    watch the accuracy fall: the curve and its area (lower = more faithful), next to
                    removing random pixels. Works for any model: a torch module or a callable such as
                    OnnxClassifier.
    concentration   Gini index of the map (1 = all on one pixel, 0 = spread evenly) and its entropy
    agreement       two maps of the same image: Spearman rank correlation, top-k % IoU, SSIM
    sanity check    cascading parameter randomisation (Adebayo et al. 2018): re-initialise the layers from
                    the output down; maps that explain the model should stop resembling the trained one's

Every per-image function returns a numpy array with one number per image. Maps are (N, C, H, W); where a
metric needs one value per pixel it adds up the channels' magnitudes.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .attribution import METHODS, PERTURBATION_METHODS, attribute, eval_mode
from .masking import mask_features

FRACTIONS = tuple(i / 10 for i in range(10))  # 0, 0.1, ..., 0.9


# ----------------------------------------------------------------------------- faithfulness

@dataclass
class RemovalCurve:
    """Accuracy after removing the most salient `fractions` of pixels; `area` is the normalised area under
    the curve (the trapezoid rule over the fractions, divided by their span: the mean accuracy)."""
    fractions: list
    accuracy: list
    area: float

    def to_dict(self) -> dict:
        return asdict(self)


def removal_curve(model, x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor, fractions=FRACTIONS,
                  seed: int = 0, batch_size: int = 256) -> RemovalCurve:
    """Accuracy of `model` on x with the most salient (by |saliency|) `fractions` of each image's pixels
    replaced by uniform noise in the image's range. The noise is seeded by `seed` and the same for every
    map, so two methods' curves differ only in which pixels they remove."""
    fractions = check_fractions(fractions)
    accuracy = []
    for f in fractions:
        if f == 0:
            masked = x
        else:
            masked, _ = mask_features(x, saliency, f, least=False, abs=True,
                                      generator=torch.Generator(device=x.device).manual_seed(seed))
        accuracy.append(float((predict_labels(model, masked, batch_size) == y.cpu()).float().mean()))
    span = fractions[-1] - fractions[0]
    area = float(np.trapezoid(accuracy, fractions) / span) if span > 0 else accuracy[0]
    return RemovalCurve(list(fractions), accuracy, area)


def random_saliency(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A map of independent uniform noise: removal by it is removal of random pixels."""
    return torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)


def faithfulness(model, x: torch.Tensor, y: torch.Tensor, methods=None, maps: dict | None = None,
                 fractions=FRACTIONS, seed: int = 0, batch_size: int = 256, options: dict | None = None) -> dict:
    """{name: RemovalCurve} for each method and for "random" removal.

    methods: attribution methods to compute (default: all five for a torch module, the perturbation ones for
    anything else); maps: {name: maps} already computed (then `methods` defaults to none). Maps are
    computed for the true class y, with `options` = {method: {option: value}} passed to `attribute`.
    """
    maps = dict(maps or {})
    if methods is None:
        methods = () if maps else (METHODS if isinstance(model, nn.Module) else PERTURBATION_METHODS)
    options = options or {}
    for m in methods:
        maps[m] = attribute(model, x, y, m, **options.get(m, {}))
    maps["random"] = random_saliency(x, seed)
    return {name: removal_curve(model, x, y, s, fractions, seed, batch_size) for name, s in maps.items()}


@torch.no_grad()
def predict_labels(model, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """argmax of the logits, in eval mode and in batches, for a torch module or any callable (on the CPU)."""
    labels = []
    with eval_mode(model):
        for chunk in x.split(batch_size):
            if isinstance(model, nn.Module):
                p = next(model.parameters(), None)
                chunk = chunk.to(p.device) if p is not None else chunk
            labels.append(torch.as_tensor(model(chunk)).argmax(1).cpu())
    return torch.cat(labels)


def check_fractions(fractions) -> tuple:
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0 <= f < 1 for f in fractions) or list(fractions) != sorted(set(fractions)):
        raise ValueError(f"fractions must be increasing numbers in [0, 1), e.g. 0, 0.1, ..., 0.9; got {fractions}")
    return fractions


# ----------------------------------------------------------------------------- concentration

def pixel_maps(maps: torch.Tensor) -> np.ndarray:
    """(N, H, W) magnitudes: |map| added up over the channels."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4:
        raise ValueError(f"maps must be a (N, C, H, W) tensor, got {getattr(maps, 'shape', type(maps).__name__)}")
    return maps.detach().abs().sum(1).cpu().double().numpy()


def gini(maps: torch.Tensor) -> np.ndarray:
    """Gini index of each map's magnitudes: 0 = the same everywhere, 1 = all on one pixel (n-1)/n.
    Scale-free, so the same for any normalisation of |map|; an all-zero map gives nan."""
    a = np.sort(pixel_maps(maps).reshape(len(maps), -1), axis=1)
    n = a.shape[1]
    rank = np.arange(1, n + 1)
    total = a.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((2 * rank - n - 1) * a).sum(1) / (n * total)


def entropy(maps: torch.Tensor, normalized: bool = True) -> np.ndarray:
    """Shannon entropy of each map's magnitudes as a distribution over pixels (scipy.stats.entropy, nats);
    normalized=True divides by log(pixels): 1 = spread evenly, near 0 = concentrated."""
    from scipy.stats import entropy as shannon  # lazy: scipy.stats takes seconds to import

    a = pixel_maps(maps).reshape(len(maps), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = shannon(a, axis=1)
    return h / np.log(a.shape[1]) if normalized else h


def concentration(maps: torch.Tensor) -> dict:
    """Mean Gini index and mean normalised entropy over the images."""
    return {"gini": float(np.nanmean(gini(maps))), "entropy": float(np.nanmean(entropy(maps)))}


# ----------------------------------------------------------------------------- agreement

def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation (scipy.stats.spearmanr) of the two maps' pixel magnitudes, per image."""
    from scipy.stats import spearmanr  # lazy: slow

    pa, pb = _pair(a, b)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant map has no ranks: nan, not a warning per image
        for u, v in zip(pa, pb):
            out.append(spearmanr(u.ravel(), v.ravel()).statistic)
    return np.asarray(out, dtype=float)


def topk_iou(a: torch.Tensor, b: torch.Tensor, k: float = 0.1) -> np.ndarray:
    """Intersection over union of the two maps' top-k (a fraction) most salient pixels, per image."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], e.g. 0.1 for the top 10 %, got {k!r}")
    pa, pb = _pair(a, b)
    n = pa[0].size
    count = max(1, round(k * n))

    def top(p):
        order = np.argsort(-p.reshape(len(p), -1), axis=1, kind="stable")[:, :count]
        sets = np.zeros((len(p), n), dtype=bool)
        np.put_along_axis(sets, order, True, axis=1)
        return sets

    ta, tb = top(pa), top(pb)
    return (ta & tb).sum(1) / (ta | tb).sum(1)


def ssim(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Structural similarity (skimage.metrics.structural_similarity) of the two maps, each scaled by its
    maximum to [0, 1], per image."""
    from skimage.metrics import structural_similarity  # lazy: slow (scipy)

    pa, pb = _pair(a, b)
    side = min(pa.shape[1:])
    window = 7 if side >= 7 else side - (1 - side % 2)  # skimage's default 7, or the largest odd that fits
    out = []
    for u, v in zip(pa, pb):
        u, v = u / max(u.max(), 1e-30), v / max(v.max(), 1e-30)
        out.append(structural_similarity(u, v, data_range=1.0, win_size=window))
    return np.asarray(out, dtype=float)


def agreement(a: torch.Tensor, b: torch.Tensor, k: float = 0.1) -> dict:
    """Mean Spearman correlation, top-k IoU and SSIM between two sets of maps of the same images."""
    return {"spearman": float(np.nanmean(spearman(a, b))), f"top{round(100 * k)}_iou": float(np.mean(topk_iou(a, b, k))),
            "ssim": float(np.mean(ssim(a, b)))}


def _pair(a, b):
    pa, pb = pixel_maps(a), pixel_maps(b)
    if pa.shape != pb.shape:
        raise ValueError(f"the two sets of maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return pa, pb


# ----------------------------------------------------------------------------- sanity check

def cascading_randomization(model: nn.Module, x: torch.Tensor, target, method: str = "saliency", seed: int = 0,
                            k: float = 0.1, **options) -> list[dict]:
    """Adebayo et al. 2018's model-parameter randomisation test, cascading from the top.

    Re-initialises the weight layers (every nn.Conv2d and nn.Linear, QuantConv2d/QuantLinear included)
    one more at a time from the output down, with each layer's own `reset_parameters` (seeded), and
    compares that step's maps with the trained model's (`agreement`). Row 0 is the trained model itself.
    A method that explains the model loses its similarity as layers go; one whose maps survive is
    showing the input (an edge detector), not what the model learned. BatchNorm and PACT's alphas are
    kept. The model itself is not changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cascading randomisation re-initialises a torch model's layers; got "
                        f"{type(model).__name__} (an ONNX model has no parameters to randomise)")
    original = attribute(model, x, target, method, **options)
    randomized = copy.deepcopy(model)
    layers = [(n, m) for n, m in randomized.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))][::-1]
    rows = [{"step": 0, "layer": "(trained)", **agreement(original, original, k)}]
    for step, (name, layer) in enumerate(layers, start=1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + step)
            layer.reset_parameters()
        maps = attribute(randomized, x, target, method, **options)
        rows.append({"step": step, "layer": name, **agreement(original, maps, k)})
    return rows



# ----------------------------------------------------------------------------- one summary

def summarize(model, x: torch.Tensor, y: torch.Tensor, method: str = "saliency", fractions=FRACTIONS,
              seed: int = 0, **options):
    """(maps, summary) for one method on labelled images: the numbers `qsal saliency --json` prints.

    summary: method, images, accuracy, seconds_per_image (the attribution), faithfulness_area and
    random_area (lower = more faithful) with both curves, and the maps' mean Gini index and entropy.
    """
    t0 = time.perf_counter()
    maps = attribute(model, x, y, method, **options)
    seconds = (time.perf_counter() - t0) / len(x)
    curves = faithfulness(model, x, y, maps={method: maps}, fractions=fractions, seed=seed)
    accuracy = float((predict_labels(model, x) == y.cpu()).float().mean())
    return maps, {"method": method, "images": len(x), "accuracy": accuracy, "seconds_per_image": seconds,
                  "faithfulness_area": curves[method].area, "random_area": curves["random"].area,
                  "fractions": curves[method].fractions, "faithfulness_curve": curves[method].accuracy,
                  "random_curve": curves["random"].accuracy, **concentration(maps)}
