"""Checks for chapter 6's exercise (saliency-guided training): the learner's SGT masking step.

    sgt_mask(x, saliency, fraction, generator) -> (x_masked, mask)

replaces, in each image, the round(fraction * H * W) pixels with the smallest |saliency| (added up over
the channels) by uniform noise between that image's own minimum and maximum, per channel, as
qsal_lab.saliency.mask_features does. The checks test what matters rather than the exact noise: the
exact count, that the pixels are the least salient ones (any tie-break among equal scores is right),
that every new value lies in its image channel's range, that the original values are gone (noise, not a
fill), that every other pixel is untouched and that x itself is not changed.
"""
from __future__ import annotations

import torch

from .common import CheckFailed, allclose, call, passed, quietly, tolerance

FRACTION_HINT = ("fraction is a share of the pixels (0.5 = half of them), not a count: replace "
                 "k = round(fraction * H * W) pixels per image")
COUNT_ERRORS = [("must be int, not float", FRACTION_HINT), ("expected int", FRACTION_HINT),
                ("'float' object cannot be interpreted", FRACTION_HINT)]


# ----------------------------------------------------------------------------- reading the answer

def _unpack(result, x):
    """(x_masked, mask as (N, H*W) bool) from what the learner returned, or a CheckFailed saying what is wrong."""
    name = "sgt_mask"
    if result is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns (x_masked, mask).")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailed(f"{name}() must return two things, (x_masked, mask); got a {type(result).__name__}.")
    masked, mask = result
    n, c, h, w = x.shape
    if not isinstance(masked, torch.Tensor) or tuple(masked.shape) != tuple(x.shape):
        raise CheckFailed(f"{name}()'s x_masked must be a tensor shaped like x, {tuple(x.shape)}; got "
                          f"{tuple(masked.shape) if isinstance(masked, torch.Tensor) else type(masked).__name__}.")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise CheckFailed(f"{name}()'s mask must be a bool tensor (True = replaced), got "
                          f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}.")
    if mask.numel() == n * c * h * w and c > 1 and mask.shape[1] == c:
        raise CheckFailed(f"{name}()'s mask has one entry per channel, shape {tuple(mask.shape)}: a feature is a pixel "
                          f"position, so rank one score per pixel (|saliency| added over the channels) and return a "
                          f"mask of shape (N, 1, H, W) = ({n}, 1, {h}, {w}), replacing all channels of a chosen pixel.")
    if mask.numel() != n * h * w:
        raise CheckFailed(f"{name}()'s mask must have one entry per pixel, (N, 1, H, W) = ({n}, 1, {h}, {w}); got "
                          f"shape {tuple(mask.shape)}.")
    return masked.detach(), mask.reshape(n, h * w)


def _score(saliency, how="abs"):
    s = saliency.detach().double()
    return {"abs": lambda: s.abs().sum(1), "signed": lambda: s.sum(1), "abs_of_sum": lambda: s.sum(1).abs()}[how]().flatten(1)


def _is_extreme_set(chosen, score, k, least=True) -> bool:
    """True if every row of `chosen` holds k pixels, none scoring above (least) / below an unchosen one."""
    for c, s in zip(chosen, score):
        if int(c.sum()) != k:
            return False
        if 0 < k < len(s):
            if least and not bool(s[c].max() <= s[~c].min()):
                return False
            if not least and not bool(s[c].min() >= s[~c].max()):
                return False
    return True


def _diagnose_pixels(chosen, saliency, fraction):
    """Why the chosen pixels are not the k least salient of each image, or None if they are."""
    n = len(chosen)
    score = _score(saliency)
    pixels = score.shape[1]
    k = round(fraction * pixels)
    counts = chosen.sum(1)
    if _is_extreme_set(chosen, score, k):
        return None
    if int(chosen.sum()) == n * k and not bool((counts == k).all()):
        if _is_extreme_set(chosen.reshape(1, -1), score.reshape(1, -1), n * k):
            return ("you ranked the pixels of the whole batch together: rank each image's own pixels (along dim=1 of "
                    "an (N, H*W) score), so that every image loses k of its own.")
    if not bool((counts == k).all()):
        i = int((counts != k).nonzero()[0])
        head = (f"image {i} had {int(counts[i])} pixels masked, but round({fraction:g} * {pixels}) = {k} are expected "
                f"(every image loses exactly k pixels).")
        if int(counts[i]) == int(fraction * pixels) != k:
            return head + f" {fraction:g} * {pixels} = {fraction * pixels:g}: round it to {k}; int() truncates."
        threshold = score.sort(dim=1).values[:, k - 1:k] if k else None
        if threshold is not None and bool((chosen == (score <= threshold)).all()):
            return (head + " Several pixels tie at the k-th smallest |saliency| (here the background's saliency is "
                           "exactly 0, as a quantized model's whole map can be), and `score <= threshold` selects all of "
                           "them. Take exactly k (torch.topk(..., largest=False) or argsort), whichever of the tied ones.")
        return head
    if _is_extreme_set(chosen, score, k, least=False):
        return ("you masked the MOST salient pixels. SGT masks the LEAST salient ones, the pixels the model should be "
                "able to do without: the k smallest |saliency| (argsort ascending, or topk(largest=False)).")
    if _is_extreme_set(chosen, _score(saliency, "signed"), k):
        return ("you ranked the signed saliency, so 'least salient' became 'most negative'. A large negative gradient "
                "matters as much as a large positive one: rank |saliency| (saliency.abs(), added over the channels).")
    if _is_extreme_set(chosen, _score(saliency, "abs_of_sum"), k):
        return ("add the channels' magnitudes, saliency.abs().sum(1), not the magnitude of their sum, "
                "saliency.sum(1).abs().")
    i = int(torch.tensor([not _is_extreme_set(c[None], s[None], k) for c, s in zip(chosen, score)]).nonzero()[0])
    return (f"in image {i} you masked a pixel with |saliency| = {score[i][chosen[i]].max().item():.4g} but kept one "
            f"with |saliency| = {score[i][~chosen[i]].min().item():.4g}: mask the k pixels with the SMALLEST |saliency| "
            f"(added over the channels).")


def _diagnose_values(x, masked, mask):
    """Why the new values are not noise in each image channel's range, or None if they are."""
    n, c, h, w = x.shape
    m = mask.reshape(n, 1, h, w).expand(n, c, h, w)
    if not torch.equal(masked[~m], x[~m]):
        return ("pixels outside the mask changed: keep every unmasked pixel exactly as it was "
                "(torch.where(mask, noise, x)).")
    low = x.amin(dim=(2, 3), keepdim=True).expand_as(x)
    high = x.amax(dim=(2, 3), keepdim=True).expand_as(x)
    new, old = masked[m], x[m]
    if new.numel() == 0:
        return None
    if torch.isnan(new).any():
        return "some replaced values are nan."
    unchanged = (new == old).double().mean().item()
    if unchanged > 0.01:
        fill = new.flatten()[0].item()
        return (f"{unchanged:.0%} of the masked pixels still hold their original value (e.g. {fill:.4g}): filling with "
                f"the image's minimum (black) changes nothing where the background is already black, which is where "
                f"the least salient pixels are. Replace them with uniform noise between each image channel's minimum "
                f"and maximum: low + (high - low) * torch.rand(x.shape, generator=generator).")
    per_image = [new_i for new_i in masked.masked_select(m).split([int(mi.sum()) for mi in m])]
    if all(len(v) > 1 and allclose(v, v[:1].expand_as(v)) for v in per_image if len(v)):
        return ("every masked pixel of an image holds the same value: a constant fill draws the outline of what was "
                "removed. Replace with uniform noise, low + (high - low) * torch.rand(x.shape, generator=generator).")
    lo, hi = low[m], high[m]
    _, atol = tolerance(masked, magnitude=float(x.abs().max()))  # a value on the range's edge is inside
    outside = (new < lo - atol) | (new > hi + atol)
    if outside.any():
        j = int(outside.nonzero()[0])
        batch_lo, batch_hi = x.amin().item(), x.amax().item()
        hint = ("the range of each image's own channel: low = x.amin(dim=(2, 3), keepdim=True) and "
                "high = x.amax(dim=(2, 3), keepdim=True), then low + (high - low) * torch.rand(...)")
        if torch.all((new >= batch_lo - atol) & (new <= batch_hi + atol)):
            hint = "the range of each image's own channel, not of the whole batch: " + hint.split(": ", 1)[1]
        return (f"a replaced value, {new[j].item():.4g}, lies outside its image channel's range "
                f"[{lo[j].item():.4g}, {hi[j].item():.4g}]. Draw the noise uniformly in {hint}.")
    u = ((new - lo) / (hi - lo).clamp_min(1e-12)).double()
    if new.numel() >= 50 and not (0.3 < u.mean().item() < 0.7 and (u < 0.5).any() and (u > 0.5).any()):
        return (f"the replaced values sit at {u.mean().item():.0%} of their images' ranges on average: draw them "
                f"uniformly over the whole range, low + (high - low) * torch.rand(...), not Gaussian or shifted noise.")
    return None


def _diagnose_generator(sgt_mask_fn, x, saliency, fraction, masked):
    """Why the noise does not come from `generator`, or None: the same seed must give the same noise (training
    runs are reproducible), another seed other noise."""
    again, _ = _unpack(call(sgt_mask_fn, "sgt_mask", x.clone(), saliency.clone(), fraction,
                            torch.Generator().manual_seed(1), hints=COUNT_ERRORS), x)
    other, _ = _unpack(call(sgt_mask_fn, "sgt_mask", x.clone(), saliency.clone(), fraction,
                            torch.Generator().manual_seed(2), hints=COUNT_ERRORS), x)
    if torch.equal(again, masked) and not torch.equal(other, masked):
        return None
    what = ("two calls with generators seeded alike gave different noise" if not torch.equal(again, masked) else
            "generators seeded differently gave the same noise")
    return (f"the noise does not come from the `generator` argument: {what}. Draw it with the generator you are "
            f"given (torch.rand(..., generator=generator)), not from the global random state (torch.rand_like, or "
            f"torch.rand without generator=), so that a seeded run is reproducible.")


# ----------------------------------------------------------------------------- (a) the masking step

def _cases():
    """(what, x, saliency, fraction) on hand-made batches."""
    g = torch.Generator().manual_seed(0)
    cases = [("4 images of 6x6 with signed saliency, fraction 0.25 (9 pixels)", torch.randn(4, 1, 6, 6, generator=g),
              torch.randn(4, 1, 6, 6, generator=g), 0.25)]
    x = torch.randn(3, 3, 5, 5, generator=g)
    x[:, 1] = 10 * x[:, 1] + 4  # channels with very different ranges
    s = torch.randn(3, 3, 5, 5, generator=g)
    s[:, 2] *= -3
    cases.append(("3 images with 3 channels of different ranges, 5x5, fraction 0.3 (7.5 -> 8 pixels)", x, s, 0.3))
    # MNIST-like: black background (its minimum), a bright stroke, zero gradient on most of the background
    x = torch.full((4, 1, 8, 8), -0.42)
    x[:, :, 2:6, 3:5] = 2.8
    x[1, 0, 1, 1] = 1.0
    s = torch.zeros(4, 1, 8, 8)
    s[:, :, 1:7, 2:6] = torch.rand(4, 1, 6, 4, generator=g) + 0.1  # around the stroke: salient
    cases.append(("4 digit-like 8x8 images with a black background of exactly zero saliency, fraction 0.5", x, s, 0.5))
    cases.append(("4 images of 6x6, fraction 0.1 (3.6 -> 4 pixels)", torch.randn(4, 1, 6, 6, generator=g),
                  torch.randn(4, 1, 6, 6, generator=g), 0.1))
    return cases


def check_sgt_mask(sgt_mask_fn):
    """sgt_mask_fn(x, saliency, fraction, generator) -> (x_masked, mask): SGT's masking step on hand-made batches."""
    cases = _cases()
    for what, x, saliency, fraction in cases:
        x_in, s_in = x.clone(), saliency.clone()
        result = call(sgt_mask_fn, "sgt_mask", x_in, s_in, fraction, torch.Generator().manual_seed(1), hints=COUNT_ERRORS)
        if not torch.equal(x_in, x):
            raise CheckFailed(f"sgt_mask() on {what}: it changed x itself (in place). Build a new tensor, e.g. "
                              f"torch.where(mask, noise, x), and leave x as it was.")
        masked, mask = _unpack(result, x)
        problem = _diagnose_pixels(mask, saliency, fraction) or _diagnose_values(x, masked, mask) or \
            _diagnose_generator(sgt_mask_fn, x, saliency, fraction, masked)
        if problem:
            raise CheckFailed(f"sgt_mask() on {what}: {problem}")
    passed(f"check_sgt_mask passed on {len(cases)} hand-made batches: exactly round(fraction * H * W) pixels per image, "
           f"the least salient ones (|saliency| added over the channels), every channel of them replaced by noise in "
           f"its image channel's range, the original values gone, the rest untouched.")


# ----------------------------------------------------------------------------- (b) on the two models

def check_sgt_mask_on_models(sgt_mask_fn, models: dict, x: torch.Tensor, y: torch.Tensor, fraction: float = 0.5,
                             seed: int = 0) -> dict:
    """Your masking on real digits: for each model ({name: model}), its saliency d log p_y / dx, your mask at
    `fraction`, then the model on the masked digits. Checks the mask as check_sgt_mask does and prints, per
    model, the accuracy on masked digits and the KL term of SGT's loss. Returns {name: {"masked", "mask",
    "saliency", "accuracy", "kl"}}."""
    from ..saliency import input_saliency, kl_to_masked

    with quietly():  # the hand-made cases first: a mistake is named there, and never passes here
        check_sgt_mask(sgt_mask_fn)
    out = {}
    for name, model in models.items():
        model.eval()
        saliency = input_saliency(model, x, y)
        result = call(sgt_mask_fn, "sgt_mask", x.clone(), saliency.clone(), fraction,
                      torch.Generator().manual_seed(seed), hints=COUNT_ERRORS)
        masked, mask = _unpack(result, x)
        problem = _diagnose_pixels(mask, saliency, fraction) or _diagnose_values(x, masked, mask)
        if problem:
            raise CheckFailed(f"sgt_mask() on the {name} model's digits: {problem} (check_sgt_mask names the usual "
                              f"mistakes on small cases.)")
        with torch.no_grad():
            clean, noisy = model(x), model(masked)
        out[name] = {"masked": masked, "mask": mask.reshape(len(x), 1, *x.shape[-2:]), "saliency": saliency,
                     "accuracy": (noisy.argmax(1) == y).float().mean().item(),
                     "accuracy_clean": (clean.argmax(1) == y).float().mean().item(),
                     "kl": kl_to_masked(clean, noisy).item()}
    width = max(len(n) for n in out)
    print(f"{len(x)} test digits, {fraction:.0%} of each one's least salient pixels replaced by your sgt_mask:")
    for name, r in out.items():
        print(f"  {name:<{width}}  accuracy clean {r['accuracy_clean']:.1%}, masked {r['accuracy']:.1%}; "
              f"KL(clean || masked) {r['kl']:.3f}")
    passed(f"check_sgt_mask_on_models passed: your masks are right for all {len(out)} models.")
    return out

