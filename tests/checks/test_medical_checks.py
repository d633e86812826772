"""The chapter 9 (medical images) exercise checks: right answers pass, typical mistakes fail with the
message that explains them."""
import numpy as np
import pytest

from qsal_lab import clinical
from qsal_lab.checks import CheckFailed
from qsal_lab.checks.medical import (_threshold_cases, check_operating_point, check_sensitivity_specificity,
                                     check_threshold_for_sensitivity)


def counts(y, p, t, strict=False):
    flagged = p > t if strict else p >= t
    return ((flagged & (y == 1)).sum(), (~flagged & (y == 1)).sum(), (~flagged & (y == 0)).sum(),
            (flagged & (y == 0)).sum())


def good(y, p, t):
    tp, fn, tn, fp = counts(y, p, t)
    return tp / (tp + fn), tn / (tn + fp)


def good_sklearn_style(y, p, t):  # another right answer: via the library's confusion matrix, as numpy floats
    m = clinical.binary_metrics(y, p, t)
    return np.float64(m["sensitivity"]), np.float64(m["specificity"])


def test_sensitivity_specificity_passes_right_answers(capsys):
    check_sensitivity_specificity(good)
    assert "✅ check_sensitivity_specificity passed" in capsys.readouterr().out
    check_sensitivity_specificity(good_sklearn_style)


def test_sensitivity_specificity_names_the_usual_mistakes():
    def swapped(y, p, t):
        s, c = good(y, p, t)
        return c, s

    def strict(y, p, t):
        tp, fn, tn, fp = counts(y, p, t, strict=True)
        return tp / (tp + fn), tn / (tn + fp)

    def percent(y, p, t):
        s, c = good(y, p, t)
        return 100 * s, 100 * c

    def ppv(y, p, t):
        tp, fn, tn, fp = counts(y, p, t)
        return tp / (tp + fp), tn / (tn + fp)

    def npv(y, p, t):
        tp, fn, tn, fp = counts(y, p, t)
        return tp / (tp + fn), tn / (tn + fn)

    def below(y, p, t):
        return good(y, 1 - p, 1 - t + 1e-12)

    def raw_counts(y, p, t):
        tp, fn, tn, fp = counts(y, p, t)
        return tp, tn

    cases = [(lambda y, p, t: None, r"returned None: fill in its TODO"), (swapped, "swapped"),
             (strict, "p > threshold"), (percent, "percentages"), (ppv, "precision \\(PPV\\)"), (npv, "the NPV"),
             (raw_counts, "counts"), (lambda y, p, t: 0.5, "one float"),
             (lambda y, p, t: (0.5, 0.5, 0.5), "returned 3 values")]
    for fn, message in cases:
        with pytest.raises(CheckFailed, match=message):
            check_sensitivity_specificity(fn)
    with pytest.raises(CheckFailed, match="BELOW the threshold|expected sensitivity"):
        check_sensitivity_specificity(below)


def best_threshold(y, p, target):
    for t in sorted(set(p.tolist()), reverse=True):
        if good(y, p, t)[0] >= target:
            return t


def test_threshold_for_sensitivity_passes_right_answers(capsys):
    check_threshold_for_sensitivity(best_threshold)
    assert "✅ check_threshold_for_sensitivity passed" in capsys.readouterr().out
    # the library's rule (the middle of the gap below the chosen score) makes the same decisions
    check_threshold_for_sensitivity(lambda y, p, target: clinical.choose_threshold(y, p, "sensitivity", target).threshold)


def test_threshold_for_sensitivity_names_the_usual_mistakes():
    def lowest(y, p, target):
        return float(p.min())

    def one_too_high(y, p, target):  # stops one score early: just below the target
        scores = sorted(set(p.tolist()), reverse=True)
        return scores[scores.index(best_threshold(y, p, target)) - 1]

    def too_low(y, p, target):  # one score further than needed: more healthy cases flagged
        scores = sorted(set(p.tolist()), reverse=True)
        return scores[scores.index(best_threshold(y, p, target)) + 3]

    def youden(y, p, target):
        return clinical.choose_threshold(y, p, "youden").threshold

    for fn, message in [(lambda y, p, t: None, "returned None"), (lowest, "the lowest score"),
                        (one_too_high, "below the target"), (too_low, "flags more healthy cases than needed"),
                        (lambda y, p, t: 100 * best_threshold(y, p, t), "percentage"),
                        (lambda y, p, t: t, "the target itself"), (lambda y, p, t: (0.5, 0.9), "several values")]:
        with pytest.raises(CheckFailed, match=message):
            check_threshold_for_sensitivity(fn)
    y, p, target = _threshold_cases()[0]
    if clinical.binary_metrics(y, p, youden(y, p, target))["sensitivity"] != good(y, p, best_threshold(y, p, target))[0]:
        with pytest.raises(CheckFailed):
            check_threshold_for_sensitivity(youden)


def split_scores(seed):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(300, dtype=np.int64), np.zeros(200, dtype=np.int64)]
    return y, np.clip(np.r_[rng.beta(6, 2, 300), rng.beta(2, 4, 200)], 0, 1)


def test_operating_point_accepts_the_validation_choice_and_names_test_use(capsys):
    val, test = split_scores(0), split_scores(1)
    on_val, on_test = best_threshold(*val, 0.95), best_threshold(*test, 0.95)
    assert on_val != on_test
    out = check_operating_point(on_val, val, test, 0.95)
    assert "✅ check_operating_point passed" in capsys.readouterr().out
    assert out["threshold"] == on_val and 0 <= out["test_sensitivity"] <= 1
    with pytest.raises(CheckFailed, match="threshold is None"):
        check_operating_point(None, val, test, 0.95)
    with pytest.raises(CheckFailed, match="TEST split"):
        check_operating_point(on_test, val, test, 0.95)
    with pytest.raises(CheckFailed, match=r"lies in \[0, 1\]"):
        check_operating_point(100 * on_val, val, test, 0.95)
    with pytest.raises(CheckFailed, match="the validation split's choice"):
        check_operating_point(0.5, val, test, 0.95)
