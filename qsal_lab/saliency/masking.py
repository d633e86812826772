"""Replacing features: what saliency-guided training does to its inputs, and what the faithfulness metric
does to the test images (the SGT paper's modified ROAR), so both replace features the same way.

A feature is a pixel position: for colour images its channels' saliencies are added up (magnitudes when
abs=True) and all of its channels are replaced together. Replacement values are drawn uniformly between
the image's own minimum and maximum, per channel, so a masked image keeps its value range and carries no
trace of where the removed features were (a constant fill would draw their outline).
"""
from __future__ import annotations

import torch


def check_fraction(fraction, name: str = "fraction") -> float:
    """`fraction` as a float strictly between 0 and 1, or a ValueError saying so."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1 (the share of features to replace), "
                         f"got {fraction!r}")
    return float(fraction)


def features_to_replace(x: torch.Tensor, fraction: float) -> int:
    """How many pixels per image a `fraction` means: round(fraction * H * W)."""
    return round(check_fraction(fraction) * x.shape[-2] * x.shape[-1])


def mask_features(x: torch.Tensor, saliency: torch.Tensor, fraction: float, *, least: bool = True,
                  abs: bool = True, generator: torch.Generator | None = None):
    """Replace the `fraction` least (least=False: most) salient pixels of each image; returns (x_masked, mask).

    x, saliency: (N, C, H, W). abs=True ranks by |saliency| (summed over channels); abs=False ranks the
    signed values, so "least salient" are the most negative ones. Exactly round(fraction * H * W) pixels
    per image are replaced (ties broken by position, so the choice is deterministic), each channel with a
    value drawn uniformly from [min, max] of that image's channel. mask is a bool (N, 1, H, W) tensor,
    True where a pixel was replaced. The random values come from `generator` (default: torch's global
    RNG), and as many are drawn whatever the mask, so a seeded run is reproducible.
    """
    if x.ndim != 4 or saliency.shape != x.shape:
        raise ValueError(f"x and saliency must both be (N, C, H, W) and the same shape, got {tuple(x.shape)} "
                         f"and {tuple(saliency.shape)}")
    k = features_to_replace(x, fraction)
    n, _, h, w = x.shape
    x = x.detach()
    score = (saliency.detach().abs() if abs else saliency.detach()).sum(1).reshape(n, h * w)
    order = torch.argsort(score, dim=1, descending=not least, stable=True)[:, :k]
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=x.device).scatter_(1, order, True).view(n, 1, h, w)
    return replace_pixels(x, mask, generator), mask


def replace_pixels(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x with the pixels where `mask` is True replaced, the way `mask_features` replaces them.

    x: (N, C, H, W) images; mask: a bool tensor (N, 1, H, W) (or (N, H, W)), True = replace that pixel in
    every channel. Each replaced value is drawn uniformly from [min, max] of its image's channel, from
    `generator` (torch.rand over the whole of x, whatever the mask, so a seeded run is reproducible).
    Returns a new tensor; x is not changed."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = replace), got "
                        f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}; "
                        f"e.g. torch.zeros(N, H * W, dtype=torch.bool).scatter_(1, indices, True)")
    n, _, h, w = x.shape
    if mask.numel() != n * h * w:
        raise ValueError(f"mask must have one entry per pixel, (N, 1, H, W) = ({n}, 1, {h}, {w}); got shape "
                         f"{tuple(mask.shape)}")
    mask = mask.reshape(n, 1, h, w).to(x.device)
    x = x.detach()
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(mask, low + (high - low) * noise, x)
