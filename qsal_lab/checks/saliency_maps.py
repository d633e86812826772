"""Checks for chapter 5's exercise (saliency maps): the learner's top-k IoU of two maps and their
faithfulness (removal) curve, compared with qsal_lab.saliency.topk_iou and removal_curve.

    topk_iou(map_a, map_b, k)                              -> one IoU per image
    removal_curve(model, x, y, maps, fractions, seed=0)    -> one accuracy per fraction

For the removal curve only the ranking and removal are the learner's: the replacement values come from
`replace_pixels(x, mask, generator)` (qsal_lab.saliency.replace_pixels, re-exported here), exactly what
mask_features puts in."""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from ..saliency.masking import replace_pixels
from .common import CheckFailed, allclose, call, close, mismatches, passed, quietly

__all__ = ["replace_pixels", "check_topk_iou", "check_topk_iou_on_maps", "check_removal_curve",
           "check_removal_curve_on_model"]

K_HINT = ("k is a fraction of the pixels (k=0.1 means the top 10 %), not a count: take "
          "count = max(1, round(k * H * W)) pixels per image")
# what torch.topk(scores, 0.25) says, and what a count of 0 does downstream
COUNT_ERRORS = [("must be int, not float", K_HINT), ("expected int", K_HINT), ("'float' object cannot be interpreted",
                                                                               K_HINT)]


# ----------------------------------------------------------------------------- the replacement helper

# ----------------------------------------------------------------------------- shared helpers

def _scores(maps: torch.Tensor, how: str = "abs") -> torch.Tensor:
    """(N, H*W) per-pixel scores: |map| added over channels (how="abs"), or a typical mistake's version."""
    maps = maps.detach().double()
    score = {"abs": lambda: maps.abs().sum(1), "signed": lambda: maps.sum(1),
             "abs_of_sum": lambda: maps.sum(1).abs()}[how]()
    return score.flatten(1)


def _top(score: torch.Tensor, count: int, descending: bool = True) -> torch.Tensor:
    """(N, P) bool: each row's `count` largest (smallest) scores, ties broken by position (stable)."""
    order = torch.argsort(score, dim=1, descending=descending, stable=True)[:, :count]
    return torch.zeros_like(score, dtype=torch.bool).scatter_(1, order, True)


def _threshold_top(score: torch.Tensor, count: int) -> torch.Tensor:
    """The tie mistake: every pixel whose score is >= the count-th largest (more than count when tied)."""
    if count == 0:
        return torch.zeros_like(score, dtype=torch.bool)
    return score >= score.topk(count, dim=1).values[:, -1:]


def _valid_top(chosen: torch.Tensor, score: torch.Tensor, count: int) -> torch.Tensor:
    """Per row: True if `chosen` is `count` pixels none of which scores below a pixel left out."""
    ok = []
    for c, s in zip(chosen, score):
        if int(c.sum()) != count:
            ok.append(False)
        elif count == 0 or count == len(s):
            ok.append(True)
        else:
            ok.append(bool(s[c].min() >= s[~c].max()))
    return torch.tensor(ok)


def _numbers(value, name: str, n: int, what: str, per: str) -> np.ndarray:
    """The learner's n numbers (one per `per`) as a float array, or a CheckFailed saying what came back."""
    if value is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns {what}.")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise CheckFailed(f"{name}() returned a {type(value).__name__}; return {what} (a tensor or a list of "
                          f"numbers).") from None
    if array.size != n or (array.ndim > 1 and max(array.shape) != n):
        raise CheckFailed(f"{name}() returned {array.size} number(s) (shape {tuple(array.shape)}) for {n} "
                          f"{per}s; return {what}, one per {per}.")
    return array.reshape(n)


def _first_difference(got: np.ndarray, want: np.ndarray) -> int | None:
    """The first index where the learner's numbers (IoUs, accuracies: fractions) differ from `want`, or None."""
    bad = mismatches(got, want, magnitude=1.0)
    return int(bad[0]) if len(bad) else None


def _fmt(values) -> str:
    return "[" + ", ".join("nan" if np.isnan(v) else f"{v:.4g}" for v in values) + "]"


# ----------------------------------------------------------------------------- (a) top-k IoU

def _iou(a: torch.Tensor, b: torch.Tensor, dice: bool = False) -> np.ndarray:
    inter = (a & b).sum(1).double()
    with np.errstate(invalid="ignore", divide="ignore"):
        if dice:
            return (2 * inter / (a.sum(1) + b.sum(1)).double()).numpy()
        return (inter / (a | b).sum(1).double()).numpy()


def _iou_variants(map_a, map_b, k):
    """{description of a typical mistake: the IoUs it gives} for the hints."""
    pixels = map_a.shape[-2] * map_a.shape[-1]
    count = max(1, round(k * pixels))
    sa, sb = _scores(map_a), _scores(map_b)
    out = {}
    out["signed"] = _iou(_top(_scores(map_a, "signed"), count), _top(_scores(map_b, "signed"), count))
    out["ascending"] = _iou(_top(sa, count, descending=False), _top(sb, count, descending=False))
    out["abs_of_sum"] = _iou(_top(_scores(map_a, "abs_of_sum"), count), _top(_scores(map_b, "abs_of_sum"), count))
    out["dice_or_over_k"] = _iou(_top(sa, count), _top(sb, count), dice=True)
    out["ties"] = _iou(_threshold_top(sa, count), _threshold_top(sb, count))
    truncated = int(k * pixels)
    if truncated != count:
        out["truncated"] = _iou(_top(sa, truncated), _top(sb, truncated))
    for c in {max(1, round(k)), int(k)}:  # k used as a number of pixels
        if c != count:
            out["count"] = _iou(_top(sa, c), _top(sb, c))
    n = len(sa)  # every image's pixels ranked together: the batch's top n * count
    out["batch"] = _iou(_top(sa.reshape(1, -1), n * count).reshape(n, -1), _top(sb.reshape(1, -1), n * count).reshape(n, -1))
    return out


def _iou_hint(mistake, k, pixels, shape):
    count = max(1, round(k * pixels))
    return {
        "signed": "You took the top-k of the signed map: a large negative value matters as much as a large positive "
                  "one. Rank the magnitudes, map.abs() (added up over the channels).",
        "ascending": "Ranked ascending: your sets are the LEAST salient pixels. Take the largest |map| values "
                     "(torch.topk, or argsort(descending=True)).",
        "abs_of_sum": f"The maps have {shape[1]} channels: add the channels' magnitudes, map.abs().sum(1), not the "
                      f"magnitude of their sum, map.sum(1).abs().",
        "dice_or_over_k": "You divided the intersection by the size of one set (|A & B| / k, or the Dice score "
                          "2|A & B| / (|A| + |B|)). IoU divides by the union: |A & B| / |A | B|.",
        "ties": f"Several pixels tie at the k-th largest |map| value, and `score >= threshold` keeps all of them: more "
                f"than round(k * H * W) = {count} pixels. Take exactly {count} (torch.topk or argsort), whichever "
                f"of the tied ones.",
        "batch": "You ranked the pixels of the whole batch together: rank each image's own pixels (along dim=1 of "
                 "an (N, H*W) score), so that every image gets its own top-k set.",
        "truncated": f"k * H * W = {k * pixels:g} pixels here: round it to {count}. int() truncates it to "
                     f"{int(k * pixels)}.",
        "count": K_HINT + f" (here round({k:g} * {pixels}) = {count}).",
    }[mistake]


def _reference_iou(map_a, map_b, k):
    from ..saliency import topk_iou

    return np.asarray(topk_iou(map_a, map_b, k), dtype=float)


def _intersection_range(score_a: torch.Tensor, score_b: torch.Tensor, count: int) -> tuple[int, int]:
    """The smallest and largest |A & B| over every valid tie-break of two top-`count` sets (one image).

    Each set is its pixels strictly above the count-th largest score (sure) plus r of those tied at it.
    Any size in between is reachable too, swapping one tied pixel at a time."""
    def parts(s):
        t = s.sort(descending=True).values[count - 1]
        return s > t, s == t, count - int((s > t).sum())
    sure_a, tied_a, r_a = parts(score_a)
    sure_b, tied_b, r_b = parts(score_b)
    both = int((sure_a & sure_b).sum())
    p_a, p_b = int((tied_a & sure_b).sum()), int((tied_b & sure_a).sum())  # a tied pixel the other set has surely
    q = int((tied_a & tied_b).sum())
    u_a, u_b = int(tied_a.sum()) - p_a - q, int(tied_b.sum()) - p_b - q
    most = both + min(r_a, p_a) + min(r_b, p_b) + min(q, r_a - min(r_a, p_a), r_b - min(r_b, p_b))
    a_u = min(u_a, r_a)
    a_q = min(q, r_a - a_u)
    b_u = min(u_b, r_b)
    b_q = min(q, r_b - b_u)
    least = both + (r_a - a_u - a_q) + (r_b - b_u - b_q) + max(0, a_q + b_q - q)
    return least, most


def _tie_tolerant(got: np.ndarray, want: np.ndarray, map_a, map_b, k) -> np.ndarray:
    """want, with each image whose IoU a different (valid) tie-break explains replaced by the learner's."""
    sa, sb = _scores(map_a), _scores(map_b)
    count = max(1, round(k * sa.shape[1]))
    want = want.copy()
    for i in range(len(want)):
        if np.isnan(got[i]) or close(got[i], want[i]):
            continue
        least, most = _intersection_range(sa[i], sb[i], count)
        if any(close(got[i], j / (2 * count - j)) for j in range(least, most + 1)):
            want[i] = got[i]
    return want


def _iou_cases():
    """(what, map_a, map_b, k) on hand-made maps."""
    g = torch.Generator().manual_seed(0)
    cases = []
    a, b = torch.randn(4, 1, 6, 6, generator=g), torch.randn(4, 1, 6, 6, generator=g)
    b[:2] = a[:2] + 0.5 * torch.randn(2, 1, 6, 6, generator=g)  # two similar pairs, two unrelated
    cases.append(("4 signed 6x6 maps, k=0.25", a, b, 0.25))
    a, b = torch.randn(3, 1, 6, 6, generator=g), torch.randn(3, 1, 6, 6, generator=g)
    b[0] = -a[0]  # same magnitudes, opposite signs: IoU 1 for |map|
    cases.append(("3 signed 6x6 maps, k=0.1 (3.6 pixels)", a, b, 0.1))
    a, b = torch.randn(3, 2, 5, 5, generator=g), torch.randn(3, 2, 5, 5, generator=g)
    a[:, 1] *= -1.5
    b[0] = a[0] + 0.3 * torch.randn(2, 5, 5, generator=g)
    cases.append(("3 maps with 2 channels, 5x5, k=0.2", a, b, 0.2))
    a, b = torch.rand(2, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g)
    cases.append(("2 maps of 4x4, k=1 (every pixel)", a, b, 1.0))
    cases.append(("2 maps of 4x4, k=0.02 (0.32 pixels: at least one)", a, b, 0.02))
    # ties: in image 0 map_a has four pixels at the top value 5 and k picks 2 of them; map_b's top 2 is unambiguous
    a = torch.linspace(0.1, 1.6, 32).reshape(2, 1, 4, 4).clone()
    b = torch.linspace(0.2, 3.2, 32).flip(0).reshape(2, 1, 4, 4).clone()
    a[0, 0, 0, :] = 5.0
    b[0, 0, 0, 0], b[0, 0, 0, 1] = 9.0, 8.0
    cases.append(("2 maps of 4x4 with ties in map_a, k=0.125 (2 pixels)", a, b, 0.125))
    return cases


def check_topk_iou(topk_iou_fn):
    """topk_iou_fn(map_a, map_b, k) -> one IoU per image of the two maps' top-k (fraction) pixels by |map|
    (added over the channels). Compared with qsal_lab.saliency.topk_iou on hand-made maps."""
    cases = _iou_cases()
    for what, a, b, k in cases:
        n, pixels = len(a), a.shape[-2] * a.shape[-1]
        got = _numbers(call(topk_iou_fn, "topk_iou", a.clone(), b.clone(), k, hints=COUNT_ERRORS), "topk_iou", n,
                       "one IoU per image (a tensor of N numbers)", "image")
        want = _tie_tolerant(got, _reference_iou(a, b, k), a, b, k)  # another tie-break is just as right
        i = _first_difference(got, want)
        if i is None:
            continue
        message = (f"topk_iou() on {what}: expected {_fmt(want)} but got {_fmt(got)} (first difference: image {i}).")
        if np.isnan(got[i]):
            raise CheckFailed(f"{message} A nan IoU is 0 / 0: both top sets were empty. {K_HINT}.")
        for mistake, wrong in _iou_variants(a, b, k).items():
            if _first_difference(got, wrong) is None:
                raise CheckFailed(f"{message} {_iou_hint(mistake, k, pixels, a.shape)}")
        if np.any((got < 0) | (got > 1)):
            raise CheckFailed(f"{message} An IoU lies between 0 and 1: |A & B| / |A | B|.")
        raise CheckFailed(f"{message} Per image: score = map.abs().sum(1) (one number per pixel), the top "
                          f"count = max(1, round(k * H * W)) pixels of each map, then |A & B| / |A | B|.")
    passed(f"check_topk_iou passed: your topk_iou() matches qsal_lab.saliency.topk_iou on {len(cases)} hand-made "
            f"cases (signed maps, rounding k * H * W, two channels, k = 1, at least one pixel, ties).")


def check_topk_iou_on_maps(topk_iou_fn, maps: dict, k: float = 0.1):
    """Your topk_iou on real maps ({method: (N, C, H, W) maps of the same images}) against the library's,
    for every pair of methods; prints the table of mean IoUs and returns {(a, b): mean IoU}."""
    names = list(maps)
    if len(names) < 2:
        raise ValueError(f"check_topk_iou_on_maps needs maps of at least two methods, got {names}")
    with quietly():  # the hand-made cases first: a mistake is named there, and never passes here
        check_topk_iou(topk_iou_fn)
    result = {}
    for first, second in itertools.combinations(names, 2):
        a, b = maps[first], maps[second]
        got = _numbers(call(topk_iou_fn, "topk_iou", a.clone(), b.clone(), k, hints=COUNT_ERRORS), "topk_iou",
                       len(a), "one IoU per image (a tensor of N numbers)", "image")
        want = _tie_tolerant(got, _reference_iou(a, b, k), a, b, k)
        i = _first_difference(got, want)
        if i is not None:
            raise CheckFailed(f"topk_iou({first}, {second}, k={k:g}) on image {i}: expected {want[i]:.4f} (qsal_lab's "
                              f"topk_iou), got {got[i]:.4f}. Pass check_topk_iou first: it names the usual mistakes.")
        result[first, second] = result[second, first] = float(np.mean(got))
    width = max(len(n) for n in names)
    print(f"mean top-{100 * k:g} % IoU over {len(next(iter(maps.values())))} images (your topk_iou):")
    print(" " * width + "".join(f"{n:>{max(8, len(n) + 1)}}" for n in names))
    for r in names:
        print(f"{r:<{width}}" + "".join(f"{(1.0 if r == c else result[r, c]):>{max(8, len(c) + 1)}.3f}" for c in names))
    passed(f"check_topk_iou_on_maps passed: your topk_iou() agrees with qsal_lab's on all "
            f"{len(names) * (len(names) - 1) // 2} pairs of methods.")
    return result


# ----------------------------------------------------------------------------- (b) removal curve

class _Spy(nn.Module):
    """The model handed to the learner's removal_curve: records every batch it is called with."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


def _removal_cases():
    """(what, inner model, x, y, maps, fractions, seed, has_ties)."""
    g = torch.Generator().manual_seed(0)

    def linear(c, h, w, classes=3):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes)).eval()

    cases = []
    x = torch.randn(6, 1, 6, 6, generator=g)
    maps = torch.randn(6, 1, 6, 6, generator=g) * torch.linspace(0.5, 2.0, 36).reshape(1, 1, 6, 6)
    model = linear(1, 6, 6)
    y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # one image wrong from the start
    cases.append(("6 images of 6x6 with signed maps", model, x, y, maps, (0, 0.1, 0.3, 0.5), 0, False))
    x = torch.randn(4, 3, 5, 5, generator=g)
    maps = torch.randn(4, 3, 5, 5, generator=g)
    maps[:, 2] *= -2.0
    model = linear(3, 5, 5)
    cases.append(("4 images with 3 channels, 5x5, seed=5", model, x, model(x).argmax(1), maps, (0, 0.2, 0.6), 5,
                  False))
    x = torch.randn(3, 1, 4, 4, generator=g)
    maps = torch.linspace(0.1, 1.5, 48).reshape(3, 1, 4, 4).clone()
    maps[:, 0, 1, :] = 2.0  # four tied pixels at the top; fraction 0.125 takes 2 of them
    model = linear(1, 4, 4)
    cases.append(("3 images of 4x4 whose maps tie", model, x, model(x).argmax(1), maps, (0, 0.125, 0.5), 0, True))
    return cases


def _diagnose_set(chosen, score_maps, k, fraction):
    """Why the learner's removed pixels (N, P bool) are not the k most salient: a hint, or a generic message."""
    n = len(chosen)
    score = _scores(score_maps)
    counts = chosen.sum(1)
    expected = _top(score, k)
    pixels = score.shape[1]
    if int(chosen.sum()) == n * k and not bool((counts == k).all()):
        flat = score.reshape(1, -1)
        if bool((_top(flat, n * k).reshape(n, -1) == chosen).all()):
            return ("you ranked the pixels of the whole batch together: rank each image's own pixels "
                    "(argsort/topk along dim=1 of an (N, H*W) score), so every image loses k of its own.")
    if not bool((counts == k).all()):
        i = int((counts != k).nonzero()[0])
        head = (f"image {i} had {int(counts[i])} pixels replaced, but round({fraction:g} * {pixels}) = {k} are expected "
                f"(every image loses the same number of pixels).")
        if bool((chosen == _threshold_top(score, k)).all()):
            return (head + " Several pixels tie at the k-th largest |map| value, and `score >= threshold` selects all "
                           "of them. Take exactly k pixels (torch.topk or argsort), whichever of the tied ones.")
        if int(counts[i]) == int(fraction * pixels) and int(fraction * pixels) != k:
            return head + f" {fraction:g} * {pixels} = {fraction * pixels:g}: round it to {k}; int() truncates."
        if int(counts.max()) == 0:
            return head + " Nothing was replaced: set mask True where a pixel is removed and pass it to replace_pixels."
        return head
    for how, descending, hint in (
            ("abs", False, "ranked ascending: you removed the LEAST salient pixels. Sort descending "
                           "(argsort(descending=True) or topk) and take the first k."),
            ("signed", True, "you ranked the signed map: a large negative value is as salient as a large positive "
                             "one. Rank |map| (map.abs(), added over the channels)."),
            ("abs_of_sum", True, "add the channels' magnitudes, map.abs().sum(1), not the magnitude of their sum "
                                 "map.sum(1).abs()."),
            ("signed", False, "you removed the most negative pixels (ranked the signed map ascending): rank |map| "
                              "from the largest down.")):
        if bool((chosen == _top(_scores(score_maps, how), k, descending)).all()):
            return hint
    i = int((chosen != expected).any(1).nonzero()[0])
    kept = ~chosen[i]
    return (f"in image {i} you removed a pixel with |map| = {score[i][chosen[i]].min().item():.4g} but kept one with "
            f"|map| = {score[i][kept].max().item():.4g}: remove the k pixels with the largest |map| "
            f"(added over the channels).")


def _diagnose_values(seen, x, mask, seed, fractions, index):
    """Why the replaced values differ from replace_pixels(x, mask, Generator().manual_seed(seed))."""
    if allclose(seen, replace_pixels(x, mask, torch.Generator().manual_seed(0))) and seed != 0:
        return f"the noise was drawn with seed 0; use the seed argument (here {seed}): torch.Generator().manual_seed(seed)."
    for skip_zero in (True, False):  # one generator for the whole curve instead of a fresh one per fraction
        g = torch.Generator().manual_seed(seed)
        for f in fractions[:index]:
            if f > 0 or not skip_zero:
                torch.rand(x.shape, generator=g)
        if index > 0 and allclose(seen, replace_pixels(x, mask, g)):
            return ("you drew the noise for every fraction from one generator. Seed a fresh one for each fraction, "
                    "replace_pixels(x, mask, torch.Generator().manual_seed(seed)), so every fraction and every map "
                    "get the same noise and curves differ only in which pixels go.")
    m = mask.reshape(len(x), 1, *x.shape[-2:]).expand_as(x)
    if seen[m].numel() and allclose(seen[m], seen[m].flatten()[0].expand(int(m.sum()))):
        return (f"every removed pixel holds the same value ({seen[m].flatten()[0].item():.4g}): replace them with "
                "replace_pixels(x, mask, generator), uniform noise in each image's range, not a constant.")
    return ("replace the removed pixels with replace_pixels(x, mask, torch.Generator().manual_seed(seed)): a fresh "
            "generator for each fraction, seeded with `seed`.")


def _accuracy_hint(got, want, n):
    for wrong, hint in ((100 * want, "Return accuracies as fractions in [0, 1], not percentages."),
                        (want * n, f"That is the number of correct images; divide by the {n} images."),
                        (1 - want, "That is the error rate; return the accuracy, the share of correct predictions.")):
        if close(got, wrong):
            return " " + hint
    return " Accuracy = (model(x_removed).argmax(1) == y).float().mean()."


SIGNATURE_HINTS = [("positional argument", "removal_curve takes (model, x, y, maps, fractions, seed=0)")]


def _watched_curve(removal_curve_fn, inner, x, y, maps, fractions, seed, where, pass_seed=True):
    """Run the learner's removal_curve on a watched `inner` model and check, fraction by fraction, which
    pixels it removed (the k largest |map|, any tie-break), what it put there (replace_pixels with a fresh
    generator seeded `seed`) and the accuracy it reports. Returns the accuracies."""
    spy = _Spy(inner)
    original = x.clone()
    args = (spy, x, y.clone(), maps.clone(), fractions) + ((seed,) if pass_seed else ())
    got = _numbers(call(removal_curve_fn, "removal_curve", *args, hints=SIGNATURE_HINTS), "removal_curve",
                   len(fractions), "one accuracy per fraction (a list of numbers)", "fraction")
    if not torch.equal(x, original):
        raise CheckFailed(f"{where} changed x in place: work on a copy (replace_pixels returns a new tensor).")
    n, pixels = len(x), x.shape[-2] * x.shape[-1]
    rows = torch.cat(spy.seen) if spy.seen else torch.zeros(0, *x.shape[1:])
    if len(rows) != len(fractions) * n:
        raise CheckFailed(f"{where}: the model was called on {len(rows)} images for {len(fractions)} fractions of "
                          f"{n} images; call it once per fraction on all {n} images (fraction 0: the images as "
                          f"they are), {len(fractions) * n} in all.")
    score = _scores(maps)
    for index, (f, seen) in enumerate(zip(fractions, rows.split(n))):
        at = f"{where}, fraction {f:g}"
        changed = (seen != x).any(1).flatten(1)
        k = round(f * pixels)
        if k == 0:
            if changed.any():
                raise CheckFailed(f"{at}: round({f:g} * {pixels}) = 0 pixels are removed, but {int(changed.sum())} "
                                  f"pixels changed: evaluate the images as they are.")
        else:
            if not bool(_valid_top(changed, score, k).all()):
                raise CheckFailed(f"{at}: {_diagnose_set(changed, maps, k, f)}")
            want_seen = replace_pixels(x, changed, torch.Generator().manual_seed(seed))
            if not allclose(seen, want_seen):
                raise CheckFailed(f"{at}: the right pixels were removed, but "
                                  f"{_diagnose_values(seen, x, changed, seed, fractions, index)}")
        with torch.no_grad():
            want = float((inner(seen).argmax(1) == y).float().mean())
        if not close(got[index], want):
            raise CheckFailed(f"{at}: the model got {want:.4g} of the images you passed it right, but your curve "
                              f"says {got[index]:.4g}.{_accuracy_hint(got[index], want, n)}")
    return got


def check_removal_curve(removal_curve_fn):
    """removal_curve_fn(model, x, y, maps, fractions, seed=0) -> the accuracy after removing each fraction of
    every image's most salient pixels (by |map| added over the channels, round(fraction * H * W) of them),
    replaced with replace_pixels(x, mask, torch.Generator().manual_seed(seed)). The model is watched: the
    check sees which pixels each fraction removed and with what."""
    from ..saliency import removal_curve

    cases = _removal_cases()
    for what, inner, x, y, maps, fractions, seed, has_ties in cases:
        where = f"removal_curve() on {what}"
        got = _watched_curve(removal_curve_fn, inner, x, y, maps, fractions, seed, where, pass_seed=seed != 0)
        if not has_ties:  # with no ties to break, the library's curve is the same to the last digit
            want = removal_curve(inner, x, y, maps, fractions, seed=seed).accuracy
            i = _first_difference(got, np.asarray(want))
            if i is not None:
                raise CheckFailed(f"{where}: expected {_fmt(want)} (qsal_lab's removal_curve) but got {_fmt(got)}.")
    passed(f"check_removal_curve passed: your removal_curve() removes the same pixels, with the same noise, and "
            f"gives the same accuracies as qsal_lab's removal_curve on {len(cases)} hand-made cases (signed maps, "
            f"rounding, three channels, a seed, ties).")


def check_removal_curve_on_model(removal_curve_fn, model, x, y, maps: dict, fractions, seed: int = 0) -> dict:
    """Your removal_curve on a real model, for every entry of `maps` ({method: maps}) and for random pixels,
    watched like check_removal_curve and next to qsal_lab's removal_curve. Prints both areas (they differ
    only where exact ties, e.g. the zeros of Grad-CAM or IG on the background, are broken differently);
    returns {name: RemovalCurve} with your accuracies, which qsal_lab.saliency.plot_removal_curves draws."""
    from ..saliency import RemovalCurve, random_saliency, removal_curve

    with quietly():  # the hand-made cases first: a mistake is named there, and never passes here
        check_removal_curve(removal_curve_fn)
    fractions = tuple(float(f) for f in fractions)
    all_maps = {**maps, "random": random_saliency(x, seed)}
    span = fractions[-1] - fractions[0]
    curves, rows = {}, []
    for name, m in all_maps.items():
        got = _watched_curve(removal_curve_fn, model, x, y, m, fractions, seed,
                             f"removal_curve() with the {name} maps")
        area = float(np.trapezoid(got, fractions) / span) if span > 0 else float(got[0])
        curves[name] = RemovalCurve(list(fractions), [float(a) for a in got], area)
        rows.append((name, area, removal_curve(model, x, y, m, fractions, seed=seed).area))
    width = max(len(r[0]) for r in rows)
    print(f"{len(x)} images, {len(fractions)} fractions from {fractions[0]:g} to {fractions[-1]:g}; "
          f"area = mean accuracy over the curve (lower = more faithful)")
    print(f"{'maps':<{width}} {'your area':>10} {'qsal_lab':>9}")
    for name, area, ref in rows:
        print(f"{name:<{width}} {area:>10.4f} {ref:>9.4f}")
    ties = [name for name, area, ref in rows if not close(area, ref)]
    if ties:
        print(f"({', '.join(ties)}: some pixels tie at the k-th largest |map|, e.g. exact zeros, and your tie-break "
              f"removed others than qsal_lab's, which takes the first in reading order; both are right)")
    passed(f"check_removal_curve_on_model passed: for {', '.join(all_maps)} your removal_curve() removed the most "
            f"salient pixels, replaced them like qsal_lab and reported the model's accuracy.")
    return curves
