"""`qsal`: the command line. Every subcommand has --help; errors are one line and exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def cmd_data(args):
    from .data import STANDIN_VERSION, available_datasets, check_files, default_root

    root = Path(args.root) if args.root else default_root()
    if args.download:
        # Before a workshop without network: fetch every split through the official loaders (MD5-checked),
        # then copy the folder to the learners' machines and point QSAL_DATA at it.
        from .data import dataset_info, load_dataset

        for name in args.download:
            for split in dataset_info(name).splits:
                load_dataset(name, split, root=root, download=True, standin=False)
                print(f"  {name} {split}: ready under {root}")
    print(f"data root: {root}" + ("" if args.root or os.environ.get("QSAL_DATA") else " (set QSAL_DATA to change)"))
    for name in available_datasets():
        status = check_files(name, root)
        states = set(status.values())
        if states == {"ok"}:
            verdict = "present, checksums match"
        elif states == {"missing"}:
            verdict = "missing (downloaded on first use)"
        elif any(s.startswith("corrupt") for s in states):
            verdict = "CORRUPT: " + ", ".join(f"{k} {v}" for k, v in status.items() if v.startswith("corrupt"))
        else:
            verdict = "incomplete: missing " + ", ".join(k for k, v in status.items() if v == "missing")
        print(f"  {name:15s} {verdict}")
    print(f"  {'cifar10-standin':15s} synthetic stand-in {STANDIN_VERSION}, made when asked for (QSAL_STANDIN=1); "
          f"never real CIFAR-10")


PACT_TRAINING_FLAGS = ("pact_alpha", "alpha_l2", "alpha_lr_scale")  # QATConfig fields; None = its default
SGT_FLAGS = ("mask_fraction", "sgt_lambda", "sgt_signed", "sgt_no_detach")  # SGTConfig fields; None/False = defaults
TRAIN_METHODS = ("fp", "pact", "sgt", "pact+sgt")


def _quant_config(args):
    if "pact" not in args.method:
        for flag in ("w_bits", "a_bits", *PACT_TRAINING_FLAGS):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} needs --method pact (or pact+sgt)")
        return None
    from .quant import QATConfig

    extra = {k: getattr(args, k) for k in PACT_TRAINING_FLAGS if getattr(args, k) is not None}
    return QATConfig(w_bits=args.w_bits or 4, a_bits=args.a_bits or 4, first_last_bits=args.first_last_bits,
                     weight_quant=args.weight_quant, **extra)


def _sgt_config(args):
    if "sgt" not in args.method:
        for flag in SGT_FLAGS:
            if getattr(args, flag) not in (None, False):
                raise ValueError(f"--{flag.replace('_', '-')} needs --method sgt (or pact+sgt)")
        return None
    from .saliency import SGTConfig, default_fraction

    fraction = args.mask_fraction if args.mask_fraction is not None else default_fraction(args.dataset)
    return SGTConfig(fraction=fraction, lam=args.sgt_lambda if args.sgt_lambda is not None else 1.0,
                     abs=not args.sgt_signed, detach_target=not args.sgt_no_detach)


def cmd_train(args):
    from .train import train_model

    quant, sgt = _quant_config(args), _sgt_config(args)
    dataset = args.dataset
    if args.size is not None:  # MedMNIST's larger images: 'pathmnist' at 64 is 'pathmnist_64'
        from .data import dataset_info
        dataset = dataset_info(dataset, args.size).name
    augment = {"none": False, None: None}.get(args.augment, args.augment)
    model, history = train_model(dataset, args.model, budget=args.budget, out=args.out, quant=quant, sgt=sgt,
                                 init_from=args.init_from, epochs=args.epochs, lr=args.lr,
                                 batch_size=args.batch_size, train_subset=args.train_subset,
                                 test_subset=args.test_subset, seed=args.seed, device=args.device,
                                 resume=not args.restart, width=args.width, imbalance=args.imbalance,
                                 augment=augment, holdout=args.holdout)
    final = history.final
    shown = {k: round(v, 4) for k, v in final.items() if k.startswith("test_") and isinstance(v, float)}
    print(f"wrote {Path(args.out) / 'checkpoint.pt'} and {Path(args.out) / 'metrics.json'}: {shown}")


def _eval_data(args, ckpt):
    from .budget import current_budget, recipe
    from .data import load_dataset, make_loader

    spec = ckpt["model_spec"]
    dataset = args.dataset or spec.get("dataset")
    if not dataset:
        raise ValueError(f"{args.checkpoint} does not record its dataset; pass --dataset")
    subset = args.subset if args.subset else recipe(spec["model"], current_budget(args.budget)).test_subset
    ds = load_dataset(dataset, args.split, subset=subset)
    return ds, make_loader(ds, batch_size=256)


def _has_validation(args, ckpt) -> bool:
    from .data import dataset_info

    dataset = args.dataset or ckpt["model_spec"].get("dataset")
    return bool(dataset) and "val" in dataset_info(dataset).splits


def cmd_eval(args):
    from .train import evaluate, load_checkpoint

    if args.target_sensitivity is not None and args.threshold != "sensitivity":
        raise ValueError("--target-sensitivity needs --threshold sensitivity")
    model, ckpt = load_checkpoint(args.checkpoint)
    if args.split == "test" and _has_validation(args, ckpt):
        return _clinical_eval(args, ckpt)
    ds, loader = _eval_data(args, ckpt)
    metrics = evaluate(model, loader, device=args.device)
    # the data actually evaluated on names the result (the stand-in's name and version when it stood in)
    metrics.update(dataset=ds.name, dataset_key=ds.info.name, standin=ds.info.standin, split=args.split,
                   checkpoint=str(args.checkpoint))
    if args.json:
        print(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            print(f"{k:12s} {v:.4f}" if isinstance(v, float) else f"{k:12s} {v}")


def _clinical_eval(args, ckpt):
    """MedMNIST: test metrics at the threshold chosen on the validation split, with bootstrap CIs."""
    from .budget import current_budget, recipe
    from .experiments.medical import evaluate_checkpoint

    subset = args.subset if args.subset else recipe(ckpt["model_spec"]["model"], current_budget(args.budget)).test_subset
    r = evaluate_checkpoint(args.checkpoint, args.dataset, threshold_method=args.threshold,
                            target_sensitivity=args.target_sensitivity or 0.95, test_subset=subset,
                            n_boot=args.n_boot, seed=args.seed)
    op = r["operating_point"]
    names = ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy", "ppv", "npv")
    result = {"dataset": r["dataset"], "split": "test", "checkpoint": str(args.checkpoint), "n": r["test_n"],
              "val_n": r["val_n"], "task": r["task"], "threshold": op["threshold"], "threshold_method": op["method"],
              "threshold_chosen_on": "val", "threshold_rule": op["description"],
              "target_sensitivity": op.get("target_sensitivity"),
              **{k: r[k] for k in names if k in r}, "ci": r["ci"], "ci_level": r["ci_level"], "n_boot": r["n_boot"],
              "ece": r["ece"], "ece_bins": r["calibration"]["n_bins"], "confusion": r.get("confusion"),
              "medmnist": r["medmnist"]}
    if args.json:
        print(json.dumps(_finite(result)))
        return
    print(f"{r['dataset']} test split (n={r['test_n']}), {args.checkpoint}")
    print(f"decision: {op['description']}")
    for k in names:
        if k in r and r[k] is not None:
            low, high = r["ci"].get(k, (None, None))
            ci = f"  [{low:.4f}, {high:.4f}] ({100 * r['ci_level']:.0f}% bootstrap CI)" if low is not None else ""
            print(f"  {k:18s} {r[k]:.4f}{ci}")
    print(f"  {'ECE':18s} {r['ece']:.4f} ({r['calibration']['n_bins']} bins)")
    if r.get("confusion") is not None:
        print(f"  confusion [true][predicted]: {r['confusion']}")
    print(f"  MedMNIST's own AUC / ACC: {r['medmnist']['auc']:.4f} / {r['medmnist']['acc']:.4f}")


def _finite(value):
    """JSON has no NaN: undefined ratios (e.g. PPV with nothing flagged) become null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def cmd_saliency(args):
    import torch

    from .data import dataset_info, load_dataset
    from .files import atomic_write
    from .saliency import GRADIENT_METHODS, PERTURBATION_METHODS, saliency_grid, summarize
    from .saliency.attribution import check_method
    from .saliency.metrics import check_fractions

    if bool(args.checkpoint) == bool(args.onnx):
        raise ValueError("give exactly one model: --checkpoint C (a qsal checkpoint) or --onnx M (an .onnx file)")
    if args.images < 1:
        raise ValueError(f"--images must be a positive number of test images, got {args.images}")
    method = args.method or ("saliency" if args.checkpoint else "occlusion")
    check_method(method)
    if args.onnx and method in GRADIENT_METHODS:
        raise ValueError(f"--method {method} needs gradients, which an ONNX model does not have; use --method "
                         f"{' or '.join(PERTURBATION_METHODS)} with --onnx, or --checkpoint for the torch model")
    fractions = check_fractions(_floats(args.fractions, "--fractions"))
    if args.checkpoint:
        from .train import load_checkpoint

        model, ckpt = load_checkpoint(args.checkpoint)
        dataset, source = args.dataset or ckpt["model_spec"].get("dataset"), args.checkpoint
    else:
        from .quant.int8 import OnnxClassifier

        model = OnnxClassifier(args.onnx)
        dataset, source = args.dataset or model.metadata.get("dataset"), args.onnx
    if not dataset:
        raise ValueError(f"{source} does not record its dataset; pass --dataset")
    ds = load_dataset(dataset, "test", subset=args.images, seed=args.seed)
    x, y = (torch.stack(t) for t in zip(*(ds[i] for i in range(len(ds)))))
    options = {"dataset": dataset} if method in ("ig", "occlusion") else {}  # the exact normalised black
    maps, summary = summarize(model, x, y, method, fractions=fractions, seed=args.seed, **options)
    shown = min(len(x), 8)
    names = dataset_info(dataset).class_names
    fig = saliency_grid(x[:shown], {method: maps[:shown]}, row_titles=[names[int(c)] for c in y[:shown]])
    out = Path(args.out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=120,
                                              bbox_inches="tight"), suffix=out.suffix or ".png")
    summary.update(model=str(source), dataset=dataset, figure=str(out))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{method} on {len(x)} {dataset} test images ({1000 * summary['seconds_per_image']:.1f} ms each): "
              f"accuracy {summary['accuracy']:.4f}, faithfulness area {summary['faithfulness_area']:.3f} "
              f"(random {summary['random_area']:.3f}; lower = more faithful), Gini {summary['gini']:.3f}; "
              f"wrote {out}")


def _floats(text, flag):
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes numbers separated by commas, e.g. 0,0.1,0.2; got {text!r}") from None


def _onnx_metadata(spec):
    """What an .onnx file should remember of its checkpoint (`qsal saliency --onnx` reads the dataset)."""
    return {k: spec[k] for k in ("dataset", "model") if spec.get(k)}


def cmd_export(args):
    from .quant.int8 import export_onnx
    from .train import load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    spec = ckpt["model_spec"]
    if spec.get("quant"):
        # A PACT model exported as plain float ONNX would run in float32 with fake-quant arithmetic: no
        # smaller, no faster. export_qat_onnx writes its learned clipping levels as an integer QDQ graph;
        # it needs real training images for the input's 8-bit range and to check the file it writes.
        import torch

        from .data import load_dataset, make_loader
        from .quant.qdq import export_qat_onnx

        if args.calib < 1:
            raise ValueError(f"--calib must be a positive number of training images, got {args.calib}")
        calib = load_dataset(spec["dataset"], "train", subset=args.calib, seed=1)
        example = torch.cat([x for x, _ in make_loader(calib, batch_size=256)])
        path = export_qat_onnx(model, args.out, example, metadata=_onnx_metadata(spec))
        q = spec["quant"]
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB; PACT W{q['w_bits']}A{q['a_bits']} as integer QDQ, "
              f"input range from {len(example)} training images)")
        return
    path = export_onnx(model, args.out, input_shape=(1, spec["in_channels"], spec["image_size"], spec["image_size"]),
                       metadata=_onnx_metadata(spec))
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


def cmd_ptq(args):
    from .data import load_dataset, make_loader
    from .quant.int8 import export_onnx, quantize_onnx
    from .train import load_checkpoint

    if args.calib < 1:
        raise ValueError(f"--calib must be a positive number of training images, got {args.calib}")
    model, ckpt = load_checkpoint(args.checkpoint)
    spec = ckpt["model_spec"]
    out = Path(args.out)
    fp32 = out.with_name(out.stem.replace("_int8", "") + "_fp32.onnx")
    export_onnx(model, fp32, input_shape=(1, spec["in_channels"], spec["image_size"], spec["image_size"]),
                metadata=_onnx_metadata(spec))
    calib = load_dataset(spec["dataset"], "train", subset=args.calib, seed=1)
    path = quantize_onnx(fp32, out, make_loader(calib, batch_size=64), num_batches=-(-args.calib // 64),
                         method=args.method)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB; fp32 {fp32.stat().st_size / 1024:.1f} KiB)")


def cmd_bench(args):
    import numpy as np

    from .edge import compare_backends, format_table
    from .quant.int8 import OnnxClassifier

    for flag, value, low in (("--threads", args.threads, 1), ("--batch", args.batch, 1), ("--queries", args.queries, 1)):
        if value < low:
            raise ValueError(f"{flag} must be an integer >= {low}, got {value}")
    if not args.seconds >= 0:
        raise ValueError(f"--seconds must be >= 0, got {args.seconds}")
    for model in args.models:
        if Path(model).suffix != ".onnx":
            raise ValueError(f"qsal bench times .onnx files (make them with `qsal export` or `qsal ptq`), got {model}")
    shapes = {model: OnnxClassifier(model).input_shape for model in args.models}
    if len(set(shapes.values())) > 1 or None in next(iter(shapes.values())):
        raise ValueError(f"the models must take one fixed input shape to be compared, got {shapes}")
    example = np.random.default_rng(0).standard_normal((args.batch, *shapes[args.models[0]])).astype(np.float32)
    result = compare_backends({model: model for model in args.models}, example, threads=args.threads,
                              min_queries=args.queries, min_seconds=args.seconds, batch_sizes=(args.batch,),
                              budget=args.budget, progress=not args.json)
    if args.json:
        print(json.dumps(result))
    else:
        s = result["settings"]
        print(f"batch 1, {args.threads} thread(s), >= {s['min_queries']} queries and {s['min_seconds']:g} s each"
              + (" (capped by the ci budget)" if s["capped_by_budget"] else "") + f", random input {shapes[args.models[0]]}")
        print(format_table(result["rows"], ratios_to=args.models[0] if len(args.models) > 1 else None))


def cmd_deploy(args):
    from .edge import build_bundle

    out = build_bundle(args.checkpoint, args.out, calib=args.calib, method=args.method, samples=args.samples)
    print(f"wrote the bundle {out}: model_fp32.onnx, model_int8.onnx, labels.json, preprocess.json, requirements.txt, "
          f"run.py, samples/, README.md (the steps on the Raspberry Pi)")


def cmd_grade(args):
    from .grade import REPOSITORY_EXERCISES, format_table, grade, to_csv, to_json

    if not args.timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds per notebook, got {args.timeout}")
    if args.reference and not Path(args.reference).is_dir():
        raise ValueError(f"--reference {args.reference} is not a folder: give the folder of the handed-out exercises")
    reference = None if args.own_checks else args.reference or REPOSITORY_EXERCISES
    results = grade(args.paths, timeout=args.timeout, budget=args.budget, progress=not (args.json or args.csv),
                    reference_dir=reference)
    print(to_json(results) if args.json else to_csv(results).rstrip("\n") if args.csv else format_table(results))


ENVIRONMENT = """environment variables:
  QSAL_DATA     data root (an absolute path; default: a per-user cache, filled by downloads)
  QSAL_BUDGET   ci | book | full: epochs and subset sizes when --budget is not given (default book)
  QSAL_STANDIN  1: use the synthetic CIFAR-10 stand-in instead of CIFAR-10 (labelled as such everywhere)
  QSAL_DEBUG    1: show the full traceback instead of a one-line error"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qsal", description="qsal-lab: train, quantize, export and evaluate small image classifiers.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ENVIRONMENT)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="which datasets are present under the data root, and whether checksums match")
    d.add_argument("--root", help="data root (default: $QSAL_DATA or the per-user cache)")
    d.add_argument("--download", nargs="+", metavar="NAME", default=[],
                   help="download these datasets (every split, MD5-checked) before listing, e.g. "
                        "`qsal data --download mnist cifar10 pneumoniamnist` to prepare a room without network")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="train a model; writes OUT/checkpoint.pt and OUT/metrics.json")
    t.add_argument("--dataset", required=True, help="mnist, fashionmnist, cifar10 or a 2D MedMNIST flag")
    t.add_argument("--model", default="smallcnn", help="smallcnn, resnet20 or resnet18 (default smallcnn)")
    t.add_argument("--out", required=True, help="output folder (an unfinished run there is resumed)")
    t.add_argument("--budget", choices=["ci", "book", "full"], help="recipe size (default: $QSAL_BUDGET or book)")
    t.add_argument("--epochs", type=int, help="override the budget's number of epochs")
    t.add_argument("--lr", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--train-subset", type=int, help="train on a stratified subset of this many images")
    t.add_argument("--test-subset", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, mps")
    t.add_argument("--method", choices=TRAIN_METHODS, default="fp",
                   help="fp: full precision; pact: PACT QAT; sgt: saliency-guided training; pact+sgt: both")
    t.add_argument("--w-bits", type=int, help="weight bits for PACT (2..8, 32 = float; default 4)")
    t.add_argument("--a-bits", type=int, help="activation bits for PACT (2..8, 32 = float; default 4)")
    t.add_argument("--first-last-bits", type=int, default=8, help="bits of the first and last layer (default 8)")
    t.add_argument("--weight-quant", choices=["dorefa", "symmetric"], default="dorefa")
    t.add_argument("--pact-alpha", type=float, help="initial PACT clipping level alpha (default 10)")
    t.add_argument("--alpha-l2", type=float, help="L2 weight on PACT's alphas (default 2e-4)")
    t.add_argument("--alpha-lr-scale", type=float, help="alphas' learning rate / the weights' (default 1)")
    t.add_argument("--mask-fraction", type=float,
                   help="SGT: share of each image's pixels masked, in (0, 1) (default: the paper's, 0.5 MNIST, 0.1 CIFAR-10)")
    t.add_argument("--sgt-lambda", type=float, help="SGT: weight of the KL term, >= 0 (default 1)")
    t.add_argument("--sgt-signed", action="store_true",
                   help="SGT: mask the lowest signed gradients, as the authors' code (default: lowest |gradient|)")
    t.add_argument("--sgt-no-detach", action="store_true",
                   help="SGT: the KL's clean side is trained too, as the authors' code (default: a constant)")
    t.add_argument("--holdout", type=int,
                   help="leave this many training images out and record their accuracy after every epoch")
    t.add_argument("--init-from", help="start from this checkpoint (e.g. fine-tune a float model with PACT)")
    t.add_argument("--restart", action="store_true", help="ignore an unfinished run in --out instead of resuming")
    t.add_argument("--size", type=int, help="MedMNIST image size: 28 (default), 64, 128 or 224 (files <flag>_<size>.npz)")
    t.add_argument("--width", type=float, default=1.0, help="ResNet-18 channel multiplier (default 1; 0.5: 32..256)")
    t.add_argument("--imbalance", choices=["none", "weighted_loss", "sampler"], default="none",
                   help="class imbalance: class-weighted loss or class-balanced sampler (default none)")
    t.add_argument("--augment", choices=["none", "crop_flip", "shift"],
                   help="override the recipe's augmentation: crop_flip (CIFAR), shift (+-2 px, no flip)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on its dataset's test split (MedMNIST: clinical metrics "
                                    "at a threshold chosen on the validation split, with bootstrap CIs)")
    e.add_argument("--checkpoint", required=True, help="checkpoint.pt (or the folder holding it)")
    e.add_argument("--dataset", help="default: the dataset it was trained on")
    e.add_argument("--split", default="test")
    e.add_argument("--subset", type=int, help="evaluate on a stratified subset of this many images")
    e.add_argument("--budget", choices=["ci", "book", "full"], help="ci evaluates on a subset")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print one JSON object (for machines)")
    e.add_argument("--threshold", choices=["youden", "sensitivity"], default="youden",
                   help="MedMNIST binary tasks: how the validation split picks the threshold: Youden's J (default) or "
                        "the first threshold reaching --target-sensitivity (screening)")
    e.add_argument("--target-sensitivity", type=float, help="with --threshold sensitivity (default 0.95)")
    e.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the 95%% CIs (default 2000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("saliency", help="saliency maps of test images as a figure, with faithfulness and Gini")
    s.add_argument("--checkpoint", help="checkpoint.pt (or the folder holding it)")
    s.add_argument("--onnx", help="an .onnx model instead (fp32 or int8): perturbation methods only")
    s.add_argument("--method", help="saliency, ig, smoothgrad, gradcam or occlusion (default: saliency; "
                                    "occlusion for --onnx, which has no gradients)")
    s.add_argument("--images", type=int, default=100,
                   help="number of test images for the metrics (default 100); the figure shows up to 8")
    s.add_argument("--out", required=True, help="the figure, e.g. maps.png")
    s.add_argument("--dataset", help="default: the dataset the model records")
    s.add_argument("--fractions", default=",".join(f"{i / 10:g}" for i in range(10)),
                   help="shares of pixels removed for the faithfulness curve (default 0,0.1,...,0.9)")
    s.add_argument("--seed", type=int, default=0, help="picks the images and the removal noise")
    s.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    s.set_defaults(func=cmd_saliency)

    x = sub.add_parser("export", help="export a checkpoint to one self-contained ONNX file (float: fp32, dynamic "
                                      "batch; PACT: integer QDQ with its learned clipping levels)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True, help="model.onnx")
    x.add_argument("--calib", type=int, default=256,
                   help="PACT checkpoints: training images that set the input's 8-bit range (default 256)")
    x.set_defaults(func=cmd_export)

    q = sub.add_parser("ptq", help="post-training static int8 quantization with onnxruntime (QDQ, per-channel)")
    q.add_argument("--checkpoint", required=True)
    q.add_argument("--out", required=True, help="model_int8.onnx (the fp32 export is written beside it)")
    q.add_argument("--calib", type=int, default=512, help="number of training images for calibration (default 512)")
    q.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    q.set_defaults(func=cmd_ptq)

    b = sub.add_parser("bench", help="single-stream latency (p50/p90/p99), throughput and peak memory of .onnx models")
    b.add_argument("models", nargs="+", metavar="MODEL", help="one or more .onnx files (several: timed interleaved)")
    b.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    b.add_argument("--batch", type=int, default=64, help="batch size for throughput (latency is at batch 1; default 64)")
    b.add_argument("--queries", type=int, default=1024, help="at least this many timed queries per model (default 1024)")
    b.add_argument("--seconds", type=float, default=10.0, help="and at least this many seconds (default 10)")
    b.add_argument("--budget", choices=["ci", "book", "full"], help="ci caps queries and seconds (a smoke run)")
    b.add_argument("--json", action="store_true", help="print one JSON object (for machines)")
    b.set_defaults(func=cmd_bench)

    y = sub.add_parser("deploy", help="a Raspberry Pi bundle: fp32 + int8 ONNX, labels, preprocessing, run.py, README")
    y.add_argument("--checkpoint", required=True, help="a float checkpoint (or its folder)")
    y.add_argument("--out", required=True, help="the bundle folder")
    y.add_argument("--calib", type=int, default=512, help="training images for int8 calibration (default 512)")
    y.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    y.add_argument("--samples", type=int, default=8, help="test images shipped in samples/ with their logits (default 8)")
    y.set_defaults(func=cmd_deploy)

    g = sub.add_parser("grade", help="run learners' exercise notebooks headless and report each check "
                                     "(passed, failed with its message, error, timeout)")
    g.add_argument("paths", nargs="+", metavar="PATH",
                   help="exercise notebooks, a learner's folder of them, or a folder with one folder per learner")
    g.add_argument("--timeout", type=float, default=600, help="seconds per notebook (default 600)")
    g.add_argument("--budget", choices=["ci", "book", "full"], default="ci", help="QSAL_BUDGET of the runs (default ci)")
    g.add_argument("--reference", help="folder of the exercises as handed out: their check cells are the ones run, "
                                       "and deleted ones count as missing (default: exercises/ of this clone)")
    g.add_argument("--own-checks", action="store_true", help="run the notebooks' check cells as the learners left them")
    out = g.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print every notebook's result as JSON")
    out.add_argument("--csv", action="store_true", help="print one CSV row per check (a gradebook)")
    g.set_defaults(func=cmd_grade)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("qsal: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for people; QSAL_DEBUG=1 shows the traceback for developers
        if os.environ.get("QSAL_DEBUG"):
            raise
        expected = isinstance(e, (ValueError, RuntimeError, FileNotFoundError))
        msg = str(e) if expected and str(e) else f"{type(e).__name__}: {e} (QSAL_DEBUG=1 shows the traceback)"
        print(f"qsal {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
