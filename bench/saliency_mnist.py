"""Benchmark: saliency of standard, SGT, PACT and SGT + PACT SmallCNNs on MNIST, measured in one run.

    python bench/saliency_mnist.py                 # budget from QSAL_BUDGET, default book (minutes on 2 cores)
    python bench/saliency_mnist.py --budget ci     # a fast smoke run: the numbers mean nothing

qsal_lab.experiments.saliency_sweep, the code chapter 7 runs, on the shipped models: a standard, a naive SGT and a
fused SGT training step timed side by side; then Standard, SGT, PACT and SGT + PACT W4A4 and W2A2: test accuracy,
faithfulness of gradient saliency and IG maps next to random removal, Gini index, agreement with the float model's maps.
"""
import sys

from qsal_lab.budget import pick
from qsal_lab.experiments import saliency_sweep as sweep
from qsal_lab.experiments.benchmark import Benchmark, Target, positive_int
from qsal_lab.experiments.pact_sweep import mnist_loaders
from qsal_lab.experiments.report import drop_pt, markdown_table
from qsal_lab.experiments.study import find_row

METHODS = ("saliency", "ig")
TARGETS = (
    Target("sgt_drop_pt", "SGT accuracy drop vs Standard", "≤", 0.5, reference="Standard"),
    Target("sgt_pact_w4a4_drop_pt", "SGT + PACT W4A4 accuracy drop vs SGT float", "≤", 0.5, reference="SGT float"),
    Target("sgt_pact_w2a2_drop_pt", "SGT + PACT W2A2 accuracy drop vs SGT float", "≤", 1.5, reference="SGT float"),
    Target("fused_step_ratio", "fused SGT step / standard step (CPU time)", "≤", 2.1, "×", digits=2),
    Target("sgt_minus_standard_area_saliency", "SGT area − Standard area, saliency (0-10 %)", "<", 0.0),
    Target("sgt_minus_standard_area_ig", "SGT area − Standard area, IG (0-10 %)", "<", 0.0),
)


def arguments(p):
    p.add_argument("--images", type=positive_int, help="test digits for the maps (default: by budget)")
    p.add_argument("--timing-batches", type=positive_int, help="batches per timed block (default: by budget)")
    p.add_argument("--timing-rounds", type=positive_int, help="timed blocks per step variant (default: by budget)")


def run(args) -> dict:
    budget, models = args.budget, sweep.load_shipped(bits=(4, 2))
    timing = sweep.sgt_cost(models["Standard"].model, budget,
                            args.timing_batches or pick(ci=2, book=20, full=40, budget=budget),
                            args.timing_rounds or pick(ci=1, book=3, full=5, budget=budget))
    test_loader, _ = mnist_loaders(budget)
    x, y = sweep.saliency_images(args.images or pick(ci=32, book=500, full=2000, budget=budget))
    return {"models": [m.source for m in models.values()], "sgt_command": models["SGT"].info["command"],
            "timing": timing, "test_images": len(test_loader.dataset), "map_images": len(x),
            "rows": sweep.saliency_rows(models, x, y, test_loader, methods=METHODS, progress=args.progress)}


def values(result) -> dict:
    rows = result["rows"]
    area = {(m, k): find_row(rows, m, method=k)["area"] for m in ("Standard", "SGT") for k in METHODS}
    return {"sgt_drop_pt": drop_pt(find_row(rows, "Standard").accuracy, find_row(rows, "SGT").accuracy),
            "sgt_pact_w4a4_drop_pt": find_row(rows, "SGT + PACT W4A4").drop_pt,
            "sgt_pact_w2a2_drop_pt": find_row(rows, "SGT + PACT W2A2").drop_pt,
            "fused_step_ratio": result["timing"]["fused_ratio"],
            **{f"sgt_minus_standard_area_{k}": area["SGT", k] - area["Standard", k] for k in METHODS}}


def why(key, result) -> str:
    if key.startswith("sgt_minus_standard_area"):
        method = key.rsplit("_", 1)[1]
        std, sgt = (find_row(result["rows"], m, method=method) for m in ("Standard", "SGT"))
        return (f"SGT's random-removal area is {sgt['random_area']:.3f} against Standard's {std['random_area']:.3f}: "
                f"the SGT model tolerates noise everywhere, so its raw area is higher; its gap to random removal is "
                f"{sgt['gap']:+.3f} against {std['gap']:+.3f} (0-10 %) and {sgt['gap_coarse']:+.3f} against "
                f"{std['gap_coarse']:+.3f} (0-90 %). The SGT model: `{result['sgt_command']}`.")
    if key == "fused_step_ratio":
        return ("the fused step also sorts every image's saliency, draws the noise, computes the KL and a first "
                "backward to the input; the ratio moves with the machine's load (recorded above).")
    return "the shipped model's recipe (its COMMAND) trades this much accuracy; see its metrics.json."


def report(result) -> str:
    rows, t = result["rows"], result["timing"]
    lines = ["Accuracy drop = the float model's accuracy minus this one's, in points (pt); positive = worse. "
             "Faithfulness area: accuracy as each image's most salient pixels are replaced by noise, normalised area "
             "under the curve; lower = more faithful; random − area: how much more salient removal hurts than random "
             "removal.", "", "## Every model", "", sweep.summary_table(rows), ""]
    for k in METHODS:
        lines += [f"### {k}, 0-10 % removed", "", sweep.format_table(rows, (k,)), "",
                  f"### {k}, 0-90 % removed (the SGT paper's grid)", "", sweep.format_table(rows, (k,), True), ""]
    return "\n".join(lines + [
        "## Training step cost", "", f"{t['batches']} batches of {t['batch_size']}, {t['rounds']} interleaved rounds "
        f"per step (median), {t['clock']}; load average {t['loadavg_1min_before']:.2f} before, "
        f"{t['loadavg_1min_after']:.2f} after:", "",
        markdown_table(["step", "CPU seconds per step", "× standard", "estimated CPU seconds per 60k-image epoch"],
                       [[k, f"{t[f'{k}_s']:.4f}", "1.00×" if k == "standard" else f"{t[f'{k}_ratio']:.2f}×",
                         f"{t[f'{k}_epoch_s_estimate']:.1f}"] for k in ("standard", "naive", "fused")])])


def preface(result) -> str:
    return (f"Models: the shipped checkpoints in `qsal_lab/pretrained/` ({', '.join(result['models'])}). Accuracy on "
            f"{result['test_images']:,} MNIST test images; maps on {result['map_images']} of them.")


BENCH = Benchmark(__file__, __doc__, TARGETS, run, values, report, arguments=arguments, why=why, preface=preface,
                  title="Saliency of SmallCNN on MNIST: standard, SGT, PACT and SGT + PACT")

if __name__ == "__main__":
    sys.exit(BENCH.main())
