"""mask_features: exactly the stated number of pixels, the least (or most) salient ones, noise within range."""
import pytest
import torch

from qsal_lab.saliency.masking import features_to_replace, mask_features


def batch(seed=0, n=4, c=1, h=8, w=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g) * 2 + 1, torch.randn(n, c, h, w, generator=g)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("channels", [1, 3])
def test_replaces_exactly_the_least_salient_pixels_within_each_images_range(fraction, channels):
    x, s = batch(c=channels)
    masked, mask = mask_features(x, s, fraction, generator=torch.Generator().manual_seed(0))
    k = round(fraction * 64)
    assert mask.shape == (4, 1, 8, 8) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [k] * 4
    score = s.abs().sum(1, keepdim=True)
    for i in range(4):
        assert score[i][mask[i]].max() <= score[i][~mask[i]].min()
    full = mask.expand_as(x)
    assert torch.equal(masked[~full], x[~full])  # untouched pixels are untouched
    assert (masked[full] != x[full]).all()  # replaced ones are new values
    low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    assert ((masked >= low) & (masked <= high)).all()  # inside each image's per-channel range


def test_most_salient_and_signed_ranking():
    x, s = batch()
    _, most = mask_features(x, s, 0.25, least=False)
    score = s.abs().sum(1, keepdim=True)
    assert all(score[i][most[i]].min() >= score[i][~most[i]].max() for i in range(4))
    _, signed = mask_features(x, s, 0.25, abs=False)  # the authors' default: the most negative gradients
    assert all(s[i][signed[i]].max() <= s[i][~signed[i]].min() for i in range(4))


def test_reproducible_under_a_seed_and_different_across_seeds():
    x, s = batch()
    a, _ = mask_features(x, s, 0.5, generator=torch.Generator().manual_seed(7))
    b, _ = mask_features(x, s, 0.5, generator=torch.Generator().manual_seed(7))
    c, _ = mask_features(x, s, 0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d, _ = mask_features(x, s, 0.5)
    torch.manual_seed(3)
    assert torch.equal(d, mask_features(x, s, 0.5)[0])  # the global RNG, seeded, too


def test_ties_are_broken_by_position():
    x = torch.randn(2, 1, 4, 4)
    _, mask = mask_features(x, torch.zeros_like(x), 0.25)
    assert mask[0].flatten().tolist() == [True] * 4 + [False] * 12


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.5", True, None])
def test_fraction_outside_0_1_is_refused(fraction):
    x, s = batch()
    with pytest.raises(ValueError, match=r"fraction must be a number strictly between 0 and 1"):
        mask_features(x, s, fraction)


def test_shapes_must_match():
    x, s = batch()
    with pytest.raises(ValueError, match="same shape"):
        mask_features(x, s[:, :, :4], 0.5)
    assert features_to_replace(x, 0.1) == 6  # round(6.4)
