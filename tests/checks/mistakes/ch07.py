"""Exercise 7 (quantized and interpretable): Spearman's rank agreement of two maps."""
from . import Exercise, code, edit

CHECKS = "quantized_saliency"
NOTEBOOK = "07_quantized_interpretable.ipynb"

RANKS = code("""
def rank_agreement(map_a, map_b):
    a = map_a.abs().sum(1).flatten(1).double().numpy()
    b = map_b.abs().sum(1).flatten(1).double().numpy()
    result = []
    for u, v in zip(a, b):
        ru, rv = rankdata(u), rankdata(v)
        ru, rv = ru - ru.mean(), rv - rv.mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            result.append((ru * rv).sum() / ((ru ** 2).sum() * (rv ** 2).sum()) ** 0.5)
    return result
""")


def by_bits(fn, maps_by_bits):
    from qsal_lab.checks.quantized_saliency import check_agreement_by_bits

    return check_agreement_by_bits(fn, maps_by_bits, threshold=0.5)


EXERCISES = [
    Exercise(
        7, NOTEBOOK, "rank_agreement", "check_rank_agreement", prose="Spearman correlation of two maps, per image",
        downstream="check_agreement_by_bits", fixtures=("maps_by_bits",), run_downstream=by_bits,
        mistakes={
            "the values correlated, not their ranks": (edit(RANKS, ("rankdata(u), rankdata(v)", "u, v")),
                                                       ("Pearson correlation of the values",)),
            "argsort for ranks": (edit(RANKS, ("rankdata(u), rankdata(v)", "np.argsort(u).astype(float), np.argsort(v).astype(float)")),
                                  ("argsort gives positions, not ranks",)),
            "ties broken by position (argsort of argsort)": (
                edit(RANKS, ("rankdata(u), rankdata(v)", "np.argsort(np.argsort(u, kind='stable')).astype(float), "
                                                         "np.argsort(np.argsort(v, kind='stable')).astype(float)")),
                ("share their average rank",)),
            "the signed maps ranked": (edit(RANKS, ("map_a.abs().sum(1)", "map_a.sum(1)"), ("map_b.abs().sum(1)", "map_b.sum(1)")),
                                       ("ranked the signed maps",)),
            "the magnitude of the channel sum": (edit(RANKS, ("map_a.abs().sum(1)", "map_a.sum(1).abs()"), ("map_b.abs().sum(1)", "map_b.sum(1).abs()")),
                                    ("not the magnitude of their sum",)),
            "0 for a map zero everywhere": (edit(RANKS, ("    return result", "    return np.nan_to_num(result)")),
                                            ("zero everywhere", "nan")),
            "the textbook formula 1 - 6 sum d^2 / (n (n^2 - 1))": (
                edit(RANKS, ("        ru, rv = ru - ru.mean(), rv - rv.mean()\n", ""),
                     ("result.append((ru * rv).sum() / ((ru ** 2).sum() * (rv ** 2).sum()) ** 0.5)",
                      "result.append(1 - 6 * ((ru - rv) ** 2).sum() / (len(u) * (len(u) ** 2 - 1)))")),
                ("textbook formula", "no two scores tie")),
            "one correlation for the whole batch": (
                code("""
                    def rank_agreement(map_a, map_b):
                        a = rankdata(map_a.abs().sum(1).flatten().numpy())
                        b = rankdata(map_b.abs().sum(1).flatten().numpy())
                        return float(np.corrcoef(a, b)[0, 1])
                """), ("one number for", "each image")),
        },
        correct={
            "scipy.stats.spearmanr per image": code("""
                import warnings
                from scipy.stats import spearmanr

                def rank_agreement(map_a, map_b):
                    out = []
                    for a, b in zip(map_a, map_b):
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            out.append(spearmanr(a.abs().sum(0).flatten().numpy(), b.abs().sum(0).flatten().numpy()).statistic)
                    return out
            """),
            "average ranks in torch, float32": code("""
                def rank_agreement(map_a, map_b):
                    def ranks(s):
                        r = torch.empty_like(s)
                        r[s.argsort()] = torch.arange(1, len(s) + 1, dtype=s.dtype)
                        for value in s.unique():
                            tied = s == value
                            r[tied] = r[tied].mean()
                        return r
                    out = []
                    for a, b in zip(map_a.abs().sum(1).flatten(1), map_b.abs().sum(1).flatten(1)):
                        ra, rb = ranks(a), ranks(b)
                        ra, rb = ra - ra.mean(), rb - rb.mean()
                        out.append((ra * rb).sum() / (ra.norm() * rb.norm()))
                    return torch.stack(out)
            """),
            "rankdata on all rows at once, np.corrcoef": code("""
                def rank_agreement(map_a, map_b):
                    ra = rankdata(map_a.abs().sum(1).flatten(1).numpy(), axis=1)
                    rb = rankdata(map_b.abs().sum(1).flatten(1).numpy(), axis=1)
                    out = np.full(len(ra), np.nan)
                    for i in range(len(ra)):
                        if ra[i].std() > 0 and rb[i].std() > 0:
                            out[i] = np.corrcoef(ra[i], rb[i])[0, 1]
                    return out
            """),
        }),
]
