"""Exercise 11 (Raspberry Pi): do the device's predictions agree with the reference machine's?"""
from . import Exercise, code, edit

CHECKS = "edge_benchmarking"
NOTEBOOK = "11_raspberry_pi.ipynb"

AGREEMENT = code("""
def agreement(reference, device):
    ref = {p["input"]: p for p in reference["predictions"]}
    dev = {p["input"]: p for p in device["predictions"]}
    names = sorted(ref.keys() & dev.keys())
    different = [n for n in names if ref[n]["class"] != dev[n]["class"]]
    diff = max(float(np.max(np.abs(np.subtract(dev[n]["logits"], ref[n]["logits"])))) for n in names)
    return {"inputs": len(names), "same_class": len(names) - len(different), "different": different,
            "max_abs_logit_diff": diff}
""")

EXERCISES = [
    Exercise(
        11, NOTEBOOK, "agreement", "check_agreement", prose="same classes and the largest logit difference, matched by name",
        mistakes={
            "matched by position": (
                code("""
                    def agreement(reference, device):
                        pairs = list(zip(reference["predictions"], device["predictions"]))
                        different = sorted(r["input"] for r, d in pairs if r["class"] != d["class"])
                        diff = max(float(np.max(np.abs(np.subtract(d["logits"], r["logits"])))) for r, d in pairs)
                        return {"inputs": len(pairs), "same_class": len(pairs) - len(different), "different": different,
                                "max_abs_logit_diff": diff}
                """), ("by their \"input\" name, not by position",)),
            "the union of the inputs": (edit(AGREEMENT, ("names = sorted(ref.keys() & dev.keys())", "names = sorted(ref.keys() | dev.keys())"),
                                              ("different = [n for n in names if", "different = [n for n in names if n in ref and n in dev and"),
                                              ("for n in names)", "for n in names if n in ref and n in dev)")),
                                        ("is the union", "intersection")),
            "the reference's inputs looked up on the device": (
                edit(AGREEMENT, ("names = sorted(ref.keys() & dev.keys())", "names = sorted(ref)")),
                ("KeyError", "missing from the other", "present in both")),
            "unsorted list of differences": (edit(AGREEMENT, ("names = sorted(ref.keys() & dev.keys())",
                                                              "names = [n for n in ref if n in dev]")),
                                             ("sorted",)),
            "the signed difference": (edit(AGREEMENT, ("np.max(np.abs(np.subtract(dev[n][\"logits\"], ref[n][\"logits\"])))",
                                                       "np.max(np.subtract(dev[n][\"logits\"], ref[n][\"logits\"]))")),
                                      ("SIGNED difference", "absolute value before the maximum")),
            "the mean for the max": (
                edit(AGREEMENT, ("diff = max(float(np.max(np.abs(np.subtract(dev[n][\"logits\"], ref[n][\"logits\"])))) for n in names)",
                                 "diff = float(np.mean([np.abs(np.subtract(dev[n][\"logits\"], ref[n][\"logits\"])) for n in names]))")),
                ("MEAN of |device - reference|", "maximum")),
            "the top logits only": (
                edit(AGREEMENT, ("np.max(np.abs(np.subtract(dev[n][\"logits\"], ref[n][\"logits\"])))",
                                 "abs(max(dev[n][\"logits\"]) - max(ref[n][\"logits\"]))")),
                ("only the top logits", "every class")),
            "the top class's logit only": (
                edit(AGREEMENT, ("np.max(np.abs(np.subtract(dev[n][\"logits\"], ref[n][\"logits\"])))",
                                 "abs(dev[n][\"logits\"][ref[n][\"class\"]] - ref[n][\"logits\"][ref[n][\"class\"]])")),
                ("top class only", "every class")),
            "same_class counted over all the reference's inputs": (
                edit(AGREEMENT, ('"same_class": len(names) - len(different)', '"same_class": len(ref) - len(different)')),
                ("same_class is 7",)),
        },
        correct={
            "loops over the lists, no dicts": code("""
                def agreement(reference, device):
                    on_device = {}
                    for p in device["predictions"]:
                        on_device[p["input"]] = p
                    inputs, same, different, largest = 0, 0, [], 0.0
                    for r in reference["predictions"]:
                        d = on_device.get(r["input"])
                        if d is None:
                            continue
                        inputs += 1
                        if r["class"] == d["class"]:
                            same += 1
                        else:
                            different.append(r["input"])
                        for a, b in zip(r["logits"], d["logits"]):
                            largest = max(largest, abs(a - b))
                    return {"inputs": inputs, "same_class": same, "different": sorted(different), "max_abs_logit_diff": largest}
            """),
            "torch, float32 logits": code("""
                def agreement(reference, device):
                    ref = {p["input"]: p for p in reference["predictions"]}
                    dev = {p["input"]: p for p in device["predictions"]}
                    names = sorted(set(ref).intersection(dev))
                    a = torch.tensor([ref[n]["logits"] for n in names], dtype=torch.float32)
                    b = torch.tensor([dev[n]["logits"] for n in names], dtype=torch.float32)
                    same = [ref[n]["class"] == dev[n]["class"] for n in names]
                    return {"inputs": len(names), "same_class": sum(same),
                            "different": [n for n, s in zip(names, same) if not s],
                            "max_abs_logit_diff": (a - b).abs().max()}
            """),
        }),
]
