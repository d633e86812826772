"""The chapter 6 (saliency-guided training) exercise check: right answers pass, typical mistakes fail with the
message that explains them."""
import pytest
import torch
from torch import nn

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.sgt import check_sgt_mask, check_sgt_mask_on_models
from qsal_lab.saliency import mask_features


def library(x, saliency, fraction, generator):
    return mask_features(x, saliency, fraction, generator=generator)


def written(x, saliency, fraction, generator, *, score=lambda s: s.abs().sum(1), count=None, largest=False,
            fill=None, low_high=None, in_place=False, per_channel_mask=False):
    n, c, h, w = x.shape
    s = score(saliency).flatten(1)
    k = round(fraction * h * w) if count is None else count(fraction * h * w)
    mask = torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, s.topk(k, dim=1, largest=largest).indices, True)
    mask = mask.view(n, 1, h, w)
    low, high = low_high(x) if low_high else (x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True))
    noise = low + (high - low) * torch.rand(x.shape, generator=generator) if fill is None else fill(x, low, high)
    if in_place:
        x[mask.expand_as(x)] = noise[mask.expand_as(x)]
        return x, mask
    if per_channel_mask:
        return torch.where(mask, noise, x), mask.expand_as(x).clone()
    return torch.where(mask, noise, x), mask


def test_right_answers_pass(capsys):
    check_sgt_mask(library)
    assert "✅ check_sgt_mask passed" in capsys.readouterr().out
    check_sgt_mask(written)

    def argsort_version(x, saliency, fraction, generator):  # another tie-break: argsort from the other end
        n, _, h, w = x.shape
        s = saliency.abs().sum(1).flatten(1)
        order = s.argsort(dim=1, descending=True).flip(1)[:, :round(fraction * h * w)]
        mask = torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, order, True).view(n, h, w)
        low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        return torch.where(mask[:, None], low + (high - low) * torch.rand(x.shape, generator=generator), x), mask
    check_sgt_mask(argsort_version)


@pytest.mark.parametrize("mistake, message", [
    (lambda *a: None, r"sgt_mask\(\) returned None: fill in its TODO"),
    (lambda x, s, f, g: written(x, s, f, g)[0], "must return two things"),
    (lambda x, s, f, g: written(x, s, f, g, largest=True), "you masked the MOST salient pixels"),
    (lambda x, s, f, g: written(x, s, f, g, score=lambda t: t.sum(1)), "ranked the signed saliency"),
    (lambda x, s, f, g: written(x, s, f, g, score=lambda t: t.sum(1).abs()), r"saliency.abs\(\).sum\(1\), not"),
    (lambda x, s, f, g: written(x, s, f, g, count=int), r"round it to 8; int\(\) truncates"),
    (lambda x, s, f, g: written(x, s, f, g, fill=lambda x, lo, hi: lo.expand_as(x)),
     "still hold their original value.*filling with the image's minimum"),
    (lambda x, s, f, g: written(x, s, f, g, fill=lambda x, lo, hi: ((lo + hi) / 2).expand_as(x)),
     "a constant fill draws the outline"),
    (lambda x, s, f, g: written(x, s, f, g, fill=lambda x, lo, hi: hi + torch.rand(x.shape, generator=g)),
     "outside its image channel's range"),
    (lambda x, s, f, g: written(x, s, f, g, low_high=lambda x: (x.amin(), x.amax())), "not of the whole batch"),
    (lambda x, s, f, g: written(x, s, f, g, fill=lambda x, lo, hi: (lo + (hi - lo) * 0.1 * torch.rand(
        x.shape, generator=g))), "draw them uniformly over the whole range"),
    (lambda x, s, f, g: written(x, s, f, g, in_place=True), r"changed x itself \(in place\)"),
    (lambda x, s, f, g: written(x, s, f, g, per_channel_mask=True), "has one entry per channel"),
    (lambda x, s, f, g: (torch.where(written(x, s, f, g)[1], x.amax(), x) + 1, written(x, s, f, g)[1]),
     "pixels outside the mask changed"),
])
def test_typical_mistakes_get_their_message(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        check_sgt_mask(mistake)


def test_ties_and_whole_batch_ranking():
    def threshold(x, saliency, fraction, generator):  # keeps every tied pixel: more than k
        n, _, h, w = x.shape
        s = saliency.abs().sum(1).flatten(1)
        k = round(fraction * h * w)
        mask = (s <= s.sort(dim=1).values[:, k - 1:k]).view(n, 1, h, w)
        low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        return torch.where(mask, low + (high - low) * torch.rand(x.shape, generator=generator), x), mask
    with pytest.raises(CheckFailed, match="digit-like.*Several pixels tie at the k-th smallest"):
        check_sgt_mask(threshold)

    def whole_batch(x, saliency, fraction, generator):
        n, _, h, w = x.shape
        s = saliency.abs().sum(1).flatten()
        k = round(fraction * h * w) * n
        mask = torch.zeros(n * h * w, dtype=torch.bool).scatter_(0, s.topk(k, largest=False).indices, True)
        mask = mask.view(n, 1, h, w)
        low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        return torch.where(mask, low + (high - low) * torch.rand(x.shape, generator=generator), x), mask
    with pytest.raises(CheckFailed, match="ranked the pixels of the whole batch together"):
        check_sgt_mask(whole_batch)


def test_on_models_reports_accuracy_and_kl(capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    out = check_sgt_mask_on_models(library, {"tiny": model}, x, y, fraction=0.5)
    assert set(out["tiny"]) >= {"masked", "mask", "accuracy", "kl"} and out["tiny"]["kl"] >= 0
    assert int(out["tiny"]["mask"].sum()) == 6 * 32
    assert "check_sgt_mask_on_models passed" in capsys.readouterr().out
    # the hand-made cases run first: a mistake fails with their message, never with a pass on real digits
    with pytest.raises(CheckFailed, match="on 4 images of 6x6 .*: you masked the MOST salient"):
        check_sgt_mask_on_models(lambda x, s, f, g: written(x, s, f, g, largest=True), {"tiny": model}, x, y)

    def most_salient_on_big_images(x, s, f, g):  # right on the hand-made batches, wrong on 8x8 digits
        return written(x, s, f, g, largest=x.shape[-1] == 8 and x.shape[0] == 6)
    with pytest.raises(CheckFailed, match="on the tiny model's digits: you masked the MOST salient"):
        check_sgt_mask_on_models(most_salient_on_big_images, {"tiny": model}, x, y)
