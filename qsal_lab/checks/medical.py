"""Checks for chapter 9's exercise (medical images): sensitivity and specificity at a threshold, the
threshold chosen on the validation split for a target sensitivity, and that choice on the real model.

    sensitivity_specificity(y, p, threshold) -> (sensitivity, specificity)      # positive: p >= threshold
    threshold_for_sensitivity(y, p, target) -> the highest threshold whose sensitivity reaches target

The first two checks run the learner's functions on small hand-made cases whose right answers are known
(scores that sit exactly on the threshold, more positives than negatives, sensitivity far from
specificity), so a wrong answer can be matched to the mistake that produced it: the two swapped, `>`
for `>=`, percentages for fractions, PPV or accuracy for sensitivity, counts for rates, the lowest
threshold instead of the highest. The third takes the threshold the learner picked for the shipped
model and says whether it was chosen on the validation split or, wrongly, on the test split.
"""
from __future__ import annotations

import numpy as np

from .common import CheckFailed, as_float, call, close, passed

CONVENTION = "predicted positive (pneumonia) when p >= threshold"


def _rates(y, p, threshold, strict=False):
    """The right answers: (sensitivity, specificity, tp, fn, tn, fp) with positive = p >= threshold."""
    y, p = np.asarray(y).reshape(-1), np.asarray(p, dtype=np.float64).reshape(-1)
    flagged = p > threshold if strict else p >= threshold
    tp, fn = int((flagged & (y == 1)).sum()), int((~flagged & (y == 1)).sum())
    tn, fp = int((~flagged & (y == 0)).sum()), int((flagged & (y == 0)).sum())
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return sens, spec, tp, fn, tn, fp


def _cases():
    """(y, p, threshold): 8 positives and 5 negatives, some scores exactly on the threshold; the
    sensitivity and specificity of each case differ from each other and from the strict (>) answer."""
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.95, 0.9, 0.8, 0.6, 0.6, 0.4, 0.3, 0.1, 0.7, 0.6, 0.35, 0.2, 0.05])
    return [(y, p, 0.6), (y, p, 0.35), (y[::-1].copy(), p[::-1].copy(), 0.9)]


def _pair(result, name):
    if result is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns (sensitivity, specificity).")
    if isinstance(result, dict):
        raise CheckFailed(f"{name}() returned a dict; return a pair of numbers: (sensitivity, specificity).")
    try:
        values = list(result)
    except TypeError:
        raise CheckFailed(f"{name}() returned one {type(result).__name__}; return two numbers: "
                          f"(sensitivity, specificity).") from None
    if len(values) != 2:
        raise CheckFailed(f"{name}() returned {len(values)} values; return exactly two: (sensitivity, specificity).")
    return (as_float(values[0], name, "sensitivity (first value)"),
            as_float(values[1], name, "specificity (second value)"))


def _diagnose_rates(got, y, p, t):
    """The usual mistake behind a wrong (sensitivity, specificity), or None."""
    sens, spec, tp, fn, tn, fp = _rates(y, p, t)
    s_sens, s_spec, *_ = _rates(y, p, t, strict=True)
    gs, gp = got
    where = f"(threshold {t:g}, {tp + fn} positives and {tn + fp} negatives)"
    if close(gs, sens) and close(gp, spec):
        return None
    if close(gs, 100 * sens) and close(gp, 100 * spec):
        return f"your values are percentages ({gs:.1f}, {gp:.1f}); return fractions in [0, 1] ({sens:.4f}, {spec:.4f})."
    if close(gs, spec) and close(gp, sens):
        return (f"sensitivity and specificity are swapped {where}: sensitivity is the share of the POSITIVES "
                f"(pneumonia, y = 1) that are flagged, TP / (TP + FN) = {sens:.4f}; specificity the share of the "
                f"negatives that are cleared, TN / (TN + FP) = {spec:.4f}.")
    if close(gs, s_sens) and close(gp, s_spec):
        return (f"you flag a case only when p > threshold; the convention is {CONVENTION}: a score exactly on "
                f"the threshold counts as positive {where}.")
    if close(gs, 1 - sens) and close(gp, 1 - spec):
        return f"you flag the cases BELOW the threshold; {CONVENTION}."
    if close(gs, tp) or close(gp, tn):
        return f"you returned counts (TP = {tp}, TN = {tn}); divide: TP / (TP + FN) and TN / (TN + FP)."
    if tp + fp and close(gs, tp / (tp + fp)):
        return (f"your sensitivity is TP / (TP + FP) = {gs:.4f}, the precision (PPV): the share of the flagged that "
                f"are sick. Sensitivity divides by all the sick: TP / (TP + FN) = {sens:.4f} {where}.")
    if tn + fn and close(gp, tn / (tn + fn)):
        return (f"your specificity is TN / (TN + FN) = {gp:.4f}, the NPV: the share of the cleared that are healthy. "
                f"Specificity divides by all the healthy: TN / (TN + FP) = {spec:.4f} {where}.")
    accuracy = (tp + tn) / len(y)
    if close(gs, accuracy) or close(gp, accuracy):
        return (f"{accuracy:.4f} is the accuracy over all cases; sensitivity counts the positives only, specificity "
                f"the negatives only {where}.")
    if close(gs, tp / len(y)) or close(gp, tn / len(y)):
        return (f"you divided by the number of all cases ({len(y)}); sensitivity divides by the positives "
                f"({tp + fn}), specificity by the negatives ({tn + fp}).")
    return (f"expected sensitivity {sens:.4f} and specificity {spec:.4f} {where}, got {gs:.4f} and {gp:.4f}. "
            f"Sensitivity = TP / (TP + FN), specificity = TN / (TN + FP), {CONVENTION}.")


def check_sensitivity_specificity(fn):
    """fn(y, p, threshold) -> (sensitivity, specificity) as fractions, positive when p >= threshold."""
    for y, p, t in _cases():
        got = _pair(call(fn, "sensitivity_specificity", y.copy(), p.copy(), t), "sensitivity_specificity")
        problem = _diagnose_rates(got, y, p, t)
        if problem:
            raise CheckFailed("sensitivity_specificity(): " + problem)
    passed(f"check_sensitivity_specificity passed: right on {len(_cases())} hand-made cases, scores exactly on "
           f"the threshold counted as positive.")


# ----------------------------------------------------------------------------- the threshold for a target sensitivity

def _reaches(sensitivity, target):
    """sensitivity >= target, up to rounding (a float32 7/8 is not quite 0.875)."""
    return sensitivity >= target or close(sensitivity, target)


def _best_threshold(y, p, target, strict=False):
    """The right answer: the highest distinct score whose `p >= score` reaches the target sensitivity (with
    strict=True: the mistake, whose sensitivity must exceed the target)."""
    for t in sorted(set(np.asarray(p, dtype=np.float64).tolist()), reverse=True):
        sensitivity = _rates(y, p, t)[0]
        if (sensitivity > target and not close(sensitivity, target)) if strict else _reaches(sensitivity, target):
            return t
    return float(np.min(p))


def _threshold_cases():
    """(y, p, target) on validation-like scores with ties: targets that fall between two positives (0.95, 0.85 of 30)
    and one reached exactly (0.5 = 15 of 30, exact in float32 too), where `>` and `>=` choose differently."""
    rng = np.random.default_rng(9)
    y = np.r_[np.ones(30, dtype=np.int64), np.zeros(20, dtype=np.int64)]
    p = np.round(np.r_[rng.beta(5, 2, 30), rng.beta(2, 5, 20)], 2)  # rounded: ties, some across classes
    order = rng.permutation(len(y))
    return [(y[order], p[order], 0.85), (y[order], p[order], 0.95), (y[order], p[order], 0.5)]


def _snap(t, p):
    """t, or the score of p it equals up to rounding: a threshold taken from float32 scores is a score too, although
    float32(0.55) > 0.55 would leave the case scored 0.55 unflagged."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    nearest = float(p[np.argmin(np.abs(p - t))])
    return nearest if close(t, nearest) else t


def _read_threshold(value, name):
    if value is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns a threshold.")
    if isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.size != 1):
        raise CheckFailed(f"{name}() returned {type(value).__name__} of several values; return one threshold "
                          f"(a number), not the sensitivity or specificity with it.")
    return as_float(np.asarray(value).reshape(-1)[0] if isinstance(value, np.ndarray) else value, name,
                    hint="e.g. with float(...)")


def _diagnose_threshold(t, y, p, target, name):
    best = _best_threshold(y, p, target)
    if np.array_equal(p >= t, p >= best):  # any threshold that flags the same cases is as right
        return None
    sens, spec, *_ = _rates(y, p, t)
    b_sens, b_spec, *_ = _rates(y, p, best)
    where = f"(target sensitivity {target:g}, {int(y.sum())} positives)"
    if t > 1 and close(t / 100, best):
        return f"{name}() returned {t:g}: a percentage. Scores and thresholds are probabilities in [0, 1] ({best:g})."
    if not _reaches(sens, target):
        return (f"at your threshold {t:g} the sensitivity is only {sens:.3f}, below the target {target:g} {where}; "
                f"{CONVENTION}, so the threshold must be low enough to flag that share of the positives: the "
                f"highest such threshold is {best:g}.")
    if close(t, float(np.min(p))):
        return (f"{name}() returned the lowest score ({t:g}): it flags everyone. Among the thresholds that reach the "
                f"target, take the HIGHEST ({best:g}, specificity {b_spec:.3f}): it flags the fewest healthy cases.")
    strict = _best_threshold(y, p, target, strict=True)
    if np.array_equal(p >= t, p >= strict):
        return (f"at {best:g} the sensitivity is {b_sens:.4f}, exactly the target {target:g} {where}, and your "
                f"function went past it to {t:g}: a sensitivity equal to the target reaches it. Compare with "
                f">= target, not > target.")
    more = "healthy cases" if spec < b_spec else "cases"
    return (f"your threshold {t:g} reaches the target (sensitivity {sens:.3f}) but flags more {more} than needed: "
            f"specificity {spec:.3f}, against {b_spec:.3f} at the highest threshold that still reaches {target:g} "
            f"({best:g}) {where}. Lower the threshold from 1, through the scores that occur in p, and stop at the "
            f"first that reaches it.")


def check_threshold_for_sensitivity(fn):
    """fn(y_val, p_val, target) -> the highest threshold whose sensitivity (p >= threshold) reaches target."""
    name = "threshold_for_sensitivity"
    for y, p, target in _threshold_cases():
        t = _snap(_read_threshold(call(fn, name, y.copy(), p.copy(), target), name), p)
        if close(t, target) and not close(t, _best_threshold(y, p, target)):
            raise CheckFailed(f"{name}() returned the target itself ({t:g}); return the threshold (a score) at "
                              f"which the sensitivity first reaches the target.")
        problem = _diagnose_threshold(t, y, p, target, name)
        if problem:
            raise CheckFailed(problem)
    passed(f"check_threshold_for_sensitivity passed: on {len(_threshold_cases())} cases (ties included) your "
           f"threshold reaches the target sensitivity and flags no more healthy cases than needed.")


# ----------------------------------------------------------------------------- on the real model

def check_operating_point(threshold, val, test, target: float):
    """threshold: what the learner chose for the shipped model; val and test: (labels, P(pneumonia)) of the
    validation and test splits. It must be the validation split's choice for `target`, never test's."""
    if threshold is None:
        raise CheckFailed("threshold is None: choose it on the validation split with your threshold_for_sensitivity "
                          "(y_val, p_val, TARGET).")
    t = as_float(threshold, "threshold", hint="e.g. with float(...)")
    (yv, pv), (yt, pt) = val, test
    yv, pv, yt, pt = (np.asarray(a).reshape(-1) for a in (yv, pv, yt, pt))
    t = _snap(t, pv)
    if not 0 <= t <= 1:
        raise CheckFailed(f"threshold is {t:g}; a threshold on P(pneumonia) lies in [0, 1].")
    on_val, on_test = _best_threshold(yv, pv, target), _best_threshold(yt, pt, target)
    same_on_val = np.array_equal(pv >= t, pv >= on_val)
    if not same_on_val and np.array_equal(pt >= t, pt >= on_test):
        raise CheckFailed(f"your threshold {t:.4f} is the one the TEST split would choose ({on_test:.4f}): choose it on "
                          f"the validation split ({on_val:.4f}). A threshold picked on test makes the test numbers "
                          f"look better than a new patient would find them; test is only for measuring.")
    if not same_on_val:
        sens, spec, *_ = _rates(yv, pv, t)
        raise CheckFailed(f"your threshold {t:.4f} gives validation sensitivity {sens:.3f} and specificity {spec:.3f}; "
                          f"the validation split's choice for target {target:g} is {on_val:.4f}. Use "
                          f"threshold_for_sensitivity(y_val, p_val, {target:g}).")
    sens, spec, *_ = _rates(yt, pt, t)
    passed(f"check_operating_point passed: threshold {t:.4f} chosen on the validation split; on test it gives "
           f"sensitivity {sens:.3f} and specificity {spec:.3f}.")
    return {"threshold": t, "test_sensitivity": sens, "test_specificity": spec}
