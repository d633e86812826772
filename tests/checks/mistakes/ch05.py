"""Exercise 5 (saliency maps): the top-k IoU of two maps and the removal (faithfulness) curve."""
from . import Exercise, code, edit

CHECKS = "saliency_maps"
NOTEBOOK = "05_saliency_maps.ipynb"

IOU = code("""
def topk_iou(map_a, map_b, k):
    def top(maps):
        score = maps.abs().sum(1).flatten(1)
        count = max(1, round(k * score.shape[1]))
        return torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(count, dim=1).indices, True)

    a, b = top(map_a), top(map_b)
    return (a & b).sum(1) / (a | b).sum(1)
""")

CURVE = code("""
def removal_curve(model, x, y, maps, fractions, seed=0):
    score = maps.abs().sum(1).flatten(1)
    accuracy = []
    for p in fractions:
        k = round(p * x.shape[-2] * x.shape[-1])
        mask = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(k, dim=1).indices, True)
        x_removed = replace_pixels(x, mask, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            predicted = model(x_removed).argmax(1)
        accuracy.append((predicted == y).float().mean().item())
    return accuracy
""")


def iou_on_maps(fn, small_maps):
    from qsal_lab.checks.saliency_maps import check_topk_iou_on_maps

    return check_topk_iou_on_maps(fn, small_maps, k=0.1)


def curve_on_model(fn, small_classifier):
    from qsal_lab.checks.saliency_maps import check_removal_curve_on_model

    model, x, y, maps = small_classifier
    return check_removal_curve_on_model(fn, model, x, y, maps, [0, 0.05, 0.1, 0.2])


EXERCISES = [
    Exercise(
        5, NOTEBOOK, "topk_iou", "check_topk_iou", prose="IoU of the two maps' top-k pixels, per image",
        downstream="check_topk_iou_on_maps", fixtures=("small_maps",), run_downstream=iou_on_maps,
        mistakes={
            "the signed map ranked": (edit(IOU, ("maps.abs().sum(1)", "maps.sum(1)")), ("signed map", "map.abs()")),
            "the least salient pixels": (edit(IOU, ("score.topk(count, dim=1)", "score.topk(count, dim=1, largest=False)")),
                                         ("LEAST salient",)),
            "the magnitude of the channel sum": (edit(IOU, ("maps.abs().sum(1)", "maps.sum(1).abs()")), ("not the magnitude of their sum",)),
            "divided by k (Dice)": (edit(IOU, ("(a | b).sum(1)", "a.sum(1)")), ("IoU divides by the union",)),
            "every tied pixel kept": (
                edit(IOU, ("torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(count, dim=1).indices, True)",
                           "score >= score.topk(count, dim=1).values[:, -1:]")),
                ("tie at the k-th largest", "take exactly")),
            "int() for round()": (edit(IOU, ("max(1, round(k * score.shape[1]))", "max(1, int(k * score.shape[1]))")),
                                  ("int() truncates",)),
            "k as a count of pixels": (edit(IOU, ("max(1, round(k * score.shape[1]))", "k")), ("k is a fraction",)),
            "no minimum of one pixel": (edit(IOU, ("max(1, round(k * score.shape[1]))", "round(k * score.shape[1])")),
                                        ("0 / 0", "at least one")),
            "the whole batch ranked together": (
                edit(IOU, ("        return torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(count, dim=1).indices, True)",
                           "        flat = torch.zeros(score.numel(), dtype=torch.bool)\n"
                           "        flat[score.flatten().topk(count * len(score)).indices] = True\n"
                           "        return flat.view(score.shape)")),
                ("whole batch together",)),
            "one IoU for the batch": (edit(IOU, ("return (a & b).sum(1) / (a | b).sum(1)", "return (a & b).sum() / (a | b).sum()")),
                                      ("one per image",)),
        },
        correct={
            "Python sets, a loop over images": code("""
                def topk_iou(map_a, map_b, k):
                    out = []
                    for a, b in zip(map_a, map_b):
                        sa, sb = a.abs().sum(0).flatten().tolist(), b.abs().sum(0).flatten().tolist()
                        count = max(1, round(k * len(sa)))
                        top_a = set(sorted(range(len(sa)), key=lambda i: -sa[i])[:count])
                        top_b = set(sorted(range(len(sb)), key=lambda i: -sb[i])[:count])
                        out.append(len(top_a & top_b) / len(top_a | top_b))
                    return out
            """),
            "numpy argsort, float64": code("""
                def topk_iou(map_a, map_b, k):
                    a = np.abs(map_a.double().numpy()).sum(1).reshape(len(map_a), -1)
                    b = np.abs(map_b.double().numpy()).sum(1).reshape(len(map_b), -1)
                    count = max(1, round(k * a.shape[1]))
                    ta = np.zeros_like(a, dtype=bool)
                    tb = np.zeros_like(b, dtype=bool)
                    np.put_along_axis(ta, np.argsort(-a, axis=1, kind="stable")[:, :count], True, axis=1)
                    np.put_along_axis(tb, np.argsort(-b, axis=1, kind="stable")[:, :count], True, axis=1)
                    return (ta & tb).sum(1) / (ta | tb).sum(1)
            """),
            "argsort from the other end (another tie-break)": code("""
                def topk_iou(map_a, map_b, k):
                    def top(maps):
                        score = maps.abs().sum(1).flatten(1)
                        count = max(1, round(k * score.shape[1]))
                        order = score.argsort(dim=1).flip(1)[:, :count]
                        return torch.zeros_like(score).scatter_(1, order, 1.0)

                    a, b = top(map_a), top(map_b)
                    return (a * b).sum(1) / ((a + b) > 0).sum(1)
            """),
        }),
    Exercise(
        5, NOTEBOOK, "removal_curve", "check_removal_curve", prose="accuracy after replacing the most salient pixels",
        downstream="check_removal_curve_on_model", fixtures=("small_classifier",), run_downstream=curve_on_model,
        mistakes={
            "the least salient pixels": (edit(CURVE, ("score.topk(k, dim=1)", "score.topk(k, dim=1, largest=False)")),
                                         ("ranked ascending",)),
            "the signed map ranked": (edit(CURVE, ("maps.abs().sum(1)", "maps.sum(1)")), ("ranked the signed map",)),
            "one generator for the whole curve": (
                edit(CURVE, ("    accuracy = []\n", "    accuracy = []\n    generator = torch.Generator().manual_seed(seed)\n"),
                     ("torch.Generator().manual_seed(seed))", "generator)")),
                ("from one generator",)),
            "the seed ignored": (edit(CURVE, ("manual_seed(seed)", "manual_seed(0)")), ("drawn with seed 0",)),
            "a count of correct images": (edit(CURVE, ("(predicted == y).float().mean().item()", "(predicted == y).sum().item()")),
                                          ("number of correct images",)),
            "a percentage": (edit(CURVE, ("(predicted == y).float().mean().item()", "100 * (predicted == y).float().mean().item()")),
                             ("fractions in [0, 1]",)),
            "int() for round()": (edit(CURVE, ("k = round(p * x.shape[-2] * x.shape[-1])", "k = int(p * x.shape[-2] * x.shape[-1])")),
                                  ("int() truncates",)),
            "the whole batch ranked together": (
                edit(CURVE, ("        mask = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(k, dim=1).indices, True)\n",
                             "        mask = torch.zeros(score.numel(), dtype=torch.bool)\n"
                             "        mask[score.flatten().topk(k * len(x)).indices] = True\n"
                             "        mask = mask.view(score.shape)\n")),
                ("whole batch together",)),
            "every tied pixel removed": (
                edit(CURVE, ("torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(k, dim=1).indices, True)",
                             "score >= score.topk(max(k, 1), dim=1).values[:, -1:] if k else torch.zeros_like(score, dtype=torch.bool)")),
                ("tie at the k-th largest",)),
            "black instead of noise": (
                edit(CURVE, ("x_removed = replace_pixels(x, mask, torch.Generator().manual_seed(seed))",
                             "x_removed = x.masked_fill(mask.view(len(x), 1, *x.shape[-2:]), 0.0)")),
                ("holds the same value",)),
            "x edited in place": (
                edit(CURVE, ("x_removed = replace_pixels(x, mask, torch.Generator().manual_seed(seed))",
                             "x_removed = x\n        x[:] = replace_pixels(x, mask, torch.Generator().manual_seed(seed))")),
                ("changed x in place",)),
            "fraction 0 skipped": (
                edit(CURVE, ("    for p in fractions:\n", "    for p in fractions:\n        if p == 0:\n            accuracy.append(1.0)\n            continue\n")),
                ("call it once per fraction",)),
        },
        correct={
            "argsort, one image at a time into a mask": code("""
                def removal_curve(model, x, y, maps, fractions, seed=0):
                    n, _, h, w = x.shape
                    score = maps.abs().sum(dim=1).reshape(n, h * w)
                    order = score.argsort(dim=1, descending=True)
                    curve = []
                    for p in fractions:
                        k = round(p * h * w)
                        mask = torch.zeros(n, 1, h, w, dtype=torch.bool)
                        for i in range(n):
                            mask.view(n, -1)[i, order[i, :k]] = True
                        removed = replace_pixels(x, mask, torch.Generator().manual_seed(seed))
                        with torch.no_grad():
                            curve.append(float((model(removed).argmax(dim=1) == y).double().mean()))
                    return curve
            """),
            "numpy ranking, a tensor of accuracies": code("""
                def removal_curve(model, x, y, maps, fractions, seed=0):
                    score = np.abs(maps.numpy()).sum(1).reshape(len(x), -1)
                    ranks = np.argsort(-score, axis=1, kind="stable")
                    out = []
                    for p in fractions:
                        k = int(np.rint(p * score.shape[1]))
                        mask = np.zeros(score.shape, dtype=bool)
                        np.put_along_axis(mask, ranks[:, :k], True, axis=1)
                        removed = replace_pixels(x, torch.from_numpy(mask), torch.Generator().manual_seed(seed))
                        with torch.no_grad():
                            out.append((model(removed).argmax(1) == y).sum() / len(y))
                    return torch.stack(out)
            """),
        }),
]
