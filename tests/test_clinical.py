"""qsal_lab.clinical: hand-computed cases, agreement with MedMNIST's official Evaluator, thresholds chosen on
validation only, reproducible bootstrap intervals, calibration."""
import numpy as np
import pytest

from qsal_lab import clinical
from qsal_lab.clinical import (accuracy, auc, binary_metrics, bootstrap_ci, choose_threshold, clinical_report,
                               confusion_matrix, expected_calibration_error, medmnist_metrics, multiclass_metrics,
                               plot_reliability, probabilities, reliability, stratified_resamples)

# ----------------------------------------------------------------------------- hand-computed cases

Y = np.array([0, 0, 1, 1, 1])
S = np.array([0.1, 0.6, 0.4, 0.8, 0.9])


def test_binary_metrics_by_hand():
    m = binary_metrics(Y, S, threshold=0.5)  # predicted [0, 1, 0, 1, 1]: TP 2, FN 1, TN 1, FP 1
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(1 / 2)
    assert m["ppv"] == pytest.approx(2 / 3) and m["npv"] == pytest.approx(1 / 2)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["confusion"] == [[1, 1], [1, 2]]  # counts[true, predicted]
    # pairs (positive, negative) ranked right: 0.4>0.1, 0.8>both, 0.9>both; 0.4<0.6 wrong: 5 of 6
    assert auc(Y, S, "binary-class") == pytest.approx(5 / 6)
    assert auc(Y, np.stack([1 - S, S], 1), "binary-class") == pytest.approx(5 / 6)  # (N, 2) softmax too


def test_score_equal_to_the_threshold_is_positive_and_ties_count_half():
    assert binary_metrics([0, 1], [0.3, 0.5], threshold=0.5)["tp"] == 1
    assert binary_metrics([0, 1], [0.5, 0.5], threshold=0.5)["fp"] == 1
    assert auc([0, 1], [0.5, 0.5], "binary-class") == 0.5
    m = binary_metrics([1, 1], [0.9, 0.8], threshold=0.5)  # no negatives: specificity and NPV undefined
    assert m["sensitivity"] == 1.0 and np.isnan(m["specificity"]) and np.isnan(m["npv"])


def test_multiclass_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.eye(3)[[0, 1, 1, 1, 2, 0]]  # predicted 0, 1, 1, 1, 2, 0
    m = multiclass_metrics(y, p)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["sensitivity_per_class"] == pytest.approx([1 / 2, 1, 1 / 2])
    assert m["specificity_per_class"] == pytest.approx([3 / 4, 3 / 4, 1])
    assert m["ppv_per_class"] == pytest.approx([1 / 2, 2 / 3, 1])
    assert m["accuracy"] == pytest.approx(4 / 6) and m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert confusion_matrix(y, p.argmax(1)).tolist() == m["confusion"]


def test_probabilities_from_logits():
    logits = np.array([[0.0, np.log(3.0)]])
    assert probabilities(logits, "binary-class")[0] == pytest.approx([0.25, 0.75])
    assert probabilities(np.array([[0.0]]), "multi-label, binary-class")[0, 0] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- thresholds from validation

YV = np.array([0, 0, 0, 1, 1, 1])
SV = np.array([0.1, 0.3, 0.7, 0.4, 0.8, 0.9])
# cuts from high to low, (sensitivity, specificity): 0.9 (1/3, 1), 0.8 (2/3, 1), 0.7 (2/3, 2/3), 0.4 (1, 2/3), ...


def test_youden_by_hand():
    op = choose_threshold(YV, SV, "youden")  # J = 2/3 at 0.8 and at 0.4: the higher one, halfway down to 0.7
    assert op.threshold == pytest.approx(0.75)
    assert (op.val_sensitivity, op.val_specificity) == pytest.approx((2 / 3, 1.0))
    assert op.method == "youden" and op.target_sensitivity is None and "Youden" in op.description


@pytest.mark.parametrize("target, threshold, sens, spec", [(0.9, 0.35, 1.0, 2 / 3), (0.6, 0.75, 2 / 3, 1.0),
                                                           (1 / 3, 0.85, 1 / 3, 1.0)])
def test_target_sensitivity_by_hand(target, threshold, sens, spec):
    op = choose_threshold(YV, SV, "sensitivity", target_sensitivity=target)
    assert op.threshold == pytest.approx(threshold)
    assert (op.val_sensitivity, op.val_specificity) == pytest.approx((sens, spec))
    # the threshold reproduces its validation numbers
    m = binary_metrics(YV, SV, op.threshold)
    assert (m["sensitivity"], m["specificity"]) == pytest.approx((sens, spec))
    assert op.to_dict()["description"].startswith(f"target sensitivity {target:.2f}")


def test_threshold_rules_agree_with_a_brute_force_search():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # rounded: many ties
    grid = np.unique(np.r_[s, 1.01])
    sens = np.array([((s >= t) & (y == 1)).sum() / y.sum() for t in grid])
    spec = np.array([((s < t) & (y == 0)).sum() / (1 - y).sum() for t in grid])
    op = choose_threshold(y, s, "youden")
    assert op.val_sensitivity + op.val_specificity - 1 == pytest.approx((sens + spec - 1).max())
    op = choose_threshold(y, s, "sensitivity", target_sensitivity=0.9)
    best = grid[sens >= 0.9].max()  # the highest threshold reaching the target
    m, ref = binary_metrics(y, s, op.threshold), binary_metrics(y, s, best)
    assert (m["sensitivity"], m["specificity"]) == (ref["sensitivity"], ref["specificity"])


def test_threshold_never_reads_test_data():
    """Poison the test labels (and scores): the operating point stays what validation made it."""
    rng = np.random.default_rng(1)
    yv, yt = rng.integers(0, 2, 200), rng.integers(0, 2, 300)
    sv, st = np.clip(rng.normal(0.3 + 0.4 * yv, 0.2), 0, 1), np.clip(rng.normal(0.3 + 0.4 * yt, 0.2), 0, 1)
    for method in ("youden", "sensitivity"):
        clean = clinical_report(yv, sv, yt, st, "binary-class", method=method, n_boot=20)
        poisoned = clinical_report(yv, sv, 1 - yt, rng.permutation(st), "binary-class", method=method, n_boot=20)
        assert clean["operating_point"] == poisoned["operating_point"]
        assert clean["sensitivity"] != poisoned["sensitivity"]  # the test numbers did change
        assert clean["operating_point"] == choose_threshold(yv, sv, method).to_dict()


def test_bad_threshold_inputs_are_explained():
    with pytest.raises(ValueError, match="unknown threshold method 'median'; choose one of: youden, sensitivity"):
        choose_threshold(YV, SV, "median")
    with pytest.raises(ValueError, match="needs positives and negatives in the validation split; got 0 positives"):
        choose_threshold([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"target_sensitivity must be in \(0, 1\]"):
        choose_threshold(YV, SV, "sensitivity", target_sensitivity=1.5)
    with pytest.raises(ValueError, match="binary labels must be 0 .* got values \\[0, 2\\]"):
        binary_metrics([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        binary_metrics([0, 1, 1], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        auc(YV, SV, "regression")
    with pytest.raises(ValueError, match="AUC needs both classes"):
        auc([1, 1], [0.1, 0.2], "binary-class")


# ----------------------------------------------------------------------------- MedMNIST's own Evaluator

def _evaluator_scores(flag, n, rng):
    from medmnist import INFO
    info, k = INFO[flag], len(INFO[flag]["label"])
    if info["task"].startswith("multi-label"):
        labels = rng.integers(0, 2, (n, k))
        scores = np.clip(0.6 * labels + rng.uniform(0, 0.6, (n, k)), 0, 1)
    else:
        labels = rng.integers(0, k, (n, 1))
        scores = rng.dirichlet(np.ones(k), n)
        scores[np.arange(n), labels[:, 0]] += rng.uniform(0, 1, n)  # better than chance, not perfect
        scores /= scores.sum(1, keepdims=True)
    return labels, scores


@pytest.mark.parametrize("flag", ["pneumoniamnist", "breastmnist", "bloodmnist", "dermamnist", "retinamnist",
                                  "octmnist", "chestmnist"])
def test_auc_and_acc_agree_with_medmnists_evaluator(flag, tmp_path):
    from medmnist import INFO, Evaluator

    rng = np.random.default_rng(hash(flag) % 2**32)
    labels, scores = _evaluator_scores(flag, 400, rng)
    np.savez(tmp_path / f"{flag}.npz", test_labels=labels)  # the Evaluator reads only the labels
    official = Evaluator(flag, "test", root=str(tmp_path)).evaluate(scores)
    ours = medmnist_metrics(labels, scores, INFO[flag]["task"])
    assert ours["auc"] == pytest.approx(official.AUC, abs=1e-12)
    assert ours["acc"] == pytest.approx(official.ACC, abs=1e-12)


def test_agreement_on_the_real_pneumoniamnist_test_labels(data_root):
    from medmnist import Evaluator

    root = data_root / "medmnist"
    if not (root / "pneumoniamnist.npz").exists():
        pytest.skip(f"no PneumoniaMNIST under {root}")
    evaluator = Evaluator("pneumoniamnist", "test", root=str(root))
    y = evaluator.labels.reshape(-1)
    rng = np.random.default_rng(0)
    p = np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, len(y)), 0, 1)
    scores = np.stack([1 - p, p], 1)
    official = evaluator.evaluate(scores)
    ours = medmnist_metrics(y, scores, "binary-class")
    assert (ours["auc"], ours["acc"]) == pytest.approx((official.AUC, official.ACC), abs=1e-12)
    assert accuracy(y, p, "binary-class") == pytest.approx(official.ACC)


# ----------------------------------------------------------------------------- bootstrap

def _binary_case(n=400, seed=2):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.6).astype(int)
    return y, np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)


def test_bootstrap_is_reproducible_and_covers_the_point_estimate():
    y, s = _binary_case()
    metric = lambda a, b: {"auc": auc(a, b, "binary-class"), **binary_metrics(a, b, 0.5)}  # noqa: E731
    first = bootstrap_ci(metric, y, s, n_boot=300, seed=7)
    assert first == bootstrap_ci(metric, y, s, n_boot=300, seed=7)
    assert first != bootstrap_ci(metric, y, s, n_boot=300, seed=8)
    point = metric(y, s)
    for name in ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy"):
        low, high = first[name]
        assert low < point[name] < high, name
        assert high - low < 0.2, name
    wide = bootstrap_ci(lambda a, b: auc(a, b, "binary-class"), y[:80], s[:80], n_boot=300, seed=7)["value"]
    assert wide[1] - wide[0] > first["auc"][1] - first["auc"][0]  # fewer cases, wider interval


def test_resamples_keep_the_class_counts():
    y = np.array([0] * 30 + [1] * 70)
    idx = stratified_resamples(y, 50, seed=0)
    assert idx.shape == (50, 100) and (y[idx].sum(1) == 70).all()
    assert not (idx == idx[0]).all()
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        stratified_resamples(y, 0)


def test_report_for_a_binary_task():
    y, s = _binary_case(600, seed=3)
    yv, sv = _binary_case(300, seed=4)
    r = clinical_report(yv, sv, y, s, "binary-class", n_boot=200, seed=0)
    assert r["operating_point"]["method"] == "youden"
    assert r["threshold"] == r["operating_point"]["threshold"]
    assert r == clinical_report(yv, sv, y, s, "binary-class", n_boot=200, seed=0)  # seeded
    for name in clinical.CI_METRICS["binary-class"]:
        low, high = r["ci"][name]
        assert low <= r[name] <= high, name
    assert r["medmnist"]["auc"] == pytest.approx(r["auc"])
    assert 0 <= r["ece"] < 1 and r["calibration"]["n"] == 600
    screening = clinical_report(yv, sv, y, s, "binary-class", method="sensitivity", target_sensitivity=0.95, n_boot=50)
    assert screening["operating_point"]["val_sensitivity"] >= 0.95
    assert screening["sensitivity"] > r["sensitivity"] and screening["specificity"] < r["specificity"]


@pytest.mark.parametrize("task", ["multi-class", "ordinal-regression"])
def test_report_for_a_multiclass_task(task):
    rng = np.random.default_rng(5)
    labels, scores = _evaluator_scores("bloodmnist", 500, rng)
    r = clinical_report(labels[:200], scores[:200], labels[200:], scores[200:], task, n_boot=100)
    assert r["operating_point"]["method"] == "argmax" and r["operating_point"]["threshold"] is None
    assert r["accuracy"] == pytest.approx(r["medmnist"]["acc"]) and r["auc"] == pytest.approx(r["medmnist"]["auc"])
    assert len(r["sensitivity_per_class"]) == 8
    for name in clinical.CI_METRICS["multi-class"]:
        assert r["ci"][name][0] <= r[name] <= r["ci"][name][1], name


def test_report_for_a_multilabel_task():
    rng = np.random.default_rng(6)
    labels, scores = _evaluator_scores("chestmnist", 400, rng)
    r = clinical_report(labels[:150], scores[:150], labels[150:], scores[150:], "multi-label, binary-class",
                        n_boot=50)
    assert len(r["operating_point"]["threshold"]) == 14 and len(r["per_label"]) == 14
    assert r["auc"] == pytest.approx(r["medmnist"]["auc"])
    assert r["ci"]["auc"][0] <= r["auc"] <= r["ci"]["auc"][1]


# ----------------------------------------------------------------------------- calibration

def test_ece_by_hand():
    y = np.array([1, 0, 0, 1])
    p = np.array([0.85, 0.85, 0.25, 0.65])  # confidences 0.85, 0.85, 0.75, 0.65; right, wrong, right, right
    rel = reliability(y, p, "binary-class", n_bins=10)
    # bins (0.8, 0.9]: conf 0.85, acc 1/2; (0.7, 0.8]: 0.75, 1; (0.6, 0.7]: 0.65, 1
    assert rel["ece"] == pytest.approx(2 / 4 * 0.35 + 1 / 4 * 0.25 + 1 / 4 * 0.35)
    assert rel["count"] == [0, 0, 0, 0, 0, 0, 1, 1, 2, 0]
    assert rel["accuracy"][8] == 0.5 and rel["confidence"][8] == pytest.approx(0.85) and rel["accuracy"][0] is None
    assert expected_calibration_error(y, p, "binary-class", n_bins=10) == rel["ece"]


def test_ece_separates_calibrated_from_overconfident_models():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = (rng.uniform(size=20000) < p).astype(int)  # calibrated by construction
    assert expected_calibration_error(y, p, "binary-class") < 0.015
    overconfident = np.where(p > 0.5, 1 - (1 - p) / 4, p / 4)
    assert expected_calibration_error(y, overconfident, "binary-class") > 0.1
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        reliability(y, p, "binary-class", n_bins=0)


def test_reliability_diagram_draws():
    y, s = _binary_case()
    fig = plot_reliability(reliability(y, s, "binary-class"), title="synthetic")
    assert "ECE" in fig.axes[0].get_title()


def test_temperature_scaling_fixes_overconfidence_without_changing_ranking():
    from qsal_lab.clinical import (expected_calibration_error, fit_temperature, negative_log_likelihood,
                                   probabilities_at)

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    true_logit = (2 * y - 1) * 1.0 + rng.normal(0, 1.5, len(y))   # calibrated at T = 1
    logits = np.stack([np.zeros_like(true_logit), true_logit], 1) * 4.0   # over-confident by 4x
    t = fit_temperature(y[:2000], logits[:2000], "binary-class")
    assert 3.0 < t < 5.5
    before = expected_calibration_error(y[2000:], probabilities_at(logits[2000:], "binary-class"), "binary-class")
    after = expected_calibration_error(y[2000:], probabilities_at(logits[2000:], "binary-class", t), "binary-class")
    assert after < before / 2
    assert negative_log_likelihood(y, logits, "binary-class", t) < negative_log_likelihood(y, logits, "binary-class")
    p1, pt = probabilities_at(logits, "binary-class")[:, 1], probabilities_at(logits, "binary-class", t)[:, 1]
    assert np.array_equal(np.argsort(p1, kind="stable"), np.argsort(pt, kind="stable"))
    with pytest.raises(ValueError, match="temperature must be"):
        probabilities_at(logits, "binary-class", 0.0)
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(y[:1], logits[:1, 0], "binary-class")
