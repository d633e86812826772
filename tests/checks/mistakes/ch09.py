"""Exercise 9 (medical images): sensitivity and specificity, the threshold for a target sensitivity, and the
operating point chosen on the validation split."""
from . import Exercise, code, edit

CHECKS = "medical"
NOTEBOOK = "09_medical_imaging.ipynb"

RATES = code("""
def sensitivity_specificity(y, p, threshold):
    y, p = np.asarray(y).reshape(-1), np.asarray(p).reshape(-1)
    flagged = p >= threshold
    tp, fn = np.sum(flagged & (y == 1)), np.sum(~flagged & (y == 1))
    tn, fp = np.sum(~flagged & (y == 0)), np.sum(flagged & (y == 0))
    return float(tp / (tp + fn)), float(tn / (tn + fp))
""")

THRESHOLD = code("""
def threshold_for_sensitivity(y, p, target):
    for t in np.unique(p)[::-1]:
        sensitivity, _ = sensitivity_specificity(y, p, t)
        if sensitivity >= target:
            return float(t)
    return float(np.min(p))
""")

CELL = code("""
threshold = None
threshold = threshold_for_sensitivity(y_val, p_val, TARGET)
""")


def operating_point(threshold, validation_and_test):
    from qsal_lab.checks.medical import check_operating_point

    d = validation_and_test
    return check_operating_point(threshold, (d["y_val"], d["p_val"]), (d["y_test"], d["p_test"]), d["TARGET"])


EXERCISES = [
    Exercise(
        9, NOTEBOOK, "sensitivity_specificity", "check_sensitivity_specificity", prose="positive when p >= threshold",
        mistakes={
            "the two swapped": (edit(RATES, ("return float(tp / (tp + fn)), float(tn / (tn + fp))",
                                             "return float(tn / (tn + fp)), float(tp / (tp + fn))")), ("swapped",)),
            "p > threshold": (edit(RATES, ("flagged = p >= threshold", "flagged = p > threshold")), ("only when p > threshold",)),
            "flagged below the threshold": (edit(RATES, ("flagged = p >= threshold", "flagged = p < threshold")),
                                            ("BELOW the threshold",)),
            "percentages": (edit(RATES, ("return float(tp / (tp + fn)), float(tn / (tn + fp))",
                                         "return 100 * tp / (tp + fn), 100 * tn / (tn + fp)")), ("percentages",)),
            "the precision (PPV) for sensitivity": (edit(RATES, ("float(tp / (tp + fn))", "float(tp / (tp + fp))")),
                                                    ("precision (PPV)",)),
            "the NPV for specificity": (edit(RATES, ("float(tn / (tn + fp))", "float(tn / (tn + fn))")), ("the NPV",)),
            "counts": (edit(RATES, ("return float(tp / (tp + fn)), float(tn / (tn + fp))", "return int(tp), int(tn)")),
                       ("counts", "divide")),
            "the accuracy": (edit(RATES, ("float(tp / (tp + fn))", "float((tp + tn) / len(y))")), ("accuracy over all cases",)),
            "divided by all cases": (edit(RATES, ("return float(tp / (tp + fn)), float(tn / (tn + fp))",
                                                  "return tp / len(y), tn / len(y)")),
                                     ("number of all cases",)),
            "a dict": (edit(RATES, ("return float(tp / (tp + fn)), float(tn / (tn + fp))",
                                    "return {'sensitivity': tp / (tp + fn), 'specificity': tn / (tn + fp)}")), ("a dict",)),
        },
        correct={
            "torch integer tensors (float32 rates)": code("""
                def sensitivity_specificity(y, p, threshold):
                    y, flagged = torch.as_tensor(y), torch.as_tensor(p) >= threshold
                    tp = (flagged & (y == 1)).sum()
                    fn = (~flagged & (y == 1)).sum()
                    tn = (~flagged & (y == 0)).sum()
                    fp = (flagged & (y == 0)).sum()
                    return tp / (tp + fn), tn / (tn + fp)
            """),
            "np.float32": edit(RATES, ("return float(tp / (tp + fn)), float(tn / (tn + fp))",
                                       "return np.float32(tp) / np.float32(tp + fn), np.float32(tn) / np.float32(tn + fp)")),
            "a loop over lists": code("""
                def sensitivity_specificity(y, p, threshold):
                    tp = fn = tn = fp = 0
                    for label, score in zip(list(y), list(p)):
                        if label == 1:
                            tp, fn = (tp + 1, fn) if score >= threshold else (tp, fn + 1)
                        else:
                            fp, tn = (fp + 1, tn) if score >= threshold else (fp, tn + 1)
                    return [tp / (tp + fn), tn / (tn + fp)]
            """),
            "sklearn's confusion matrix": code("""
                from sklearn.metrics import confusion_matrix

                def sensitivity_specificity(y, p, threshold):
                    tn, fp, fn, tp = confusion_matrix(y, (np.asarray(p) >= threshold).astype(int), labels=[0, 1]).ravel()
                    return tp / (tp + fn), tn / (tn + fp)
            """),
        }),
    Exercise(
        9, NOTEBOOK, "threshold_for_sensitivity", "check_threshold_for_sensitivity", needs=("sensitivity_specificity",),
        prose="the highest threshold that reaches the target sensitivity",
        mistakes={
            "sensitivity > target": (edit(THRESHOLD, ("if sensitivity >= target:", "if sensitivity > target:")),
                                     (">= target, not > target",)),
            "the lowest threshold that reaches it": (edit(THRESHOLD, ("np.unique(p)[::-1]", "np.unique(p)")), ("lowest score",)),
            "the target returned": (edit(THRESHOLD, ("            return float(t)", "            return target")),
                                    ("target itself",)),
            "the threshold with its sensitivity": (edit(THRESHOLD, ("            return float(t)", "            return float(t), sensitivity")),
                                                   ("several values",)),
            "one step too far (the last that misses)": (
                edit(THRESHOLD, ("    for t in np.unique(p)[::-1]:\n", "    previous = 1.0\n    for t in np.unique(p)[::-1]:\n"),
                     ("            return float(t)", "            return previous\n        previous = float(t)")),
                ("only", "below the target")),
            "a grid of thresholds": (edit(THRESHOLD, ("np.unique(p)[::-1]", "np.arange(1.0, 0.0, -0.05)")),
                                     ("flags more", "than needed", "scores that occur in p")),
            "a percentage": (edit(THRESHOLD, ("            return float(t)", "            return 100 * float(t)")),
                             ("a percentage",)),
        },
        correct={
            "the k-th largest positive score": code("""
                def threshold_for_sensitivity(y, p, target):
                    positives = np.sort(np.asarray(p)[np.asarray(y) == 1])[::-1]
                    k = int(np.ceil(target * len(positives) - 1e-9))
                    return float(positives[max(k, 1) - 1])
            """),
            "ascending, keep the last that reaches it": code("""
                def threshold_for_sensitivity(y, p, target):
                    best = min(p)
                    for t in sorted(set(p.tolist())):
                        if sensitivity_specificity(y, p, t)[0] >= target:
                            best = t
                    return best
            """),
            "torch, float32 sensitivity": code("""
                def threshold_for_sensitivity(y, p, target):
                    y, p = torch.as_tensor(y), torch.as_tensor(p, dtype=torch.float32)
                    for t in torch.unique(p).flip(0):
                        flagged = p >= t
                        sens = (flagged & (y == 1)).sum() / (y == 1).sum()
                        if sens >= target:
                            return t
                    return p.min()
            """),
        }),
    Exercise(
        9, NOTEBOOK, "threshold", "check_operating_point", kind="cell", needs=("sensitivity_specificity", "threshold_for_sensitivity"),
        prose="the cell that chooses the screening threshold", fixtures=("validation_and_test",), run=operating_point,
        mistakes={
            "chosen on the test split": (edit(CELL, ("(y_val, p_val, TARGET)", "(y_test, p_test, TARGET)")), ("TEST split",)),
            "the default 0.5": (edit(CELL, ("threshold_for_sensitivity(y_val, p_val, TARGET)", "0.5")),
                                ("validation split's choice",)),
            "Youden's J": (edit(CELL, ("threshold_for_sensitivity(y_val, p_val, TARGET)",
                                       "clinical.choose_threshold(y_val, p_val, 'youden').threshold")),
                           ("validation split's choice",)),
            "the target as the threshold": (edit(CELL, ("threshold_for_sensitivity(y_val, p_val, TARGET)", "TARGET")),
                                            ("validation split's choice",)),
            "a percentage": (edit(CELL, ("threshold_for_sensitivity(y_val, p_val, TARGET)", "100 * threshold_for_sensitivity(y_val, p_val, TARGET)")),
                             ("lies in [0, 1]",)),
            "chosen on validation and test pooled": (
                edit(CELL, ("threshold_for_sensitivity(y_val, p_val, TARGET)",
                            "threshold_for_sensitivity(np.r_[y_val, y_test], np.r_[p_val, p_test], TARGET)")),
                ("validation split's choice",)),
            "left unchosen": (edit(CELL, ("threshold = threshold_for_sensitivity(y_val, p_val, TARGET)\n", "")),
                              ("threshold is None",)),
        },
        correct={
            "the library's choice (between two scores)": edit(
                CELL, ("threshold_for_sensitivity(y_val, p_val, TARGET)",
                       "clinical.choose_threshold(y_val, p_val, 'sensitivity', target_sensitivity=TARGET).threshold")),
            "a float32 threshold": edit(CELL, ("threshold_for_sensitivity(y_val, p_val, TARGET)",
                                               "np.float32(threshold_for_sensitivity(y_val, p_val, TARGET))")),
        }),
]
