"""The chapter 5 (saliency maps) exercise checks: right answers pass, typical mistakes fail with the
message that explains them."""
import pytest
import torch
from torch import nn

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.saliency_maps import (check_removal_curve, check_removal_curve_on_model, check_topk_iou,
                                           check_topk_iou_on_maps, replace_pixels)
from qsal_lab.saliency import mask_features


# ----------------------------------------------------------------------------- top-k IoU

def top_sets(map_a, k, score=lambda m: m.abs().sum(1), count=None, largest=True):
    s = score(map_a).flatten(1)
    count = max(1, round(k * s.shape[1])) if count is None else count
    return torch.zeros_like(s, dtype=torch.bool).scatter_(1, s.topk(count, dim=1, largest=largest).indices, True)


def good_iou(map_a, map_b, k):
    a, b = top_sets(map_a, k), top_sets(map_b, k)
    return (a & b).sum(1) / (a | b).sum(1)


def argsort_iou(map_a, map_b, k):  # another right answer: numpy-free argsort, a list back
    def top(m):
        s = m.abs().sum(1).flatten(1)
        order = s.argsort(dim=1, descending=True)[:, :max(1, round(k * s.shape[1]))]
        return [set(row.tolist()) for row in order]
    return [len(a & b) / len(a | b) for a, b in zip(top(map_a), top(map_b))]


def iou_with(**how):
    def iou(map_a, map_b, k):
        a, b = top_sets(map_a, k, **how), top_sets(map_b, k, **how)
        return (a & b).sum(1) / (a | b).sum(1)
    return iou


def test_check_topk_iou_passes_right_answers(capsys):
    check_topk_iou(good_iou)
    assert "✅ check_topk_iou passed" in capsys.readouterr().out
    check_topk_iou(argsort_iou)


def test_check_topk_iou_names_the_usual_mistakes():
    with pytest.raises(CheckFailed, match=r"topk_iou\(\) returned None: fill in its TODO"):
        check_topk_iou(lambda a, b, k: None)
    with pytest.raises(CheckFailed, match="top-k of the signed map.*map.abs"):
        check_topk_iou(iou_with(score=lambda m: m.sum(1)))
    with pytest.raises(CheckFailed, match="Ranked ascending: your sets are the LEAST salient"):
        check_topk_iou(iou_with(largest=False))
    with pytest.raises(CheckFailed, match=r"2 channels: add the channels' magnitudes, map.abs\(\).sum\(1\)"):
        check_topk_iou(iou_with(score=lambda m: m.sum(1).abs()))

    def truncated(map_a, map_b, k):
        count = int(k * map_a.shape[-2] * map_a.shape[-1])
        a, b = top_sets(map_a, k, count=count), top_sets(map_b, k, count=count)
        return (a & b).sum(1) / (a | b).sum(1)
    with pytest.raises(CheckFailed, match=r"k=0.1 \(3.6 pixels\).*k \* H \* W = 3.6 pixels here: round it to 4. "
                                          r"int\(\) truncates it to 3"):
        check_topk_iou(truncated)

    def k_as_count(map_a, map_b, k):  # torch.topk(scores, 0.25) raises
        a, b = map_a.abs().sum(1).flatten(1), map_b.abs().sum(1).flatten(1)
        ia, ib = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
        return torch.tensor([len(set(x.tolist()) & set(y.tolist())) for x, y in zip(ia, ib)])
    with pytest.raises(CheckFailed, match=r"raised TypeError.*k is a fraction of the pixels \(k=0.1 means the top "
                                          r"10 %\), not a count"):
        check_topk_iou(k_as_count)

    def k_as_int_count(map_a, map_b, k):  # int(k) pixels: 0 -> empty sets -> nan
        a, b = top_sets(map_a, k, count=int(k)), top_sets(map_b, k, count=int(k))
        return (a & b).sum(1) / (a | b).sum(1)
    with pytest.raises(CheckFailed, match=r"A nan IoU is 0 / 0: both top sets were empty. k is a fraction"):
        check_topk_iou(k_as_int_count)

    def dice(map_a, map_b, k):
        a, b = top_sets(map_a, k), top_sets(map_b, k)
        return 2 * (a & b).sum(1) / (a.sum(1) + b.sum(1))
    with pytest.raises(CheckFailed, match=r"IoU divides by the union"):
        check_topk_iou(dice)

    def one_for_the_batch(map_a, map_b, k):
        return good_iou(map_a, map_b, k).mean()
    with pytest.raises(CheckFailed, match=r"returned 1 number\(s\) .* for 4 images; return one IoU per image"):
        check_topk_iou(one_for_the_batch)


def test_check_topk_iou_accepts_any_tie_break_but_not_a_threshold():
    def reversed_ties(map_a, map_b, k):  # breaks ties by the LAST position: still a right answer
        def top(m):
            s = m.abs().sum(1).flatten(1).flip(1)
            count = max(1, round(k * s.shape[1]))
            idx = s.shape[1] - 1 - s.argsort(dim=1, descending=True, stable=True)[:, :count]
            return torch.zeros_like(s, dtype=torch.bool).scatter_(1, idx, True)
        a, b = top(map_a), top(map_b)
        return (a & b).sum(1) / (a | b).sum(1)
    check_topk_iou(reversed_ties)

    def threshold(map_a, map_b, k):
        def top(m):
            s = m.abs().sum(1).flatten(1)
            return s >= s.topk(max(1, round(k * s.shape[1])), dim=1).values[:, -1:]
        a, b = top(map_a), top(map_b)
        return (a & b).sum(1) / (a | b).sum(1)
    with pytest.raises(CheckFailed, match=r"with ties in map_a.*`score >= threshold` keeps all of them: more than "
                                          r"round\(k \* H \* W\) = 2 pixels"):
        check_topk_iou(threshold)


def test_check_topk_iou_on_maps_both_directions(capsys):
    g = torch.Generator().manual_seed(0)
    maps = {name: torch.randn(5, 1, 8, 8, generator=g) for name in ("saliency", "ig", "gradcam")}
    result = check_topk_iou_on_maps(good_iou, maps, k=0.1)
    out = capsys.readouterr().out
    assert "✅ check_topk_iou_on_maps passed" in out and "mean top-10 % IoU over 5 images" in out
    assert result["saliency", "ig"] == result["ig", "saliency"]
    with pytest.raises(CheckFailed, match=r"topk_iou\(\) returned None"):
        check_topk_iou_on_maps(lambda a, b, k: None, maps)
    # the hand-made cases run first: a mistake gets their message, never a pass on real maps
    with pytest.raises(CheckFailed, match=r"topk_iou\(\) on 4 signed 6x6 maps.*LEAST salient"):
        check_topk_iou_on_maps(iou_with(largest=False), maps)

    def ascending_on_8x8(map_a, map_b, k):  # right on the hand-made maps, wrong on 8x8 maps
        return iou_with(largest=map_a.shape[-1] != 8)(map_a, map_b, k)
    with pytest.raises(CheckFailed, match=r"topk_iou\(saliency, ig, k=0.1\) on image \d: expected .* Pass "
                                          r"check_topk_iou first"):
        check_topk_iou_on_maps(ascending_on_8x8, maps)


def test_intersection_range_is_what_every_tie_break_gives():
    """Brute force over all top-count sets of small maps full of ties."""
    import itertools

    from qsal_lab.checks.saliency_maps import _intersection_range

    g = torch.Generator().manual_seed(3)
    for _ in range(40):
        a, b = torch.randint(0, 3, (8,), generator=g).double(), torch.randint(0, 3, (8,), generator=g).double()
        count = int(torch.randint(1, 8, (1,), generator=g))

        def valid_sets(s):
            t = s.sort(descending=True).values[count - 1]
            return [set(c) for c in itertools.combinations(range(8), count)
                    if all(s[i] >= t for i in c) and all(s[i] <= t for i in set(range(8)) - set(c))]
        sizes = {len(x & y) for x in valid_sets(a) for y in valid_sets(b)}
        assert _intersection_range(a, b, count) == (min(sizes), max(sizes))
        assert sizes == set(range(min(sizes), max(sizes) + 1))


def test_check_topk_iou_on_maps_accepts_another_tie_break_of_zeros():
    g = torch.Generator().manual_seed(0)
    maps = {"relu": torch.randn(6, 1, 8, 8, generator=g).relu(), "sparse": torch.randn(6, 1, 8, 8, generator=g).relu()}
    maps["relu"][:, :, :6] = 0  # 48 zeros of 64 pixels: the top 25 % (16) reaches into them

    def reversed_ties(map_a, map_b, k):
        def top(m):
            s = m.abs().sum(1).flatten(1).flip(1)
            count = max(1, round(k * s.shape[1]))
            idx = s.shape[1] - 1 - s.argsort(dim=1, descending=True, stable=True)[:, :count]
            return torch.zeros_like(s, dtype=torch.bool).scatter_(1, idx, True)
        a, b = top(map_a), top(map_b)
        return (a & b).sum(1) / (a | b).sum(1)
    assert not torch.allclose(torch.as_tensor(reversed_ties(maps["relu"], maps["sparse"], 0.25)).double(),
                              good_iou(maps["relu"], maps["sparse"], 0.25).double())
    check_topk_iou_on_maps(reversed_ties, maps, k=0.25)


# ----------------------------------------------------------------------------- the replacement helper

def test_replace_pixels_puts_in_exactly_what_mask_features_does():
    g = torch.Generator().manual_seed(0)
    x, saliency = torch.randn(5, 3, 7, 7, generator=g), torch.randn(5, 3, 7, 7, generator=g)
    masked, mask = mask_features(x, saliency, 0.3, least=False, generator=torch.Generator().manual_seed(4))
    assert torch.equal(replace_pixels(x, mask, torch.Generator().manual_seed(4)), masked)
    assert torch.equal(replace_pixels(x, mask.flatten(1), torch.Generator().manual_seed(4)), masked)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        replace_pixels(x, mask.float())
    with pytest.raises(ValueError, match=r"one entry per pixel, \(N, 1, H, W\) = \(5, 1, 7, 7\)"):
        replace_pixels(x, mask[:2])


# ----------------------------------------------------------------------------- removal curve

def good_curve(model, x, y, maps, fractions, seed=0):
    score = maps.abs().sum(1).flatten(1)
    accuracy = []
    for f in fractions:
        k = round(f * x.shape[-2] * x.shape[-1])
        mask = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(k, dim=1).indices, True)
        removed = replace_pixels(x, mask, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            accuracy.append((model(removed).argmax(1) == y).float().mean().item())
    return accuracy


def curve_with(rank=lambda maps: maps.abs().sum(1).flatten(1), count=lambda f, p: round(f * p), largest=True,
               fill=None, generator=None, accuracy=None, threshold=False, per_batch=False, skip_zero=False,
               seed_override=None):
    """good_curve with one typical mistake switched on."""
    def curve(model, x, y, maps, fractions, seed=0):
        score = rank(maps)
        shared = torch.Generator().manual_seed(seed) if generator == "shared" else None
        out = []
        for f in fractions:
            if skip_zero and f == 0:
                out.append(1.0)
                continue
            k = count(f, score.shape[1])
            if per_batch:
                flat = torch.zeros(score.numel(), dtype=torch.bool)
                flat[score.flatten().topk(k * len(x)).indices] = True
                mask = flat.view_as(score)
            elif threshold and k:
                mask = score >= score.topk(k, dim=1).values[:, -1:]
            else:
                mask = torch.zeros_like(score, dtype=torch.bool).scatter_(
                    1, score.topk(k, dim=1, largest=largest).indices, True)
            if fill is not None:
                removed = torch.where(mask.view(len(x), 1, *x.shape[-2:]), torch.full_like(x, fill), x)
            else:
                g = shared or torch.Generator().manual_seed(seed if seed_override is None else seed_override)
                removed = replace_pixels(x, mask, g)
            with torch.no_grad():
                acc = (model(removed).argmax(1) == y).float().mean().item()
            out.append(accuracy(acc, len(x)) if accuracy else acc)
        return out
    return curve


def test_check_removal_curve_passes_a_right_answer(capsys):
    check_removal_curve(good_curve)
    assert "✅ check_removal_curve passed" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(largest=False), r"fraction 0.1: ranked ascending: you removed the LEAST salient pixels"),
    (dict(rank=lambda m: m.sum(1).flatten(1)), r"you ranked the signed map: a large negative value is as salient"),
    (dict(rank=lambda m: m.sum(1).abs().flatten(1)), r"3 channels, 5x5, seed=5, fraction 0.2: add the channels' "
                                                     r"magnitudes, map.abs\(\).sum\(1\)"),
    (dict(count=lambda f, p: int(f * p)), r"fraction 0.1: image 0 had 3 pixels replaced, but round\(0.1 \* 36\) = 4 "
                                          r"are expected .* 0.1 \* 36 = 3.6: round it to 4; int\(\) truncates"),
    (dict(threshold=True), r"maps tie, fraction 0.125: image 0 had 4 pixels replaced, but round\(0.125 \* 16\) = 2 "
                           r".* `score >= threshold` selects all of them"),
    (dict(per_batch=True), r"you ranked the pixels of the whole batch together"),
    (dict(generator="shared"), r"fraction 0.1: the right pixels were removed, but you drew the noise for every "
                               r"fraction from one generator"),
    (dict(fill=0.0), r"every removed pixel holds the same value \(0\).*not a constant"),
    (dict(seed_override=0), r"seed=5, fraction 0.2: the right pixels were removed, but the noise was drawn with "
                            r"seed 0; use the seed argument \(here 5\)"),
    (dict(accuracy=lambda a, n: 100 * a), r"fraction 0: the model got 0.8333 of the images you passed it right, but "
                                          r"your curve says 83.33. Return accuracies as fractions"),
    (dict(accuracy=lambda a, n: a * n), r"That is the number of correct images; divide by the 6 images"),
    (dict(accuracy=lambda a, n: 1 - a), r"That is the error rate"),
    (dict(skip_zero=True), r"the model was called on 18 images for 4 fractions of 6 images; call it once per "
                           r"fraction"),
])
def test_check_removal_curve_names_the_usual_mistakes(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        check_removal_curve(curve_with(**mistake))


def test_check_removal_curve_on_the_untouched_and_odd_answers():
    with pytest.raises(CheckFailed, match=r"removal_curve\(\) returned None: fill in its TODO"):
        check_removal_curve(lambda model, x, y, maps, fractions, seed=0: None)
    with pytest.raises(CheckFailed, match=r"returned 1 number\(s\) .* for 4 fractions"):
        check_removal_curve(lambda model, x, y, maps, fractions, seed=0: 0.5)

    def in_place(model, x, y, maps, fractions, seed=0):
        x[:, :, 0, 0] = 0.0
        return good_curve(model, x, y, maps, fractions, seed)
    with pytest.raises(CheckFailed, match="changed x in place"):
        check_removal_curve(in_place)
    with pytest.raises(CheckFailed, match=r"takes \(model, x, y, maps, fractions, seed=0\)"):
        check_removal_curve(lambda model, x, y, maps, fractions: good_curve(model, x, y, maps, fractions))


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3)).eval()


def test_check_removal_curve_on_model_both_directions(capsys):
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 1, 10, 10, generator=g)
    y = model(x).argmax(1)
    maps = {"noise": torch.randn(12, 1, 10, 10, generator=g),
            "sparse": torch.randn(12, 1, 10, 10, generator=g).relu()}  # half exact zeros: ties at 0
    fractions = (0, 0.1, 0.3, 0.6)
    curves = check_removal_curve_on_model(good_curve, model, x, y, maps, fractions)
    out = capsys.readouterr().out
    assert "✅ check_removal_curve_on_model passed: for noise, sparse, random" in out
    assert set(curves) == {"noise", "sparse", "random"} and curves["noise"].fractions == list(fractions)
    assert curves["noise"].accuracy[0] == 1.0
    with pytest.raises(CheckFailed, match=r"removal_curve\(\) returned None"):
        check_removal_curve_on_model(lambda *a: None, model, x, y, maps, fractions)
    with pytest.raises(CheckFailed, match=r"on 6 images of 6x6 with signed maps, fraction 0.1: ranked ascending"):
        check_removal_curve_on_model(curve_with(largest=False), model, x, y, maps, fractions)

    def ascending_on_10x10(model, x, *rest):  # right on the hand-made cases, wrong on 10x10 images
        return curve_with(largest=x.shape[-1] != 10)(model, x, *rest)
    with pytest.raises(CheckFailed, match=r"with the noise maps, fraction 0.1: ranked ascending"):
        check_removal_curve_on_model(ascending_on_10x10, model, x, y, maps, fractions)
