"""Checks for chapter 10's exercise (edge benchmarking): the learner's single-stream latency measurement.

    measure(fn, example, warmup, queries, clock=time.perf_counter)
        -> {"p50_ms", "p90_ms", "p99_ms", "mean_ms"}

The check runs `measure` on a fake model whose cost is known exactly: calling it moves a fake clock
(read through `clock`, in seconds like time.perf_counter) forward by a deterministic amount that depends
only on how many times it has been called. The first calls are slow (as a fresh runtime's are: memory
allocation, kernel selection), the steady calls spread over 2-3 ms in a shuffled order, and a few are
slow outliers (as on a busy machine). So the check knows every right answer and can tell which
mistake produced a wrong one: no warm-up, warm-up calls counted, seconds for milliseconds, the mean
for the median, a fraction for a percentile, percentiles of the call order or of the clock readings.
"""
from __future__ import annotations

import copy

import numpy as np

from .common import CheckFailed, as_float, call, close, passed

KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
# percentile definitions differ by up to a few hundredths of a ms on the fake model's times: enough to recognise a
# mistake (seconds for ms, warm-up included) from a relative distance (not precision, the definitions differ)
DEFINITIONS = 0.05
FIRST_CALL_MS = 40.0  # each of the first FIRST_CALLS calls: a cold start
FIRST_CALLS = 5
OUTLIER_MS = 9.0      # every OUTLIER_EVERY-th steady call: another program got the core
OUTLIER_EVERY = 25
CLOCK_START_S = 1000.0  # a perf_counter-like clock does not start at 0


def steady_cost_ms(k: int) -> float:
    """The k-th steady call (k = 0, 1, ... after the cold start): 2.00..2.99 ms in shuffled order, or an outlier."""
    if k % OUTLIER_EVERY == OUTLIER_EVERY - 1:
        return OUTLIER_MS
    return 2.0 + 0.01 * ((k * 37) % 100)


class FakeModel:
    """A callable model whose n-th call (0-based) advances `clock` by a known cost; counts its calls."""

    def __init__(self):
        self.now_s = CLOCK_START_S
        self.calls = 0
        self.clock_reads = 0
        self.costs_ms = []

    def cost_ms(self, n: int) -> float:
        return FIRST_CALL_MS if n < FIRST_CALLS else steady_cost_ms(n - FIRST_CALLS)

    def __call__(self, example):
        cost = self.cost_ms(self.calls)
        self.costs_ms.append(cost)
        self.calls += 1
        self.now_s += cost / 1000.0
        return example

    def clock(self) -> float:
        self.clock_reads += 1
        return self.now_s


def _stats(values_ms) -> dict:
    v = np.asarray(values_ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)),
            "p99_ms": float(np.percentile(v, 99)), "mean_ms": float(v.mean())}


# the percentile definitions in use (numpy's methods; statistics.quantiles' "exclusive" is numpy's "weibull", its
# "inclusive" numpy's "linear"): a right answer may be any of them
PERCENTILE_METHODS = ("inverted_cdf", "averaged_inverted_cdf", "closest_observation", "interpolated_inverted_cdf",
                      "hazen", "weibull", "linear", "median_unbiased", "normal_unbiased", "lower", "higher", "midpoint",
                      "nearest")


def _percentile_range(values_ms, q: float) -> tuple[float, float]:
    """The smallest and the largest value the usual percentile definitions give."""
    v = np.asarray(values_ms, dtype=np.float64)
    found = [float(np.percentile(v, q, method=m)) for m in PERCENTILE_METHODS]
    return min(found), max(found)


def _read(result, name="measure") -> dict:
    if result is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns a dict with "
                          f"{', '.join(KEYS)}.")
    if not isinstance(result, dict):
        raise CheckFailed(f"{name}() returned a {type(result).__name__}; return a dict with keys {', '.join(KEYS)}.")
    missing = [k for k in KEYS if k not in result]
    if missing:
        raise CheckFailed(f"{name}() returned a dict without {', '.join(missing)}; it needs {', '.join(KEYS)} "
                          f"(milliseconds).")
    return {k: as_float(result[k], name, part=k) for k in KEYS}


def diagnose(measure, warmup: int = 10, queries: int = 200) -> None:
    """Run `measure` on a FakeModel and raise CheckFailed naming the mistake, if there is one."""
    model = FakeModel()
    result = _read(call(measure, "measure", model, np.zeros((1, 1, 28, 28), np.float32), warmup, queries,
                        model.clock))
    steady = [model.cost_ms(n) for n in range(warmup, warmup + queries)]  # what must be timed
    right = _stats(steady)
    where = f"(fake model: warmup={warmup}, queries={queries}; its first {FIRST_CALLS} calls take {FIRST_CALL_MS:g} ms)"

    if model.calls == 0:
        raise CheckFailed(f"measure() never called fn; call fn(example) warmup + queries times {where}.")
    if model.clock_reads == 0:
        raise CheckFailed("measure() never read the clock it was given: time each call with `clock()` (the "
                          "`clock` argument, time.perf_counter by default), not with time.time() or "
                          "time.perf_counter() directly, so that the check can control time.")
    if model.calls == queries:
        raise CheckFailed(f"fn was called {queries} times for queries={queries}: no warm-up. First make `warmup` "
                          f"untimed calls (a fresh model's first calls allocate memory and pick kernels), then time "
                          f"`queries` calls {where}.")
    if model.calls != warmup + queries:
        raise CheckFailed(f"fn was called {model.calls} times; expected warmup + queries = {warmup + queries} "
                          f"({warmup} untimed, then {queries} timed) {where}.")
    if model.clock_reads < queries:
        raise CheckFailed(f"the clock was read {model.clock_reads} times for {queries} timed calls: time every "
                          f"call on its own (read the clock right before and right after fn(example)), not the "
                          f"whole loop at once; a percentile needs one time per query.")

    everything = [model.cost_ms(n) for n in range(warmup + queries)]
    with_warmup = _stats(everything)
    if all(close(result[k], with_warmup[k], slack=DEFINITIONS) for k in KEYS) or close(result["mean_ms"], with_warmup["mean_ms"]):
        raise CheckFailed(f"your statistics include the warm-up calls (your mean {result['mean_ms']:.3f} ms, right "
                          f"{right['mean_ms']:.3f} ms): keep only the {queries} calls after the warm-up {where}.")
    if all(close(result[k] * 1000, right[k], slack=DEFINITIONS) for k in KEYS):
        raise CheckFailed(f"your times are in seconds (p50 {result['p50_ms']:.6f}); the clock counts seconds, "
                          f"the keys say milliseconds: multiply by 1000.")
    if all(close(result[k] / 1000, right[k], slack=DEFINITIONS) for k in KEYS):
        raise CheckFailed("your times are 1000x too large: the clock already counts seconds (like "
                          "time.perf_counter); multiply by 1000 once to get milliseconds.")
    if result["p50_ms"] > 100 * OUTLIER_MS:
        raise CheckFailed(f"your p50 is {result['p50_ms']:.4g}: that is a clock reading, not a duration. Take "
                          f"percentiles of the durations, end - start of each call, not of the clock's values.")
    if not close(result["mean_ms"], right["mean_ms"]):
        raise CheckFailed(f"mean_ms is {result['mean_ms']:.4f} ms, the mean of the {queries} timed calls is "
                          f"{right['mean_ms']:.4f} ms {where}.")
    if close(result["p50_ms"], right["mean_ms"]):
        raise CheckFailed(f"p50_ms is the mean ({result['p50_ms']:.4f} ms); p50 is the median, which the few "
                          f"slow outliers do not pull up: np.percentile(times, 50) ({right['p50_ms']:.4f} ms).")
    fast = float(np.percentile(steady, 5))
    if all(result[k] <= fast or close(result[k], fast) for k in ("p50_ms", "p90_ms", "p99_ms")):
        raise CheckFailed(f"p50, p90 and p99 are all among the fastest calls (at most {fast:.2f} ms): np.percentile takes q "
                          f"in percent (50, 90, 99), np.quantile a fraction (0.5, 0.9, 0.99); do not mix them.")
    by_position = {q: steady[min(len(steady) - 1, int(q / 100 * len(steady)))] for q in (50, 90, 99)}
    for q in (50, 90, 99):
        low, high = _percentile_range(steady, q)
        got = result[f"p{q}_ms"]
        if low <= got <= high or close(got, low) or close(got, high):
            continue
        if close(got, by_position[q]):
            raise CheckFailed(f"p{q}_ms = {got:.3f} ms is the time of call number {int(q / 100 * len(steady))} in "
                              f"the order they ran, not the {q}th percentile: sort the times first (np.percentile "
                              f"does), the percentile is over the sorted durations.")
        raise CheckFailed(f"p{q}_ms is {got:.4f} ms; the {q}th percentile of the {queries} timed calls is "
                          f"{right[f'p{q}_ms']:.4f} ms (between {low:.4f} and {high:.4f} with any usual "
                          f"definition) {where}.")


def check_measure_quietly(measure) -> None:
    """check_measure without its printout."""
    diagnose(measure, warmup=10, queries=200)
    diagnose(measure, warmup=8, queries=101)


def check_measure(measure) -> None:
    """The learner's measure(fn, example, warmup, queries, clock) on a fake model with known costs."""
    check_measure_quietly(measure)  # two splits of warm-up and queries: nothing tuned to one pair of numbers
    passed("check_measure passed: warm-up untimed, one duration per query in ms, median and percentiles right")


def check_measure_on_model(measure, fn, example, warmup: int, queries: int, reference: dict,
                           tolerance: float = 0.5) -> dict:
    """Your measure on a real model, next to qsal_lab.edge's numbers for it (`reference`, a benchmark row).

    Real timings vary from run to run, more so on a busy machine, so this only catches gross errors:
    a p50 off by more than `tolerance` (a fraction) from the library's, or percentiles out of order. The fake-model
    cases of check_measure run first: a mistake is named there, and never passes here."""
    check_measure_quietly(measure)
    ours = _read(call(measure, "measure", fn, example, warmup, queries))
    if not ours["p50_ms"] <= ours["p90_ms"] <= ours["p99_ms"]:
        raise CheckFailed(f"your percentiles are out of order (p50 {ours['p50_ms']:.3f}, p90 {ours['p90_ms']:.3f}, "
                          f"p99 {ours['p99_ms']:.3f} ms): a higher percentile is never faster.")
    ratio = ours["p50_ms"] / reference["p50_ms"]
    if not (1 - tolerance) <= ratio <= 1 / (1 - tolerance):
        raise CheckFailed(f"your p50 is {ours['p50_ms']:.4f} ms, qsal_lab.edge measured {reference['p50_ms']:.4f} ms "
                          f"on the same model ({ratio:.2f}x): more than timing noise. Are the units milliseconds?")
    passed(f"check_measure_on_model passed: your p50 {ours['p50_ms']:.4f} ms, the library's "
           f"{reference['p50_ms']:.4f} ms ({ratio:.2f}x, timing noise)")
    return ours


# ----------------------------------------------------------------------------- exercise 11: reading run.py's JSON

def _prediction(name, logits):
    logits = [float(v) for v in logits]
    top = int(np.argmax(logits))
    return {"input": name, "class": top, "label": str(top), "logits": logits}


def _runs():
    """(reference, device, right answer): two run.py outputs with known differences.

    Each run lists its predictions in its own order (as two file systems might list a folder), and each has an
    input the other lacks (a file that was not copied): only the 8 inputs both classified count. Two of those get
    another class on the device, and they come in unsorted order in both runs. The largest logit difference is
    negative (device < reference) and sits on a logit that is not the input's top class."""
    rng = np.random.default_rng(0)
    names = [f"samples/{i:02d}.png" for i in range(10)]
    ref_logits = rng.normal(0, 3, (10, 10))
    ref_logits[np.arange(10), np.arange(10)] += 12  # clear winners: input i is class i
    ref_logits[3, 7] = ref_logits[3, 3] - 0.2  # inputs 3 and 6 have a close runner-up
    ref_logits[6, 1] = ref_logits[6, 6] - 0.1
    dev_logits = ref_logits + rng.normal(0, 1e-3, ref_logits.shape)
    dev_logits[5, 2] = ref_logits[5, 2] - 0.75  # the largest difference: negative, and not on input 5's top class
    dev_logits[3, 3] = ref_logits[3, 3] - 0.3   # input 3 turns into class 7 on the device
    dev_logits[6, 6] = ref_logits[6, 6] - 0.25  # input 6 turns into class 1
    both = range(1, 9)  # the reference has 0..8, the device 1..9
    diffs = np.abs(dev_logits - ref_logits)[list(both)]
    reference = {"machine": "x86_64", "predictions": [_prediction(names[i], ref_logits[i])
                                                      for i in (5, 0, 8, 6, 1, 3, 2, 7, 4)]}
    device = {"machine": "aarch64", "predictions": [_prediction(names[i], dev_logits[i])
                                                    for i in (2, 9, 6, 7, 3, 1, 5, 4, 8)]}
    right = {"inputs": 8, "same_class": 6, "different": [names[3], names[6]], "max_abs_logit_diff": float(diffs.max())}
    return reference, device, right


def _diff_mistakes(reference, device):
    """{what the learner did: the number it gives} for the usual max_abs_logit_diff mistakes."""
    ref = {p["input"]: np.asarray(p["logits"]) for p in reference["predictions"]}
    dev = {p["input"]: np.asarray(p["logits"]) for p in device["predictions"]}
    names = sorted(ref.keys() & dev.keys())
    signed = np.array([dev[n] - ref[n] for n in names])
    return {
        "you took the largest SIGNED difference: the device's logit may be below the reference's, so take the "
        "absolute value before the maximum, max |device - reference|": float(signed.max()),
        "that is the MEAN of |device - reference|: the question is the worst logit, the maximum": float(np.abs(signed).mean()),
        "you compared only the top logits (the largest logit of each run); every class's logit counts, and the largest "
        "difference here is on a logit that is not the top one": float(max(abs(dev[n].max() - ref[n].max()) for n in names)),
        "you compared the logits of the top class only; every class's logit counts, and the largest difference here is "
        "on a logit that is not the top one": float(max(abs(dev[n][ref[n].argmax()] - ref[n][ref[n].argmax()]) for n in names)),
    }


KEY_HINTS = [("samples/", "An input of one run is missing from the other (a file that was not copied): compare only the "
                           "inputs both runs classified, the names present in both")]


def check_agreement(agreement) -> None:
    """The learner's agreement(reference, device) on two run.py outputs with known differences."""
    reference, device, right = _runs()
    out = call(agreement, "agreement", copy.deepcopy(reference), copy.deepcopy(device), hints=KEY_HINTS)
    if out is None:
        raise CheckFailed("agreement() returned None: fill in its TODO so that it returns a dict with inputs, "
                          "same_class, different and max_abs_logit_diff.")
    if not isinstance(out, dict) or any(k not in out for k in right):
        raise CheckFailed(f"agreement() must return a dict with keys {', '.join(right)}; got "
                          f"{sorted(out) if isinstance(out, dict) else type(out).__name__}.")
    different = out["different"]
    if isinstance(different, (tuple, set, np.ndarray)):
        different = list(different)
    if not isinstance(different, list):
        raise CheckFailed(f"different is a {type(different).__name__}; return a list of the \"input\" names whose class "
                          f"differs.")
    diff = as_float(out["max_abs_logit_diff"], "agreement", part="max_abs_logit_diff")
    if int(out["same_class"]) < 3 or len(different) > 3:
        raise CheckFailed(f"same_class is {out['same_class']} of {right['inputs']}: the device lists its predictions in "
                          f"another order than the reference. Match them by their \"input\" name, not by position.")
    n_ref, n_dev = len(reference["predictions"]), len(device["predictions"])
    if int(out["inputs"]) != right["inputs"]:
        union = len({p["input"] for p in reference["predictions"] + device["predictions"]})
        why = ""
        if int(out["inputs"]) == union:
            why = (f" {union} is the union: it counts inputs only one run has. Count those present in both "
                   f"(the intersection of the names).")
        elif int(out["inputs"]) in (n_ref, n_dev):
            why = (f" {int(out['inputs'])} is one run's count; one of its inputs is missing from the other run. Count "
                   f"only the names present in both.")
        raise CheckFailed(f"inputs is {out['inputs']}: the reference run has {n_ref} predictions, the device run "
                          f"{n_dev}, and both classified {right['inputs']} inputs.{why}")
    if sorted(different) != right["different"]:
        raise CheckFailed(f"different is {different}; the inputs whose class differs are {right['different']} "
                          f"(compare the \"class\" of the predictions with the same \"input\").")
    if different != right["different"]:
        raise CheckFailed(f"different is {different}: the right names, in the order a run listed them. Return them "
                          f"sorted, {right['different']}, so that two reports of the same runs are the same.")
    if int(out["same_class"]) != right["same_class"]:
        raise CheckFailed(f"same_class is {out['same_class']}, expected {right['same_class']} (inputs minus different).")
    if not close(diff, right["max_abs_logit_diff"]):
        hint = next((text for text, wrong in _diff_mistakes(reference, device).items() if close(diff, wrong)),
                    "the largest |device logit - reference logit| over every class of every input both runs "
                    "classified (matched by name).")
        raise CheckFailed(f"max_abs_logit_diff is {diff:.6f}, expected {right['max_abs_logit_diff']:.6f}: {hint}")
    passed("check_agreement passed: predictions matched by input name (only those both runs have), classes "
           "compared, the different ones sorted, the largest |logit difference| over every class")
