"""Exercise 10 (edge benchmarking): a single-stream latency measurement."""
from . import Exercise, code, edit

CHECKS = "edge_benchmarking"
NOTEBOOK = "10_edge_benchmarking.ipynb"

MEASURE = code("""
def measure(fn, example, warmup=10, queries=100, clock=time.perf_counter):
    for _ in range(warmup):
        fn(example)
    seconds = []
    for _ in range(queries):
        start = clock()
        fn(example)
        seconds.append(clock() - start)
    ms = np.array(seconds) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean())}
""")

EXERCISES = [
    Exercise(
        10, NOTEBOOK, "measure", "check_measure", prose="warm-up, then one timed call per query; percentiles in ms",
        mistakes={
            "no warm-up": (edit(MEASURE, ("    for _ in range(warmup):\n        fn(example)\n", "")), ("no warm-up",)),
            "the warm-up timed too": (edit(MEASURE, ("    for _ in range(queries):", "    for _ in range(warmup + queries):"),
                                           ("    for _ in range(warmup):\n        fn(example)\n", "")),
                                      ("include the warm-up calls",)),
            "seconds, not milliseconds": (edit(MEASURE, ("np.array(seconds) * 1000", "np.array(seconds)")), ("in seconds",)),
            "microseconds": (edit(MEASURE, ("np.array(seconds) * 1000", "np.array(seconds) * 1e6")), ("1000x too large",)),
            "percentiles of the clock readings": (edit(MEASURE, ("seconds.append(clock() - start)", "seconds.append(clock())")),
                                                  ("clock reading",)),
            "the mean as p50": (edit(MEASURE, ('"p50_ms": float(p50)', '"p50_ms": float(ms.mean())')), ("p50_ms is the mean",)),
            "np.percentile with fractions": (edit(MEASURE, ("[50, 90, 99]", "[0.5, 0.9, 0.99]")), ("in percent",)),
            "unsorted times indexed": (
                edit(MEASURE, ("    p50, p90, p99 = np.percentile(ms, [50, 90, 99])",
                               "    p50, p90, p99 = (ms[int(q * len(ms))] for q in (0.5, 0.9, 0.99))")),
                ("sort the times first",)),
            "time.perf_counter, not the clock given": (edit(MEASURE, ("start = clock()", "start = time.perf_counter()"),
                                                            ("clock() - start", "time.perf_counter() - start")),
                                                       ("never read the clock",)),
            "the whole loop timed once": (
                edit(MEASURE, ("    for _ in range(queries):\n        start = clock()\n        fn(example)\n        seconds.append(clock() - start)",
                               "    start = clock()\n    for _ in range(queries):\n        fn(example)\n    seconds = [(clock() - start) / queries] * queries")),
                ("time every call on its own",)),
            "one warm-up call too many": (edit(MEASURE, ("range(warmup)", "range(warmup + 1)")), ("expected warmup + queries",)),
            "a list, not a dict": (edit(MEASURE, ('    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean())}',
                                                  "    return [p50, p90, p99, ms.mean()]")),
                                   ("return a dict",)),
        },
        correct={
            "statistics.quantiles": code("""
                def measure(fn, example, warmup=10, queries=100, clock=time.perf_counter):
                    for _ in range(warmup):
                        fn(example)
                    times = []
                    for _ in range(queries):
                        t0 = clock()
                        fn(example)
                        times.append((clock() - t0) * 1000)
                    q = statistics.quantiles(times, n=100)
                    return {"p50_ms": statistics.median(times), "p90_ms": q[89], "p99_ms": q[98],
                            "mean_ms": statistics.fmean(times)}
            """),
            "np.quantile, float32 milliseconds": edit(
                MEASURE, ("np.array(seconds) * 1000", "np.array(seconds, dtype=np.float32) * 1000"),
                ("np.percentile(ms, [50, 90, 99])", "np.quantile(ms, [0.5, 0.9, 0.99])")),
            "nearest rank on the sorted times, torch": code("""
                def measure(fn, example, warmup=10, queries=100, clock=time.perf_counter):
                    for _ in range(warmup):
                        fn(example)
                    ms = torch.zeros(queries, dtype=torch.float64)
                    for i in range(queries):
                        start = clock()
                        fn(example)
                        ms[i] = (clock() - start) * 1e3
                    s = ms.sort().values
                    rank = lambda q: s[max(0, math.ceil(q / 100 * queries) - 1)]
                    return {"p50_ms": rank(50), "p90_ms": rank(90), "p99_ms": rank(99), "mean_ms": ms.mean()}
            """),
        }),
]
