"""Exercise 6 (saliency-guided training): the masking step."""
from . import Exercise, code, edit

CHECKS = "sgt"
NOTEBOOK = "06_saliency_guided_training.ipynb"

MASK = code("""
def sgt_mask(x, saliency, fraction, generator=None):
    n, _, h, w = x.shape
    score = saliency.abs().sum(1).flatten(1)
    k = round(fraction * h * w)
    lowest = score.topk(k, dim=1, largest=False).indices
    mask = torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, lowest, True).view(n, 1, h, w)
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    noise = low + (high - low) * torch.rand(x.shape, generator=generator)
    return torch.where(mask, noise, x), mask
""")


def on_models(fn, small_classifier):
    from qsal_lab.checks.sgt import check_sgt_mask_on_models

    model, x, y, _ = small_classifier
    return check_sgt_mask_on_models(fn, {"tiny": model}, x, y, fraction=0.5)


EXERCISES = [
    Exercise(
        6, NOTEBOOK, "sgt_mask", "check_sgt_mask", prose="replace the least salient pixels by noise",
        downstream="check_sgt_mask_on_models", fixtures=("small_classifier",), run_downstream=on_models,
        mistakes={
            "the most salient pixels": (edit(MASK, ("largest=False", "largest=True")), ("MOST salient",)),
            "the signed saliency ranked": (edit(MASK, ("saliency.abs().sum(1)", "saliency.sum(1)")),
                                           ("ranked the signed saliency",)),
            "the magnitude of the channel sum": (edit(MASK, ("saliency.abs().sum(1)", "saliency.sum(1).abs()")),
                                    ("not the magnitude of their sum",)),
            "int() for round()": (edit(MASK, ("k = round(fraction * h * w)", "k = int(fraction * h * w)")), ("int() truncates",)),
            "fraction as a count": (edit(MASK, ("score.topk(k,", "score.topk(fraction,")), ("fraction is a share",)),
            "every tied pixel masked": (
                edit(MASK, ("    mask = torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, lowest, True).view(n, 1, h, w)",
                            "    mask = (score <= score.sort(dim=1).values[:, k - 1:k]).view(n, 1, h, w)")),
                ("tie at the k-th smallest", "take exactly k")),
            "the whole batch ranked together": (
                edit(MASK, ("    lowest = score.topk(k, dim=1, largest=False).indices\n"
                            "    mask = torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, lowest, True).view(n, 1, h, w)",
                            "    mask = torch.zeros(n * h * w, dtype=torch.bool)\n"
                            "    mask[score.flatten().topk(k * n, largest=False).indices] = True\n"
                            "    mask = mask.view(n, 1, h, w)")),
                ("whole batch together",)),
            "black (the minimum) instead of noise": (edit(MASK, ("low + (high - low) * torch.rand(x.shape, generator=generator)",
                                                                  "low.expand_as(x)")),
                                                     ("still hold their original value",)),
            "a constant grey": (edit(MASK, ("low + (high - low) * torch.rand(x.shape, generator=generator)",
                                            "((low + high) / 2).expand_as(x)")),
                                ("constant fill",)),
            "the whole batch's range": (edit(MASK, ("x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)",
                                                    "x.amin(), x.amax()")),
                                        ("not of the whole batch",)),
            "Gaussian noise": (edit(MASK, ("low + (high - low) * torch.rand(x.shape, generator=generator)",
                                           "(low + high) / 2 + (high - low) / 6 * torch.randn(x.shape, generator=generator)")),
                               ("uniformly",)),
            "the generator ignored": (edit(MASK, ("torch.rand(x.shape, generator=generator)", "torch.rand_like(x)")),
                                      ("does not come from the `generator`",)),
            "x changed in place": (edit(MASK, ("    return torch.where(mask, noise, x), mask",
                                                "    x[mask.expand_as(x)] = noise[mask.expand_as(x)]\n    return x, mask")),
                                   ("changed x itself",)),
            "one mask entry per channel": (edit(MASK, ("    return torch.where(mask, noise, x), mask",
                                                        "    return torch.where(mask, noise, x), mask.expand_as(x).clone()")),
                                           ("one entry per channel",)),
        },
        correct={
            "argsort, a mask of shape (N, H, W)": code("""
                def sgt_mask(x, saliency, fraction, generator=None):
                    n, _, h, w = x.shape
                    s = saliency.abs().sum(1).flatten(1)
                    order = s.argsort(dim=1, descending=True).flip(1)[:, :round(fraction * h * w)]
                    mask = torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, order, True).view(n, h, w)
                    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
                    noise = low + (high - low) * torch.rand(x.shape, generator=generator)
                    return torch.where(mask[:, None], noise, x), mask
            """),
            "a loop over images and channels, on a clone": code("""
                def sgt_mask(x, saliency, fraction, generator=None):
                    n, c, h, w = x.shape
                    out = x.clone()
                    noise = torch.rand(x.shape, generator=generator)
                    mask = torch.zeros(n, 1, h, w, dtype=torch.bool)
                    for i in range(n):
                        score = saliency[i].abs().sum(0).flatten()
                        chosen = torch.sort(score, stable=True).indices[:round(fraction * h * w)]
                        mask[i, 0].view(-1)[chosen] = True
                        for ch in range(c):
                            lo, hi = x[i, ch].min(), x[i, ch].max()
                            out[i, ch][mask[i, 0]] = (lo + (hi - lo) * noise[i, ch])[mask[i, 0]]
                    return out, mask
            """),
        }),
]
