"""Checks for chapter 7's exercise (quantized and interpretable): the learner's rank agreement of two maps.

    rank_agreement(map_a, map_b) -> one Spearman correlation per image

Spearman's correlation of the two maps' pixel magnitudes (|map| added up over the channels), per image:
the Pearson correlation of their ranks, with tied values sharing their average rank, as
qsal_lab.saliency.spearman (scipy.stats.spearmanr) computes it. Ties matter here: a quantized model's
gradient is exactly zero wherever a PACT activation is clipped, so its maps hold many equal values.
"""
from __future__ import annotations

import numpy as np
import torch

from .common import CheckFailed, allclose, call, mismatches, passed, quietly


def _reference(a, b) -> np.ndarray:
    from ..saliency import spearman

    return np.asarray(spearman(a, b), dtype=float)


def _numbers(value, n: int) -> np.ndarray:
    name = "rank_agreement"
    if value is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns one correlation per image.")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise CheckFailed(f"{name}() returned a {type(value).__name__}; return one number per image (a tensor, an "
                          f"array or a list).") from None
    if array.size == 1 and n > 1:
        raise CheckFailed(f"{name}() returned one number for {n} images: correlate each image's two maps on their "
                          f"own (a loop over the images, or row-wise ranks), not the whole batch at once.")
    if array.size != n:
        raise CheckFailed(f"{name}() returned {array.size} numbers (shape {tuple(array.shape)}) for {n} images; "
                          f"return one correlation per image.")
    return array.reshape(n)


def _pixels(maps, how="abs"):
    m = maps.detach().double()
    return {"abs": lambda: m.abs().sum(1), "signed": lambda: m.sum(1),
            "abs_of_sum": lambda: m.sum(1).abs()}[how]().flatten(1).numpy()


def _pearson_rows(u, v):
    u = u - u.mean(1, keepdims=True)
    v = v - v.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (u * v).sum(1) / np.sqrt((u * u).sum(1) * (v * v).sum(1))


def _variants(a, b) -> dict:
    """{mistake: what it returns} for the hints."""
    from scipy.stats import rankdata

    pa, pb = _pixels(a), _pixels(b)
    ordinal = lambda p: np.argsort(np.argsort(p, axis=1, kind="stable"), axis=1).astype(float)  # noqa: E731
    average = lambda p: rankdata(p, axis=1)  # noqa: E731
    positions = lambda p: np.argsort(p, axis=1, kind="stable").astype(float)  # noqa: E731

    def textbook(u, v):  # 1 - 6 sum d^2 / (n (n^2 - 1)): Spearman's formula for data without ties
        n = u.shape[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1 - 6 * ((u - v) ** 2).sum(1) / (n * (n * n - 1))
    return {
        "textbook": textbook(average(pa), average(pb)),
        "argsort": _pearson_rows(positions(pa), positions(pb)),
        "pearson": _pearson_rows(pa, pb),
        "ordinal": _pearson_rows(ordinal(pa), ordinal(pb)),
        "signed": _pearson_rows(average(_pixels(a, "signed")), average(_pixels(b, "signed"))),
        "abs_of_sum": _pearson_rows(average(_pixels(a, "abs_of_sum")), average(_pixels(b, "abs_of_sum"))),
    }


HINTS = {
    "textbook": "That is the textbook formula 1 - 6 sum(d^2) / (n (n^2 - 1)), which equals Spearman's correlation only "
                "when no two scores tie. With ties (equal scores, a map zero everywhere) take the Pearson correlation "
                "of the average ranks.",
    "argsort": "argsort gives positions, not ranks: argsort(s)[0] is WHERE the smallest score sits, not the rank of "
               "pixel 0. A pixel's rank is its place in the sorted order, the argsort of the argsort (or "
               "scipy.stats.rankdata, which also gives tied scores their average rank).",
    "pearson": "That is the Pearson correlation of the values. Spearman correlates their RANKS: rank each map's pixels "
               "(scipy.stats.rankdata, or torch argsort of argsort without ties), then take the Pearson correlation of "
               "the ranks.",
    "ordinal": "Your ranks break ties by position (argsort of argsort). Tied values must share their average rank "
               "(scipy.stats.rankdata's default, method='average'): equal scores would otherwise get different "
               "ranks in an order that means nothing (the reading order of the pixels).",
    "signed": "You ranked the signed maps: a large negative value is as salient as a large positive one. Rank the "
              "magnitudes, map.abs() (added up over the channels).",
    "abs_of_sum": "Add the channels' magnitudes, map.abs().sum(1), not the magnitude of their sum, map.sum(1).abs().",
}


def _cases():
    g = torch.Generator().manual_seed(0)
    cases = []
    a = torch.randn(4, 1, 6, 6, generator=g)
    b = a + 0.8 * torch.randn(4, 1, 6, 6, generator=g)
    b[3] = torch.randn(1, 6, 6, generator=g)
    cases.append(("4 signed 6x6 maps, three of them related", a, b))
    a = torch.randn(3, 1, 6, 6, generator=g)
    b = torch.exp(-a.clone())  # a monotone change of the values: the ranks of |a| are not those of b
    b[0] = -a[0] * 3  # same magnitudes up to scale: correlation 1
    cases.append(("3 maps, one a rescaled sign flip of the other", a, b))
    a = torch.randn(3, 1, 6, 6, generator=g).abs()
    b = a + 0.5 * torch.randn(3, 1, 6, 6, generator=g).abs()
    a[:, :, :3] = 0.0  # half of every map exactly zero, as where a quantized model's gradient is blocked
    b[:, :, :, :2] = 0.0
    cases.append(("3 maps of 6x6 with many exact zeros (ties)", a, b))
    a, b = torch.randn(2, 2, 5, 5, generator=g), torch.randn(2, 2, 5, 5, generator=g)
    a[:, 1] *= -2.0
    b[0] = a[0] + 0.3 * torch.randn(2, 5, 5, generator=g)
    cases.append(("2 maps with 2 channels, 5x5", a, b))
    a = torch.randn(3, 1, 6, 6, generator=g)
    b = a + 0.5 * torch.randn(3, 1, 6, 6, generator=g)
    b[1] = 0.0  # a W2A2 model's gradient can be zero on a whole digit
    cases.append(("3 maps of 6x6, map_b of image 1 zero everywhere", a, b))
    return cases


def check_rank_agreement(rank_agreement_fn):
    """rank_agreement_fn(map_a, map_b) -> one Spearman correlation per image, on hand-made maps (ties included)."""
    cases = _cases()
    for what, a, b in cases:
        got = _numbers(call(rank_agreement_fn, "rank_agreement", a.clone(), b.clone()), len(a))
        want = _reference(a, b)
        bad = mismatches(got, want, magnitude=1.0)
        if not len(bad):
            continue
        i = int(bad[0])
        message = (f"rank_agreement() on {what}: expected {np.round(want, 4).tolist()} but got "
                   f"{np.round(got, 4).tolist()} (first difference: image {i}).")
        if np.isnan(want[i]):
            raise CheckFailed(f"{message} One of image {i}'s maps is zero everywhere: all its pixels tie, so it has "
                              f"no ranks to correlate and the correlation is 0 / 0, nan, not a number you choose "
                              f"(the means over images skip nan; a 0 would count as 'no agreement').")
        for mistake, wrong in _variants(a, b).items():
            if allclose(got, wrong, magnitude=1.0):
                raise CheckFailed(f"{message} {HINTS[mistake]}")
        if np.any(np.abs(got) > 1) and len(mismatches(np.clip(got, -1, 1), got, magnitude=1.0)):
            raise CheckFailed(f"{message} A correlation lies between -1 and 1.")
        raise CheckFailed(f"{message} Per image: pixel scores map.abs().sum(1) flattened, their average ranks "
                          f"(scipy.stats.rankdata), then the Pearson correlation of the two rank vectors.")
    passed(f"check_rank_agreement passed: your rank_agreement() matches qsal_lab.saliency.spearman on {len(cases)} "
           f"hand-made cases (signed maps, a sign flip, ties, two channels, a map zero everywhere).")


def check_agreement_by_bits(rank_agreement_fn, maps: dict, reference: str = "float", threshold: float = 0.5) -> dict:
    """Your rank_agreement between maps[reference] and every other entry of `maps` ({label: (N, C, H, W) maps of
    the same images, e.g. "float", "W8A8", ...}), against the library's. Prints the mean per label, and the first
    label (in the order given) whose mean falls below `threshold`. Returns {label: mean}."""
    if reference not in maps:
        raise ValueError(f"maps has no {reference!r} entry to compare with; it has: {', '.join(maps)}")
    ref = maps[reference]
    with quietly():  # the hand-made cases first: a mistake is named there, and never passes here
        check_rank_agreement(rank_agreement_fn)
    out = {}
    for label, m in maps.items():
        if label == reference:
            continue
        got = _numbers(call(rank_agreement_fn, "rank_agreement", ref.clone(), m.clone()), len(ref))
        want = _reference(ref, m)
        bad = mismatches(got, want, magnitude=1.0)
        if len(bad):
            i = int(bad[0])
            raise CheckFailed(f"rank_agreement({reference}, {label}) on image {i}: expected {want[i]:.4f} (qsal_lab's "
                              f"spearman), got {got[i]:.4f}. Pass check_rank_agreement first: it names the usual "
                              f"mistakes.")
        out[label] = float(np.nanmean(got))
    print(f"mean Spearman correlation with the {reference} maps over {len(ref)} images (your rank_agreement):")
    for label, v in out.items():
        print(f"  {label:>8}: {v:.3f}")
    below = next((label for label, v in out.items() if v < threshold), None)
    print(f"first below {threshold}: {below or 'none'}")
    passed(f"check_agreement_by_bits passed: your rank_agreement() agrees with qsal_lab's on all {len(out)} models.")
    return out
