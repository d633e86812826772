"""`qsal`: the command line. Every subcommand has --help; errors are one line and exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def cmd_data(args):
    from .data import available_datasets, check_files, default_root

    root = Path(args.root) if args.root else default_root()
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
    print(f"  {'cifar10-standin':15s} synthetic stand-in, made when asked for (QSAL_STANDIN=1); never real CIFAR-10")


PACT_TRAINING_FLAGS = ("pact_alpha", "alpha_l2", "alpha_lr_scale")  # QATConfig fields; None = its default


def _quant_config(args):
    if args.method == "fp":
        for flag in ("w_bits", "a_bits", *PACT_TRAINING_FLAGS):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} needs --method pact")
        return None
    from .quant import QATConfig

    extra = {k: getattr(args, k) for k in PACT_TRAINING_FLAGS if getattr(args, k) is not None}
    return QATConfig(w_bits=args.w_bits or 4, a_bits=args.a_bits or 4, first_last_bits=args.first_last_bits,
                     weight_quant=args.weight_quant, **extra)


def cmd_train(args):
    from .train import train_model

    quant = _quant_config(args)
    model, history = train_model(args.dataset, args.model, budget=args.budget, out=args.out, quant=quant,
                                 init_from=args.init_from, epochs=args.epochs, lr=args.lr,
                                 batch_size=args.batch_size, train_subset=args.train_subset,
                                 test_subset=args.test_subset, seed=args.seed, device=args.device,
                                 resume=not args.restart)
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


def cmd_eval(args):
    from .train import evaluate, load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    ds, loader = _eval_data(args, ckpt)
    metrics = evaluate(model, loader, device=args.device)
    metrics.update(dataset=ds.name, split=args.split, checkpoint=str(args.checkpoint))
    if args.json:
        print(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            print(f"{k:12s} {v:.4f}" if isinstance(v, float) else f"{k:12s} {v}")


def cmd_export(args):
    from .quant.int8 import export_onnx
    from .train import load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    spec = ckpt["model_spec"]
    path = export_onnx(model, args.out, input_shape=(1, spec["in_channels"], spec["image_size"], spec["image_size"]))
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
    export_onnx(model, fp32, input_shape=(1, spec["in_channels"], spec["image_size"], spec["image_size"]))
    calib = load_dataset(spec["dataset"], "train", subset=args.calib, seed=1)
    path = quantize_onnx(fp32, out, make_loader(calib, batch_size=64), num_batches=-(-args.calib // 64),
                         method=args.method)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB; fp32 {fp32.stat().st_size / 1024:.1f} KiB)")


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
    t.add_argument("--method", choices=["fp", "pact"], default="fp", help="fp: full precision; pact: PACT QAT")
    t.add_argument("--w-bits", type=int, help="weight bits for PACT (2..8, 32 = float; default 4)")
    t.add_argument("--a-bits", type=int, help="activation bits for PACT (2..8, 32 = float; default 4)")
    t.add_argument("--first-last-bits", type=int, default=8, help="bits of the first and last layer (default 8)")
    t.add_argument("--weight-quant", choices=["dorefa", "symmetric"], default="dorefa")
    t.add_argument("--pact-alpha", type=float, help="initial PACT clipping level alpha (default 10)")
    t.add_argument("--alpha-l2", type=float, help="L2 weight on PACT's alphas (default 2e-4)")
    t.add_argument("--alpha-lr-scale", type=float, help="alphas' learning rate / the weights' (default 1)")
    t.add_argument("--init-from", help="start from this checkpoint (e.g. fine-tune a float model with PACT)")
    t.add_argument("--restart", action="store_true", help="ignore an unfinished run in --out instead of resuming")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on its dataset's test split")
    e.add_argument("--checkpoint", required=True, help="checkpoint.pt (or the folder holding it)")
    e.add_argument("--dataset", help="default: the dataset it was trained on")
    e.add_argument("--split", default="test")
    e.add_argument("--subset", type=int, help="evaluate on a stratified subset of this many images")
    e.add_argument("--budget", choices=["ci", "book", "full"], help="ci evaluates on a subset")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print one JSON object (for machines)")
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="export a checkpoint to one self-contained ONNX file (fp32, dynamic batch)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True, help="model.onnx")
    x.set_defaults(func=cmd_export)

    q = sub.add_parser("ptq", help="post-training static int8 quantization with onnxruntime (QDQ, per-channel)")
    q.add_argument("--checkpoint", required=True)
    q.add_argument("--out", required=True, help="model_int8.onnx (the fp32 export is written beside it)")
    q.add_argument("--calib", type=int, default=512, help="number of training images for calibration (default 512)")
    q.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    q.set_defaults(func=cmd_ptq)
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
