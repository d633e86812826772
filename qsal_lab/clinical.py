"""Clinical metrics for a classifier's scores: what a screening test is judged by, with its uncertainty.

Everything here takes numpy arrays (or CPU tensors): labels `y` and scores `s` (probabilities:
P(positive) or an (N, 2) softmax for a binary task, an (N, K) softmax for K classes, an (N, L)
sigmoid for L independent labels). It imports numpy, scipy and scikit-learn only.

    op = choose_threshold(y_val, s_val, "youden")              # the operating point, from validation only
    m = binary_metrics(y_test, s_test, op.threshold)           # sensitivity, specificity, PPV, NPV, ...
    report = clinical_report(y_val, s_val, y_test, s_test, "binary-class", n_boot=2000, seed=0)

Conventions:
- positive = label 1 (for PneumoniaMNIST: pneumonia); predicted positive when score >= threshold.
- confusion matrices are counts[true, predicted], as in `qsal_lab.train.confusion_matrix`.
- AUC and ACC follow MedMNIST's official Evaluator (`medmnist_metrics`): binary AUC on P(class 1);
  multi-class (and ordinal RetinaMNIST) the mean of one-vs-rest AUCs; multi-label the mean over labels;
  ACC at argmax, or at score > 0.5 for binary and multi-label tasks.
- The decision threshold is chosen on the validation split and never looks at the test split:
  `choose_threshold` is only ever given validation scores. Two rules: Youden's J (the threshold that
  maximises sensitivity + specificity - 1) and "sensitivity" (screening use: lowering the threshold
  from 1, the first one whose validation sensitivity reaches the target, i.e. the most specific
  operating point that still catches that share of the positives).
- Confidence intervals: percentile bootstrap over test cases, resampled within each class (stratified),
  so every resample has the test split's class counts and an AUC. Reproducible under a seed.
- Calibration: expected calibration error over equal-width confidence bins of the top-label
  probability (Guo et al. 2017); `reliability` returns the diagram's data, `plot_reliability` draws it.
  `fit_temperature` fits temperature scaling on validation logits; `probabilities_at` applies it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, softmax
from scipy.stats import rankdata

TASKS = ("binary-class", "multi-class", "ordinal-regression", "multi-label")
THRESHOLD_METHODS = ("youden", "sensitivity")


# ----------------------------------------------------------------------------- inputs

def canonical_task(task: str) -> str:
    """MedMNIST's task names ('multi-label, binary-class' is 'multi-label'); ordinal is scored as multi-class."""
    name = "multi-label" if str(task).startswith("multi-label") else str(task)
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return name


def probabilities(logits, task: str) -> np.ndarray:
    """Scores from a model's logits: softmax over classes, or a sigmoid per label for multi-label tasks."""
    logits = np.asarray(logits, dtype=np.float64)
    return expit(logits) if canonical_task(task) == "multi-label" else softmax(logits, axis=1)


def probabilities_at(logits, task: str, temperature: float = 1.0) -> np.ndarray:
    """`probabilities` of logits / temperature: temperature-scaled scores (1.0 leaves them as they are)."""
    return probabilities(np.asarray(logits, dtype=np.float64) / _check_temperature(temperature), task)


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)) \
            or not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def negative_log_likelihood(y, logits, task: str, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under the temperature-scaled scores."""
    p = np.clip(probabilities_at(logits, task, temperature), 1e-12, 1.0)
    if canonical_task(task) == "multi-label":
        y = np.asarray(y, dtype=np.float64).reshape(p.shape)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(np.clip(1 - p, 1e-12, 1.0))))
    y = np.asarray(y).reshape(-1).astype(int)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} rows of logits")
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def fit_temperature(y_val, logits_val, task: str) -> float:
    """Temperature scaling (Guo et al. 2017): the one T > 0 that minimises the validation NLL of
    softmax(logits / T) (a sigmoid per label for multi-label tasks). It rescales confidence without
    changing any ranking, so AUC and the argmax stay as they were. Fit on validation only."""
    logits_val = np.asarray(logits_val, dtype=np.float64)
    if logits_val.ndim != 2 or len(logits_val) < 2:
        raise ValueError(f"fit_temperature needs logits of shape (N, classes) with N >= 2, got {logits_val.shape}")
    found = minimize_scalar(lambda log_t: negative_log_likelihood(y_val, logits_val, task, float(np.exp(log_t))),
                            bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))


def positive_scores(scores) -> np.ndarray:
    """P(positive) from a binary task's scores: an (N,) array, or the last column of an (N, 2) array."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    if s.ndim != 1:
        raise ValueError(f"binary scores must be P(positive) of shape (N,) or probabilities of shape (N, 2); "
                         f"got shape {s.shape}")
    return s


def _binary_labels(y) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"binary labels must be 0 (negative) or 1 (positive); got values {sorted(values)[:6]}")
    return y.astype(np.int64)


def _pair(y, s):
    y, s = _binary_labels(y), positive_scores(s)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    return y, s


# ----------------------------------------------------------------------------- AUC and ACC (MedMNIST's definitions)

def binary_auc(y, s) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties counting half
    (the Mann-Whitney statistic, equal to sklearn's roc_auc_score)."""
    y, s = _pair(y, s)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes; got {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc(y, scores, task: str) -> float:
    """ROC AUC as MedMNIST's Evaluator computes it (see the module docstring)."""
    task = canonical_task(task)
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if task == "binary-class":
        return binary_auc(y, scores)
    if task == "multi-label":
        return float(np.mean([binary_auc(y[:, j], scores[:, j]) for j in range(scores.shape[1])]))
    y = y.reshape(-1)
    return float(np.mean([binary_auc((y == k).astype(np.int64), scores[:, k]) for k in range(scores.shape[1])]))


def accuracy(y, scores, task: str, threshold: float = 0.5) -> float:
    """Accuracy as MedMNIST's Evaluator computes it: argmax, or score > threshold (binary, per label)."""
    task = canonical_task(task)
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if task == "binary-class":
        y, s = _pair(y, scores)
        return float(np.mean((s > threshold) == y))
    if task == "multi-label":
        return float(np.mean((scores > threshold) == (y > 0.5)))
    return float(np.mean(scores.argmax(1) == y.reshape(-1)))


def medmnist_metrics(y, scores, task: str) -> dict:
    """{'auc', 'acc'}: the two numbers MedMNIST v2's tables report, by its Evaluator's definitions."""
    return {"auc": auc(y, scores, task), "acc": accuracy(y, scores, task)}


# ----------------------------------------------------------------------------- at a threshold

def confusion_matrix(y, predicted, num_classes: int | None = None) -> np.ndarray:
    """counts[true, predicted] (rows: the truth)."""
    y, predicted = np.asarray(y).reshape(-1).astype(np.int64), np.asarray(predicted).reshape(-1).astype(np.int64)
    k = num_classes or int(max(y.max(initial=0), predicted.max(initial=0)) + 1)
    return np.bincount(y * k + predicted, minlength=k * k).reshape(k, k)


def _ratio(a, b) -> float:
    return float(a / b) if b else float("nan")


def binary_metrics(y, s, threshold: float) -> dict:
    """Everything a binary screening test is judged by at one threshold (positive: score >= threshold).

    sensitivity = TP / (TP + FN): share of the sick that the test flags (recall, true-positive rate)
    specificity = TN / (TN + FP): share of the healthy that it clears
    PPV = TP / (TP + FP): chance a flagged case is sick; NPV = TN / (TN + FN): chance a cleared one is healthy
    (PPV and NPV depend on the prevalence of the split, sensitivity and specificity do not).
    balanced accuracy = (sensitivity + specificity) / 2. A ratio with a zero denominator is NaN.
    """
    y, s = _pair(y, s)
    pred = (s >= threshold).astype(np.int64)
    cm = confusion_matrix(y, pred, 2)
    (tn, fp), (fn, tp) = cm.tolist()
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {"threshold": float(threshold), "accuracy": _ratio(tp + tn, len(y)), "sensitivity": sens,
            "specificity": spec, "balanced_accuracy": (sens + spec) / 2, "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn), "tp": tp, "fp": fp, "tn": tn, "fn": fn, "confusion": cm.tolist(),
            "n": len(y)}


def multiclass_metrics(y, scores) -> dict:
    """Per-class sensitivity, specificity, PPV and NPV (one class against the rest) at the argmax, their
    unweighted means, accuracy, balanced accuracy (= mean sensitivity) and the confusion matrix."""
    y, scores = np.asarray(y).reshape(-1).astype(np.int64), np.asarray(scores)
    k = scores.shape[1]
    cm = confusion_matrix(y, scores.argmax(1), k)
    tp = np.diag(cm).astype(np.float64)
    fn, fp = cm.sum(1) - tp, cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        per = {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp),
               "npv": tn / (tn + fn)}
    out = {"accuracy": float(tp.sum() / cm.sum()), "balanced_accuracy": float(np.nanmean(per["sensitivity"]))}
    out.update({name: float(np.nanmean(v)) for name, v in per.items()})
    out.update({f"{name}_per_class": [float(x) for x in v] for name, v in per.items()})
    return {**out, "confusion": cm.tolist(), "n": int(cm.sum())}


# ----------------------------------------------------------------------------- choosing the threshold on validation

@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold and how it was chosen, with what it achieved on the validation split."""
    threshold: float
    method: str                       # "youden" or "sensitivity"
    target_sensitivity: float | None  # for method "sensitivity"
    val_sensitivity: float
    val_specificity: float
    val_n: int

    @property
    def description(self) -> str:
        if self.method == "youden":
            return (f"Youden's J on the validation split (n={self.val_n}): threshold {self.threshold:.4f} maximises "
                    f"sensitivity + specificity - 1 ({self.val_sensitivity:.3f} + {self.val_specificity:.3f} - 1)")
        return (f"target sensitivity {self.target_sensitivity:.2f} on the validation split (n={self.val_n}): "
                f"threshold {self.threshold:.4f}, the first to reach it as the threshold is lowered from 1 "
                f"(validation sensitivity {self.val_sensitivity:.3f}, specificity {self.val_specificity:.3f})")

    def to_dict(self) -> dict:
        return {**asdict(self), "description": self.description}


def _cut_points(y, s):
    """Candidate thresholds from high to low (each distinct score, and +inf: nobody flagged), with the
    sensitivity and specificity of `score >= t` at each."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # the last index of each run of equal scores
    tp = np.cumsum(y_sorted)[last_of_run]
    fp = np.cumsum(1 - y_sorted)[last_of_run]
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    cuts = s_sorted[last_of_run]
    return (np.r_[np.inf, cuts], np.r_[0.0, tp / n_pos], np.r_[1.0, 1 - fp / n_neg])


def _between(cuts, i) -> float:
    """The threshold for cut i, halfway down to the next lower score: validation cannot tell any value
    in that gap apart, and the middle of the gap is the least fragile."""
    if i == 0:
        return float(cuts[1] + 1e-6) if len(cuts) > 1 else 1.0
    return float((cuts[i] + cuts[i + 1]) / 2) if i + 1 < len(cuts) else float(cuts[i])


def choose_threshold(y_val, s_val, method: str = "youden", target_sensitivity: float = 0.95) -> OperatingPoint:
    """The decision threshold, from validation labels and scores only.

    method "youden": maximise J = sensitivity + specificity - 1 (the highest threshold among ties).
    method "sensitivity": the highest threshold whose sensitivity reaches `target_sensitivity` (screening:
    miss at most 1 - target of the positives, and among those thresholds flag the fewest healthy cases).
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose one of: {', '.join(THRESHOLD_METHODS)}")
    y, s = _pair(y_val, s_val)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError(f"choosing a threshold needs positives and negatives in the validation split; "
                         f"got {int(y.sum())} positives of {len(y)}")
    cuts, sens, spec = _cut_points(y, s)
    if method == "youden":
        j = sens + spec - 1  # ties within rounding error go to the first, i.e. the highest threshold
        i, target = int(np.nonzero(j >= j.max() - 1e-12)[0][0]), None
    else:
        if not 0 < target_sensitivity <= 1:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity!r}")
        # the lowest cut flags every case (sensitivity 1), so some cut always reaches the target
        i, target = int(np.nonzero(sens >= target_sensitivity - 1e-12)[0][0]), float(target_sensitivity)
    return OperatingPoint(threshold=_between(cuts, i), method=method, target_sensitivity=target,
                          val_sensitivity=float(sens[i]), val_specificity=float(spec[i]), val_n=len(y))


# ----------------------------------------------------------------------------- calibration

def _top_label(y, scores, task):
    """(confidence, correct) pairs: the top label's probability and whether it was right. For multi-label
    tasks each (image, label) pair is one binary prediction."""
    task = canonical_task(task)
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if task == "multi-label":
        p, t = scores.reshape(-1), (y.reshape(-1) > 0.5)
        return np.maximum(p, 1 - p), (p > 0.5) == t
    if task == "binary-class":
        y, p = _pair(y, scores)
        return np.maximum(p, 1 - p), (p >= 0.5) == (y == 1)
    return scores.max(1), scores.argmax(1) == y.reshape(-1)


def reliability(y, scores, task: str, n_bins: int = 15) -> dict:
    """The reliability diagram's data and the expected calibration error.

    Confidences (top-label probabilities) fall into `n_bins` equal-width bins of [0, 1]; per bin, the
    mean confidence and the accuracy. ECE = sum over bins of (bin share) * |accuracy - confidence|:
    0 for a model whose 80 %-sure answers are right 80 % of the time, and so on.
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    conf, correct = _top_label(y, scores, task)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # bins (a, b], first [0, b]
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(which, conf, n_bins) / count
        acc = np.bincount(which, correct.astype(np.float64), n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] / len(conf) * np.abs(acc[filled] - mean_conf[filled])))
    return {"ece": ece, "edges": edges.tolist(), "confidence": [float(c) if f else None for c, f in zip(mean_conf, filled)],
            "accuracy": [float(a) if f else None for a, f in zip(acc, filled)], "count": count.tolist(),
            "n": len(conf), "n_bins": n_bins}


def expected_calibration_error(y, scores, task: str, n_bins: int = 15) -> float:
    """ECE of the top-label probability over `n_bins` equal-width bins (see `reliability`)."""
    return reliability(y, scores, task, n_bins)["ece"]


def plot_reliability(rel: dict, title: str = "reliability diagram", ax=None):
    """Bars of accuracy per confidence bin against the diagonal of perfect calibration; returns the figure."""
    import matplotlib.pyplot as plt  # lazy: only this plot needs matplotlib

    fig, ax = (plt.subplots(figsize=(4, 4)) if ax is None else (ax.figure, ax))
    edges = np.asarray(rel["edges"])
    width = np.diff(edges)
    acc = np.array([np.nan if a is None else a for a in rel["accuracy"]])
    conf = np.array([np.nan if c is None else c for c in rel["confidence"]])
    ax.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", edgecolor="k", alpha=0.7, label="accuracy")
    ax.bar(edges[:-1], np.nan_to_num(np.abs(conf - acc)), bottom=np.nan_to_num(np.minimum(acc, conf)), width=width,
           align="edge", color="C3", alpha=0.3, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-label probability)"), ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE = {rel['ece']:.3f} (n = {rel['n']}, {rel['n_bins']} bins)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


# ----------------------------------------------------------------------------- bootstrap confidence intervals

def stratified_resamples(y, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, N) indices: each row draws, with replacement, as many cases of each class as `y` has."""
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    y = np.asarray(y)
    strata = y.reshape(len(y), -1)
    # multi-label: the label pattern is too fine a stratum; resample those cases as one group
    keys = strata[:, 0] if strata.shape[1] == 1 else np.zeros(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(y)), dtype=np.int64)
    start = 0
    for k in np.unique(keys):
        members = np.nonzero(keys == k)[0]
        out[:, start:start + len(members)] = members[rng.integers(0, len(members), (n_boot, len(members)))]
        start += len(members)
    return out


def bootstrap_ci(metric, y, scores, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap interval of metric(y, scores) -> float or dict of floats, resampling cases within
    each class. Returns {name: (low, high)} for a dict metric, else {"value": (low, high)}. Resamples where a
    metric is undefined (NaN) are left out of its interval."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    y, scores = np.asarray(y), np.asarray(scores)
    draws = []
    for idx in stratified_resamples(y, n_boot, seed):
        value = metric(y[idx], scores[idx])
        draws.append(value if isinstance(value, dict) else {"value": value})
    tail = 100 * (1 - level) / 2
    out = {}
    for name in draws[0]:
        values = np.array([d[name] for d in draws], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[name] = ((float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
                     if len(values) else (float("nan"), float("nan")))
    return out


# ----------------------------------------------------------------------------- the report

CI_METRICS = {"binary-class": ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy", "ppv", "npv"),
              "multi-class": ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity"),
              "multi-label": ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy")}


def _metrics_at(y, scores, task, thresholds):
    """The report's point metrics on one split, thresholds fixed in advance (one per label if multi-label)."""
    if task == "binary-class":
        return {"auc": binary_auc(y, scores), **binary_metrics(y, scores, thresholds)}
    if task == "multi-label":
        per = [binary_metrics(y[:, j], scores[:, j], t) for j, t in enumerate(thresholds)]
        sens, spec = np.nanmean([p["sensitivity"] for p in per]), np.nanmean([p["specificity"] for p in per])
        # a bootstrap resample may lose every positive of a rare label: its AUC is then left out
        aucs = [binary_auc(y[:, j], scores[:, j]) if 0 < y[:, j].sum() < len(y) else np.nan for j in range(y.shape[1])]
        return {"auc": float(np.nanmean(aucs)), "accuracy": float(np.mean([p["accuracy"] for p in per])),
                "sensitivity": float(sens), "specificity": float(spec), "balanced_accuracy": float((sens + spec) / 2),
                "per_label": per, "n": len(y)}
    return {"auc": auc(y, scores, task), **multiclass_metrics(y, scores)}


def clinical_report(y_val, s_val, y_test, s_test, task: str, method: str = "youden",
                    target_sensitivity: float = 0.95, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                    n_bins: int = 15) -> dict:
    """Test-split metrics at an operating point chosen on the validation split, with bootstrap intervals.

    Binary: the threshold comes from `choose_threshold(y_val, s_val, method, target_sensitivity)`; the
    test split is used only to measure. Multi-label: one threshold per label, by the same rule. Multi-class
    (and ordinal): the argmax, no threshold (validation is then only reported). Also: MedMNIST's own AUC and
    ACC (`medmnist`), the ECE and the reliability diagram's data (`calibration`), and `ci`: a `level`
    percentile bootstrap interval per metric (`n_boot` stratified resamples of the test cases, `seed`).
    """
    task = canonical_task(task)
    task_key = "multi-class" if task == "ordinal-regression" else task
    y_val, s_val, y_test, s_test = (np.asarray(a) for a in (y_val, s_val, y_test, s_test))
    if task == "binary-class":
        s_val, s_test = positive_scores(s_val), positive_scores(s_test)
        op = choose_threshold(y_val, s_val, method, target_sensitivity)
        thresholds, operating = op.threshold, op.to_dict()
    elif task == "multi-label":
        ops = [choose_threshold(y_val[:, j], s_val[:, j], method, target_sensitivity) for j in range(y_val.shape[1])]
        thresholds = [o.threshold for o in ops]
        operating = {"method": method, "target_sensitivity": target_sensitivity if method == "sensitivity" else None,
                     "threshold": thresholds, "per_label": [o.to_dict() for o in ops],
                     "description": f"one threshold per label, each chosen on the validation split by {method!r}"}
    else:
        thresholds = None
        operating = {"method": "argmax", "threshold": None,
                     "description": "the most probable class (argmax); no threshold to choose"}
    point = _metrics_at(y_test, s_test, task_key, thresholds)
    names = CI_METRICS[task_key]
    ci = bootstrap_ci(lambda y, s: {k: _metrics_at(y, s, task_key, thresholds)[k] for k in names},
                      y_test, s_test, n_boot=n_boot, seed=seed, level=level)
    rel = reliability(y_test, s_test, task, n_bins)
    return {"task": task, "operating_point": operating, **point, "ci": ci, "ci_level": level, "n_boot": n_boot,
            "seed": seed, "ece": rel["ece"], "calibration": rel,
            "medmnist": medmnist_metrics(y_test, s_test, task),
            "val": _metrics_at(y_val, s_val, task_key, thresholds)}
