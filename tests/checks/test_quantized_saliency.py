"""The chapter 7 (quantized and interpretable) exercise checks: right answers pass, typical mistakes fail with
the message that explains them."""
import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.quantized_saliency import check_agreement_by_bits, check_rank_agreement


def pearson(u, v):
    u, v = u - u.mean(), v - v.mean()
    with np.errstate(invalid="ignore", divide="ignore"):  # a map zero everywhere: nan
        return float((u * v).sum() / np.sqrt((u * u).sum() * (v * v).sum()))


def written(map_a, map_b, score=lambda m: m.abs().sum(1), rank=rankdata):
    a, b = score(map_a).flatten(1).numpy(), score(map_b).flatten(1).numpy()
    return [pearson(rank(u), rank(v)) for u, v in zip(a, b)]


def torch_average_ranks(map_a, map_b):  # another right answer, torch only: average ranks by hand
    def ranks(s):
        order = s.argsort()
        r = torch.empty_like(s)
        r[order] = torch.arange(1, len(s) + 1, dtype=s.dtype)
        out = torch.empty_like(s)
        for value in s.unique():
            tied = s == value
            out[tied] = r[tied].mean()
        return out
    a, b = map_a.abs().sum(1).flatten(1).double(), map_b.abs().sum(1).flatten(1).double()
    res = []
    for u, v in zip(a, b):
        ru, rv = ranks(u) - ranks(u).mean(), ranks(v) - ranks(v).mean()
        res.append((ru * rv).sum() / (ru.norm() * rv.norm()))
    return torch.stack(res)


def test_right_answers_pass(capsys):
    check_rank_agreement(written)
    assert "✅ check_rank_agreement passed" in capsys.readouterr().out
    check_rank_agreement(torch_average_ranks)


ordinal = lambda p: np.argsort(np.argsort(p, kind="stable")).astype(float)  # noqa: E731


@pytest.mark.parametrize("mistake, message", [
    (lambda a, b: None, r"rank_agreement\(\) returned None"),
    (lambda a, b: 0.5, "returned one number for 4 images"),
    (lambda a, b: written(a, b, rank=lambda p: p), "Pearson correlation of the values"),
    (lambda a, b: written(a, b, rank=ordinal), "share their average rank"),
    (lambda a, b: written(a, b, score=lambda m: m.sum(1)), "ranked the signed maps"),
    (lambda a, b: [2.0] * len(a), "between -1 and 1"),
    (lambda a, b: [0.1] * len(a), "average ranks"),
])
def test_typical_mistakes_get_their_message(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        check_rank_agreement(mistake)


def test_abs_of_sum_named_on_two_channels():
    def abs_of_sum(a, b):
        if a.shape[1] == 1:
            return written(a, b)
        return written(a, b, score=lambda m: m.sum(1).abs())
    with pytest.raises(CheckFailed, match=r"2 channels.*map.abs\(\).sum\(1\), not"):
        check_rank_agreement(abs_of_sum)


def test_agreement_by_bits_prints_and_returns_means(capsys):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 1, 6, 6, generator=g)
    maps = {"float": base, "W8A8": base + 0.1 * torch.randn(5, 1, 6, 6, generator=g),
            "W2A2": torch.randn(5, 1, 6, 6, generator=g)}
    out = check_agreement_by_bits(written, maps, threshold=0.5)
    assert list(out) == ["W8A8", "W2A2"] and out["W8A8"] > 0.9 and out["W2A2"] < 0.5
    text = capsys.readouterr().out
    assert "first below 0.5: W2A2" in text and "check_agreement_by_bits passed" in text
    # the hand-made cases run first: a mistake fails with their message, never with a pass on real maps
    with pytest.raises(CheckFailed, match=r"rank_agreement\(\) on 4 signed 6x6 maps.*Pearson correlation of the values"):
        check_agreement_by_bits(lambda a, b: written(a, b, rank=lambda p: p), maps)

    def values_on_big_maps(a, b):  # right on the hand-made maps, wrong on 5 maps
        return written(a, b, rank=(lambda p: p) if len(a) == 5 else rankdata)
    with pytest.raises(CheckFailed, match=r"rank_agreement\(float, W8A8\) on image 0.*Pass check_rank_agreement"):
        check_agreement_by_bits(values_on_big_maps, maps)
    with pytest.raises(ValueError, match="no 'fp' entry"):
        check_agreement_by_bits(written, maps, reference="fp")
