"""The chapter 10 (edge benchmarking) exercise checks: right answers pass, typical mistakes fail with the
message that explains them."""
import time

import numpy as np
import pytest

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.edge_benchmarking import FakeModel, check_measure, check_measure_on_model


def timed(fn, example, n, clock):
    times = []
    for _ in range(n):
        start = clock()
        fn(example)
        times.append(clock() - start)
    return np.array(times)


def stats(ms, p50=None):
    return {"p50_ms": float(np.percentile(ms, 50)) if p50 is None else p50, "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def good(fn, example, warmup=10, queries=100, clock=time.perf_counter):
    for _ in range(warmup):
        fn(example)
    return stats(timed(fn, example, queries, clock) * 1000)


def good_nearest_rank(fn, example, warmup=10, queries=100, clock=time.perf_counter):  # another right answer
    for _ in range(warmup):
        fn(example)
    ms = sorted(timed(fn, example, queries, clock) * 1000)
    rank = lambda q: ms[max(0, int(np.ceil(q / 100 * len(ms))) - 1)]
    return {"p50_ms": rank(50), "p90_ms": rank(90), "p99_ms": rank(99), "mean_ms": sum(ms) / len(ms)}


def test_check_measure_passes_right_answers(capsys):
    check_measure(good)
    assert "✅ check_measure passed" in capsys.readouterr().out
    check_measure(good_nearest_rank)


def test_fake_model_costs_are_what_the_docstring_says():
    model = FakeModel()
    ms = timed(model, None, 5 + 100, model.clock) * 1000
    assert np.allclose(ms[:5], 40.0)
    steady = ms[5:]
    assert np.isclose(steady.max(), 9.0) and (steady == steady.max()).sum() == 4
    assert 2.0 - 1e-9 <= steady[steady < 9].min() and steady[steady < 9].max() <= 2.99 + 1e-9


def test_check_measure_names_the_usual_mistakes():
    with pytest.raises(CheckFailed, match=r"measure\(\) returned None: fill in its TODO"):
        check_measure(lambda fn, example, warmup, queries, clock: None)
    with pytest.raises(CheckFailed, match="without p90_ms, p99_ms"):
        check_measure(lambda fn, example, warmup, queries, clock: {"p50_ms": 1.0, "mean_ms": 1.0})

    def no_warmup(fn, example, warmup, queries, clock):
        return stats(timed(fn, example, queries, clock) * 1000)
    with pytest.raises(CheckFailed, match="no warm-up"):
        check_measure(no_warmup)

    def warmup_counted(fn, example, warmup, queries, clock):
        return stats(timed(fn, example, warmup + queries, clock) * 1000)
    with pytest.raises(CheckFailed, match="include the warm-up calls"):
        check_measure(warmup_counted)

    def seconds(fn, example, warmup, queries, clock):
        for _ in range(warmup):
            fn(example)
        return stats(timed(fn, example, queries, clock))
    with pytest.raises(CheckFailed, match="in seconds.*multiply by 1000"):
        check_measure(seconds)

    def mean_for_median(fn, example, warmup, queries, clock):
        for _ in range(warmup):
            fn(example)
        ms = timed(fn, example, queries, clock) * 1000
        return stats(ms, p50=float(ms.mean()))
    with pytest.raises(CheckFailed, match="p50_ms is the mean"):
        check_measure(mean_for_median)

    def fraction(fn, example, warmup, queries, clock):
        for _ in range(warmup):
            fn(example)
        ms = timed(fn, example, queries, clock) * 1000
        p50, p90, p99 = np.percentile(ms, [0.5, 0.9, 0.99])
        return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": ms.mean()}
    with pytest.raises(CheckFailed, match="np.percentile takes q in percent"):
        check_measure(fraction)

    def unsorted(fn, example, warmup, queries, clock):
        for _ in range(warmup):
            fn(example)
        ms = timed(fn, example, queries, clock) * 1000
        pick = lambda q: ms[int(q / 100 * len(ms))]
        return {"p50_ms": pick(50), "p90_ms": pick(90), "p99_ms": pick(99), "mean_ms": ms.mean()}
    with pytest.raises(CheckFailed, match="in the order they ran.*sort the times first"):
        check_measure(unsorted)

    def clock_readings(fn, example, warmup, queries, clock):
        for _ in range(warmup):
            fn(example)
        ends, durations = [], []
        for _ in range(queries):
            start = clock()
            fn(example)
            ends.append(clock() * 1000)
            durations.append(ends[-1] - start * 1000)
        return {**stats(np.array(ends)), "mean_ms": float(np.mean(durations))}
    with pytest.raises(CheckFailed, match="a clock reading, not a duration"):
        check_measure(clock_readings)

    def whole_loop(fn, example, warmup, queries, clock):
        for _ in range(warmup):
            fn(example)
        start = clock()
        for _ in range(queries):
            fn(example)
        each = (clock() - start) / queries * 1000
        return {"p50_ms": each, "p90_ms": each, "p99_ms": each, "mean_ms": each}
    with pytest.raises(CheckFailed, match="time every call on its own"):
        check_measure(whole_loop)

    def own_clock(fn, example, warmup, queries, clock):
        return good(fn, example, warmup, queries, clock=time.perf_counter)
    with pytest.raises(CheckFailed, match="never read the clock it was given"):
        check_measure(own_clock)

    def raises(fn, example, warmup, queries, clock):
        raise NotImplementedError
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_measure(raises)


def test_check_measure_on_model():
    work = lambda x: np.sort(np.random.default_rng(0).random(20_000))
    reference = good(work, None, 3, 30)
    out = check_measure_on_model(good, work, None, 3, 30, reference, tolerance=0.9)
    assert out["p50_ms"] > 0
    # the fake-model cases run first: a mistake gets their message, never a pass on the real model
    with pytest.raises(CheckFailed, match="in seconds"):
        check_measure_on_model(lambda fn, x, w, q, clock=time.perf_counter:
                               {k: v / 1000 for k, v in good(fn, x, w, q, clock).items()},
                               work, None, 3, 30, reference, tolerance=0.5)

    def nanoseconds_by_default(fn, x, w, q, clock=time.perf_counter_ns):  # right with the check's clock only
        return good(fn, x, w, q, clock)
    with pytest.raises(CheckFailed, match="more than timing noise"):
        check_measure_on_model(nanoseconds_by_default, work, None, 3, 30, reference, tolerance=0.5)

    def out_of_order_by_default(fn, x, w, q, clock=None):
        if clock is not None:
            return good(fn, x, w, q, clock)
        return {"p50_ms": 3.0, "p90_ms": 2.0, "p99_ms": 4.0, "mean_ms": 3.0}
    with pytest.raises(CheckFailed, match="out of order"):
        check_measure_on_model(out_of_order_by_default, work, None, 3, 30, reference)


# ----------------------------------------------------------------------------- exercise 11: agreement

from qsal_lab.checks.edge_benchmarking import check_agreement  # noqa: E402

from .mistakes import solution_object  # noqa: E402


good_agreement = solution_object("11_raspberry_pi.ipynb", "agreement")  # the solution notebook's answer


def test_check_agreement_passes_a_right_answer(capsys):
    check_agreement(good_agreement)
    assert "✅ check_agreement passed" in capsys.readouterr().out


def test_check_agreement_names_the_usual_mistakes():
    with pytest.raises(CheckFailed, match=r"agreement\(\) returned None"):
        check_agreement(lambda r, d: None)

    def by_position(reference, device):
        pairs = list(zip(reference["predictions"], device["predictions"]))
        different = sorted(p["input"] for p, q in pairs if p["class"] != q["class"])
        diff = max(float(np.max(np.abs(np.subtract(q["logits"], p["logits"])))) for p, q in pairs)
        return {"inputs": len(pairs), "same_class": len(pairs) - len(different), "different": different,
                "max_abs_logit_diff": diff}
    with pytest.raises(CheckFailed, match="Match them by their \"input\" name"):
        check_agreement(by_position)

    def signed(reference, device):
        out = good_agreement(reference, device)
        ref = {p["input"]: p for p in reference["predictions"]}
        out["max_abs_logit_diff"] = max(float(np.max(np.subtract(p["logits"], ref[p["input"]]["logits"])))
                                        for p in device["predictions"] if p["input"] in ref)
        return out
    with pytest.raises(CheckFailed, match="take the absolute value"):
        check_agreement(signed)

    def labels_not_classes(reference, device):
        out = good_agreement(reference, device)
        return {**out, "different": [], "same_class": out["inputs"]}
    with pytest.raises(CheckFailed, match=r"the inputs whose class differs are \['samples/03.png', 'samples/06.png'\]"):
        check_agreement(labels_not_classes)

    with pytest.raises(CheckFailed, match="must return a dict with keys"):
        check_agreement(lambda r, d: {"inputs": 8})
