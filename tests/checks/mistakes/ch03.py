"""Exercise 3 (post-training quantization): the asymmetric grid, a min-max observer, a percentile observer."""
from . import Exercise, code, edit

CHECKS = "ptq"
NOTEBOOK = "03_ptq.ipynb"

QPARAMS = code("""
def asymmetric_qparams(lo, hi, bits):
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (2**bits - 1)
    zero_point = int(round(-lo / scale))
    return scale, zero_point
""")

MINMAX = code("""
class MyMinMaxObserver:
    def __init__(self):
        self.min_val = None
        self.max_val = None

    def update(self, x):
        lo, hi = x.min().item(), x.max().item()
        self.min_val = lo if self.min_val is None else min(self.min_val, lo)
        self.max_val = hi if self.max_val is None else max(self.max_val, hi)

    def compute(self, bits):
        return asymmetric_qparams(self.min_val, self.max_val, bits)
""")

PERCENTILE = code("""
class MyPercentileObserver:
    def __init__(self, percentile=99.99):
        self.percentile = percentile
        self.lows, self.highs = [], []

    def update(self, x):
        values = x.detach().flatten().float()
        self.lows.append(torch.quantile(values, 1 - self.percentile / 100).item())
        self.highs.append(torch.quantile(values, self.percentile / 100).item())

    def compute(self, bits):
        return asymmetric_qparams(sum(self.lows) / len(self.lows), sum(self.highs) / len(self.highs), bits)
""")


def calibrate(observer_cls, mnist_calibration):
    from qsal_lab.checks.ptq import check_observer_calibration

    model, loader = mnist_calibration
    return check_observer_calibration(observer_cls, model, loader, None, bits=8, num_batches=len(loader))


EXERCISES = [
    Exercise(
        3, NOTEBOOK, "asymmetric_qparams", "check_asymmetric_qparams", prose="scale and zero point for a range",
        mistakes={
            "range not widened to include 0": (edit(QPARAMS, ("min(float(lo), 0.0), max(float(hi), 0.0)", "float(lo), float(hi)")),
                                               ("must lie in [0, 255]", "widen the range to include 0")),
            "2**bits steps": (edit(QPARAMS, ("(2**bits - 1)", "2**bits")), ("2^8 - 1 = 255 steps", "divide by 255")),
            "zero point truncated": (edit(QPARAMS, ("int(round(-lo / scale))", "int(-lo / scale)")),
                                     ("truncated/floored", "round()")),
            "zero point rounded up": (edit(QPARAMS, ("int(round(-lo / scale))", "math.ceil(-lo / scale)")),
                                      ("rounded up (ceil)",)),
            "zero point with the wrong sign": (edit(QPARAMS, ("int(round(-lo / scale))", "int(round(lo / scale))")),
                                               ("wrong sign", ">= 0")),
            "zero point not rounded": (edit(QPARAMS, ("int(round(-lo / scale))", "-lo / scale")),
                                       ("must be an integer code",)),
            "zero point from the range before widening": (
                edit(QPARAMS, ("    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)\n    scale = (hi - lo) / (2**bits - 1)\n",
                               "    scale = (max(hi, 0.0) - min(lo, 0.0)) / (2**bits - 1)\n")),
                ("must lie in [0, 255]",)),
        },
        correct={
            "numpy, round half up": code("""
                def asymmetric_qparams(lo, hi, bits):
                    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
                    scale = (hi - lo) / (2**bits - 1)
                    return scale, int(np.floor(-lo / scale + 0.5))
            """),
            "torch float32 tensors": code("""
                def asymmetric_qparams(lo, hi, bits):
                    lo, hi = torch.tensor(lo).clamp(max=0), torch.tensor(hi).clamp(min=0)
                    scale = (hi - lo) / (2**bits - 1)
                    return scale, torch.round(-lo / scale).int()
            """),
        }),
    Exercise(
        3, NOTEBOOK, "MyMinMaxObserver", "check_minmax_observer", needs=("asymmetric_qparams",), kind="class",
        prose="running min and max over the calibration batches",
        downstream="check_observer_calibration", fixtures=("mnist_calibration",),
        run_downstream=calibrate,
        mistakes={
            "only the last batch": (edit(MINMAX, ("lo if self.min_val is None else min(self.min_val, lo)", "lo"),
                                         ("hi if self.max_val is None else max(self.max_val, hi)", "hi")),
                                    ("only remembers the last batch",)),
            "only the first batch": (edit(MINMAX, ("min(self.min_val, lo)", "self.min_val"), ("max(self.max_val, hi)", "self.max_val")),
                                     ("only remembers the first batch",)),
            "the batches' minima averaged": (
                edit(MINMAX, ("min(self.min_val, lo)", "(self.min_val + lo) / 2"), ("max(self.max_val, hi)", "(self.max_val + hi) / 2")),
                ("averages (or smooths) the batches' minima", "running extremes")),
            "one min per channel (amin over a dim)": (
                edit(MINMAX, ("lo, hi = x.min().item(), x.max().item()", "lo, hi = x.amin(dim=0), x.amax(dim=0)"),
                     ("min(self.min_val, lo)", "torch.minimum(self.min_val, lo)"), ("max(self.max_val, hi)", "torch.maximum(self.max_val, hi)")),
                ("one value per channel", "x.min() and x.max()")),
            "x.min(dim=0): values and indices": (
                edit(MINMAX, ("lo, hi = x.min().item(), x.max().item()", "lo, hi = x.flatten().min(dim=0), x.flatten().max(dim=0)"),
                     ("lo if self.min_val is None else min(self.min_val, lo)", "lo"), ("hi if self.max_val is None else max(self.max_val, hi)", "hi")),
                ("(values, indices)",)),
            "min and max swapped": (edit(MINMAX, ("lo, hi = x.min().item(), x.max().item()", "hi, lo = x.min().item(), x.max().item()")),
                                    ("minimum and the maximum are swapped",)),
            "compute() forgets the batches seen": (
                edit(MINMAX, ("        return asymmetric_qparams(self.min_val, self.max_val, bits)",
                              "        lo, hi = self.min_val, self.max_val\n        self.min_val = self.max_val = None\n"
                              "        return asymmetric_qparams(lo, hi, bits)")),
                ("must not change what the observer has seen",)),
            "bits ignored": (edit(MINMAX, ("self.max_val, bits)", "self.max_val, 8)")), ("at 4 bits", "expected scale")),
        },
        correct={
            "starts from 0 (the range includes 0 anyway)": edit(MINMAX, ("self.min_val = None  ", "self.min_val = 0.0  ")
                                                               if "self.min_val = None  " in MINMAX else
                                                               ("self.min_val = None\n        self.max_val = None",
                                                                "self.min_val = 0.0\n        self.max_val = 0.0")),
            "tensors kept with torch.minimum, float64": code("""
                class MyMinMaxObserver:
                    def __init__(self):
                        self.min_val = torch.tensor(float("inf"), dtype=torch.float64)
                        self.max_val = torch.tensor(float("-inf"), dtype=torch.float64)

                    def update(self, x):
                        self.min_val = torch.minimum(self.min_val, x.double().min())
                        self.max_val = torch.maximum(self.max_val, x.double().max())

                    def compute(self, bits):
                        return asymmetric_qparams(self.min_val.item(), self.max_val.item(), bits)
            """),
            "every batch kept in a list, numpy at the end": code("""
                class MyMinMaxObserver:
                    def __init__(self):
                        self.seen = []

                    def update(self, x):
                        self.seen.append(x.detach().flatten().numpy().copy())

                    def compute(self, bits):
                        values = np.concatenate(self.seen)
                        return asymmetric_qparams(values.min(), values.max(), bits)
            """),
        }),
    Exercise(
        3, NOTEBOOK, "MyPercentileObserver", "check_percentile_observer", needs=("asymmetric_qparams",), kind="class",
        prose="per-batch percentiles, averaged",
        mistakes={
            "the min and max": (edit(PERCENTILE, ("torch.quantile(values, 1 - self.percentile / 100)", "values.min()"),
                                     ("torch.quantile(values, self.percentile / 100)", "values.max()")),
                                ("min/max instead of the percentiles",)),
            "percentiles of all batches pooled": (
                code("""
                    class MyPercentileObserver:
                        def __init__(self, percentile=99.99):
                            self.percentile = percentile
                            self.seen = []

                        def update(self, x):
                            self.seen.append(x.flatten())

                        def compute(self, bits):
                            values = torch.cat(self.seen)
                            q = self.percentile / 100
                            return asymmetric_qparams(torch.quantile(values, 1 - q).item(), torch.quantile(values, q).item(), bits)
                """), ("all batches together",)),
            "torch.quantile given percent": (edit(PERCENTILE, ("1 - self.percentile / 100", "100 - self.percentile"),
                                                  ("values, self.percentile / 100", "values, self.percentile")),
                                             ("as a fraction", "p / 100")),
            "np.percentile given a fraction": (
                edit(PERCENTILE, ("torch.quantile(values, 1 - self.percentile / 100)", "np.percentile(values.numpy(), 1 - self.percentile / 100)"),
                     ("torch.quantile(values, self.percentile / 100)", "np.percentile(values.numpy(), self.percentile / 100)"),
                     (").item())\n        self.highs", "))\n        self.highs"), (").item())\n\n", "))\n\n")),
                ("np.percentile takes q in percent",)),
            "the last batch only": (edit(PERCENTILE, ("sum(self.lows) / len(self.lows), sum(self.highs) / len(self.highs)",
                                                      "self.lows[-1], self.highs[-1]")),
                                    ("last batch's percentiles only",)),
            "summed, not averaged": (edit(PERCENTILE, ("sum(self.lows) / len(self.lows), sum(self.highs) / len(self.highs)",
                                                       "sum(self.lows), sum(self.highs)")),
                                     ("sum of the batches' percentiles", "divide")),
            "the p-th percentile for both ends": (edit(PERCENTILE, ("1 - self.percentile / 100", "self.percentile / 100")),
                                                  ("lo is the 1st", "percentile")),
        },
        correct={
            "numpy percentiles, float64": edit(
                PERCENTILE, ("values = x.detach().flatten().float()", "values = x.detach().flatten().double().numpy()"),
                ("torch.quantile(values, 1 - self.percentile / 100).item()", "np.percentile(values, 100 - self.percentile)"),
                ("torch.quantile(values, self.percentile / 100).item()", "np.percentile(values, self.percentile)")),
            "nearest rank on a sorted list, statistics.mean": code("""
                class MyPercentileObserver:
                    def __init__(self, percentile=99.99):
                        self.percentile = percentile
                        self.lows, self.highs = [], []

                    def update(self, x):
                        values = sorted(x.flatten().tolist())
                        last = len(values) - 1
                        self.lows.append(values[round((100 - self.percentile) / 100 * last)])
                        self.highs.append(values[round(self.percentile / 100 * last)])

                    def compute(self, bits):
                        return asymmetric_qparams(statistics.mean(self.lows), statistics.mean(self.highs), bits)
            """),
            "kthvalue, tensors averaged with torch.stack": code("""
                class MyPercentileObserver:
                    def __init__(self, percentile=99.99):
                        self.percentile = percentile
                        self.lows, self.highs = [], []

                    def update(self, x):
                        v = x.flatten()
                        k_low = max(1, int(round((100 - self.percentile) / 100 * v.numel())))
                        k_high = max(1, int(round(self.percentile / 100 * v.numel())))
                        self.lows.append(v.kthvalue(k_low).values)
                        self.highs.append(v.kthvalue(k_high).values)

                    def compute(self, bits):
                        return asymmetric_qparams(torch.stack(self.lows).mean().item(), torch.stack(self.highs).mean().item(), bits)
            """),
        }),
]
