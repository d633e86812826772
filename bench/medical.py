"""Benchmark: the MedMNIST study on PneumoniaMNIST in one run, every row against its target.

    python bench/medical.py                   # book budget: the shipped float model, one seed (minutes on 2 cores)
    python bench/medical.py --budget full     # float models trained in the run, 3 seeds: mean and std
    python bench/medical.py --budget ci       # a fast smoke run: the numbers mean nothing

qsal_lab.experiments.medical.run_study, the code chapter 9 runs: the float ResNet-18, PTQ int8, PACT W8A8 and W4A4,
SGT + PACT W4A4 in ONNX Runtime, each scored on the test split at a threshold chosen on the validation split, with
bootstrap 95 % intervals. MedMNIST v2's ResNet-18 (28) row is the floor, not the goal.
"""
import sys
from pathlib import Path

from qsal_lab.experiments import medical
from qsal_lab.experiments.benchmark import Benchmark, Target, existing_path
from qsal_lab.pretrained import pretrained_dir

FLAG = "pneumoniamnist"
FLOOR = {"auc": 0.944, "acc": 0.854, "source": "MedMNIST v2, ResNet-18 (28), PneumoniaMNIST test (Yang et al. 2023)"}
DROPS = {"ptq_int8_auc_drop": "PTQ int8", "pact_w4a4_auc_drop": "PACT W4A4",
         "sgt_pact_w4a4_auc_drop": "SGT + PACT W4A4"}
TARGETS = (
    Target("float_auc", "float AUC (test)", "≥", 0.97, digits=4),
    Target("float_accuracy", "float accuracy at the validation-chosen threshold (test)", "≥", 0.89, digits=4),
    Target("ptq_int8_auc_drop", "PTQ int8 (ORT) AUC drop vs float", "≤", 0.003, digits=4),
    Target("pact_w4a4_auc_drop", "PACT W4A4 AUC drop vs float", "≤", 0.01, digits=4),
    Target("sgt_pact_w4a4_auc_drop", "SGT + PACT W4A4 AUC drop vs float", "≤", 0.015, digits=4),
    Target("int8_size_ratio", "int8 ONNX file / fp32 ONNX file", "≤", 0.26, "×"),
    Target("int8_latency_ratio", "int8 / fp32 latency in ONNX Runtime (batch 1, 1 thread)", "≤", 0.4, "×"),
)


def arguments(p):
    p.add_argument("--float-checkpoint", type=existing_path("omit it to use the default"),
                   help="use this float checkpoint (default at book: the shipped model; at ci and full it is trained)")
    p.add_argument("--train-float", action="store_true", help="train the float model in the run at the book budget too")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the budget's; full: 0 1 2)")


def run(args) -> dict:
    source = args.float_checkpoint or (pretrained_dir(medical.PRETRAINED) / "checkpoint.pt"
                                       if args.budget == "book" and not args.train_float else None)
    seeds = tuple(args.seeds or medical.medical_recipe(args.budget).seeds)
    studies = [medical.run_study(FLAG, out=args.work_dir, budget=args.budget, float_checkpoint=source, seed=seed,
                                 progress=args.progress) for seed in seeds]
    figures = [medical.plot_pareto(studies[0]["rows"], title=f"PneumoniaMNIST test, seed {seeds[0]} ({args.budget})"),
               medical.plot_reliability_diagrams(studies[0]["rows"])]
    paths = [args.results / f"medical_{kind}.png" for kind in ("pareto", "reliability")]
    args.results.mkdir(parents=True, exist_ok=True)
    for fig, path in zip(figures, paths):
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return {"flag": FLAG, "seeds": list(seeds), "floor": FLOOR, "studies": studies, "figures": [str(p) for p in paths],
            "aggregate": medical.aggregate(studies), "float_source": f"loaded from {source}" if source else
            f"trained in this run ({args.budget} recipe, both imbalance candidates)"}


def values(result) -> dict:
    mean = len(result["studies"]) > 1  # several seeds: the targets are about their means
    rows = result["aggregate"] if mean else result["studies"][0]["rows"]
    by = {r["model"]: r for r in rows}
    get = lambda model, key: by.get(model, {}).get(f"{key}_mean" if mean else key)  # noqa: E731
    ratio = lambda key: get("PTQ int8", key) / get("FP32", key) if get("PTQ int8", key) and get("FP32", key) else None  # noqa: E731
    return {"float_auc": get("FP32", "auc"), "float_accuracy": get("FP32", "accuracy"),
            **{key: get(model, "auc_drop") for key, model in DROPS.items()},
            "int8_size_ratio": ratio("file_bytes"), "int8_latency_ratio": ratio("latency_ms")}


def why(key, result) -> str:
    by = {r.model: r for r in result["studies"][0]["rows"]}
    fp, int8 = by["FP32"], by.get("PTQ int8")
    if key in ("float_auc", "float_accuracy"):
        val, negatives = fp.clinical["val"], lambda cm: sum(cm[0]) / sum(map(sum, cm))
        return (f"at the threshold {fp['threshold']:.3f} chosen on validation (sensitivity {val['sensitivity']:.3f}, "
                f"specificity {val['specificity']:.3f} there), test sensitivity is {fp['sensitivity']:.3f} and "
                f"specificity {fp['specificity']:.3f}; normal images are {negatives(val['confusion']):.1%} of "
                f"validation and {negatives(fp.clinical['confusion']):.1%} of test (MedMNIST's validation split comes "
                "from the source's training set, its test split is the source's test set)")
    if key in DROPS:
        r = by[DROPS[key]]
        if "skipped" in r:
            return f"not run: {r['skipped']}"
        step = r.get("step")
        trained = f"; {step['epochs']} epoch(s) on {step['train_subset'] or 'all'} training images" if step else ""
        return f"AUC {r['auc']:.4f} vs float {fp['auc']:.4f}{trained}"
    if key == "int8_latency_ratio":
        return (f"fp32 {fp.latency_ms:.2f} ms, int8 {int8.latency_ms:.2f} ms; ONNX Runtime runs "
                f"{int8['ort_ops']['integer']} on integers and {int8['ort_ops']['float32']} in float32")
    return "weights are int8, but scales, zero points and biases (int32) stay"


def preface(result) -> str:
    s0 = result["studies"][0]
    fp = s0["rows"][0]
    return (f"Float model: {result['float_source']}; class imbalance handled by **{s0['selection']['chosen']}** "
            f"({s0['selection']['criterion']}). Thresholds: {fp.get('threshold_method', '?')} on the validation split "
            f"(n = {fp.get('val_n', '?')}); metrics on the test split (n = {fp.get('test_n', '?')}), 95 % stratified "
            f"bootstrap intervals ({s0['recipe']['n_boot']} resamples). Seeds: {result['seeds']}.\n\n"
            f"Floor, not goal: {FLOOR['source']}: AUC {FLOOR['auc']}, ACC {FLOOR['acc']}.")


def report(result) -> str:
    lines = []
    if len(result["studies"]) > 1:
        lines += [f"## Mean ± standard deviation over {len(result['studies'])} seeds", "",
                  medical.format_aggregate(result["aggregate"]), ""]
    for s in result["studies"]:
        lines += [f"## Seed {s['seed']}", "", medical.format_table(s["rows"]), ""]
    return "\n".join(lines + ["Figures: " + ", ".join(f"`{Path(f).name}`" for f in result["figures"])])


BENCH = Benchmark(__file__, __doc__, TARGETS, run, values, report, arguments=arguments, why=why, preface=preface,
                  title="MedMNIST study on PneumoniaMNIST: benchmark")

if __name__ == "__main__":
    sys.exit(BENCH.main())
