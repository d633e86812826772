"""run.py: classify images with a qsal-lab model on a device such as a Raspberry Pi (one file, no qsal_lab).

This file is copied verbatim into every deployment bundle as `run.py`. It needs only numpy,
onnxruntime and pillow and the Python standard library, so a device needs no PyTorch.

    python run.py digit.png                          # one image
    python run.py images/ more.png batch.npy         # image files, folders and .npy batches, in that order
    python run.py --bench                            # latency on this device: batch 1, 1 thread
    python run.py --model model_fp32.onnx --threads 4 --bench --queries 2048 images/

Options (paths default to the files beside run.py, i.e. the bundle's):
  --model M      the ONNX model (default model_int8.onnx)
  --spec S       the preprocessing spec (default preprocess.json)
  --labels L     the class names (default labels.json)
  --threads N    ONNX Runtime intra-op threads (default 1, the setting the benchmark reports)
  --bench        also time the model: --warmup untimed queries, then at least --queries queries and at
                 least --seconds seconds, whichever ends later, at batch 1 on the first input (random
                 input of the right shape if none is given); --batch B adds throughput at batch B
  --queries N    (default 1024)   --seconds S (default 10)   --warmup N (default 10)   --batch B (default 0: none)
  --expect E     compare the logits with a reference, e.g. the bundle's samples/expected.json (the logits the
                 building machine computed): adds "agreement" to the output

Inputs:
  image files  .png .jpg .jpeg .bmp .gif .pgm .ppm .pnm .tif .tiff .webp, exactly the spec's height x width,
               grey (mode L) for a 1-channel model or RGB for a 3-channel one. Nothing is resized or
               converted silently: a wrong size or channel count is an error.
  .npy         a batch shaped (N, C, H, W), or (N, H, W) for a 1-channel model. uint8 arrays are pixels
               (0..255), preprocessed like images; float arrays are model inputs already preprocessed
               (x = (pixels / 255 - mean) / std), fed as they are.
  folders      every image and .npy file directly inside, sorted by name; other files are skipped and
               listed under "skipped".

Files it reads (written by qsal_lab.edge.deploy.build_bundle):
  preprocess.json  {"height": 28, "width": 28, "channels": 1, "mean": [0.1307], "std": [0.3081],
                    "task": "multi-class", ...}: x = (pixels / 255 - mean) / std per channel, layout NCHW
  labels.json      {"dataset": "MNIST", "classes": ["0", "1", ...]}: class names in output order

Output: one JSON object on stdout (format 1; keys are only ever added, never renamed):
  {"runner": "qsal-lab run.py", "format": 1,
   "model": "model_int8.onnx", "dataset": "MNIST", "task": "multi-class", "threads": 1,
   "input_shape": [1, 28, 28],                               # C, H, W
   "predictions": [{"input": "images/7.png",                 # "batch.npy[3]" for row 3 of a .npy batch
                    "class": 7, "label": "7", "probability": 0.998,
                    "probabilities": [...], "logits": [...]}],  # multi-label: sigmoid, plus "positive": [labels]
   "skipped": ["images/notes.txt"],
   "latency_ms": {"total": 3.1, "per_input": 0.31, "batch_size": 64},   # the classification above
   "bench": {"batch": 1, "threads": 1, "input": "images/7.png", "warmup": 10, "queries": 1024,
             "seconds": 10.2, "mean_ms": ..., "p50_ms": ..., "p90_ms": ..., "p99_ms": ..., "min_ms": ...,
             "max_ms": ..., "throughput": {"batch": 64, "images_per_s": ...}},      # only with --bench
   "agreement": {"reference": "x86_64", "model": "model_int8.onnx", "inputs": 8,       # only with --expect
                 "max_abs_logit_diff": 1e-6, "same_class": 8, "different_class": []},
   "peak_rss_mb": 61.5,                                      # this process's peak resident memory
   "versions": {"python": ..., "numpy": ..., "onnxruntime": ..., "pillow": ...}, "machine": "aarch64"}
Errors (missing or corrupt model, wrong image size or channel count, unknown file type, ...): one line
`run.py: error: ...` on stderr and exit status 2.

Timings on an emulator (QEMU) or a laptop are not device timings: only a run on the device is.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PROG = "run.py"
FORMAT = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".pnm", ".tif", ".tiff", ".webp")
SPEC_KEYS = ("height", "width", "channels", "mean", "std")
BATCH = 64  # images per ONNX Runtime call when classifying


class RunnerError(Exception):
    """Bad input: the message (one line) says what was wrong and what to do."""


# ----------------------------------------------------------------------------- timing (shared with qsal_lab.edge)

def time_queries(run, min_queries: int, min_seconds: float) -> list[int]:
    """Nanoseconds of each call of run(): at least min_queries calls and min_seconds, whichever ends later.

    Only the call sits between the two clock reads; the stopping test uses the second read.
    """
    times, deadline = [], time.perf_counter_ns() + int(min_seconds * 1e9)
    while True:
        start = time.perf_counter_ns()
        run()
        end = time.perf_counter_ns()
        times.append(end - start)
        if len(times) >= min_queries and end >= deadline:
            return times


def latency_stats(times_ns) -> dict:
    """Mean, p50, p90, p99, min and max in milliseconds (numpy's linear-interpolation percentiles)."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    if ms.size == 0:
        raise ValueError("no timings to summarise")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"queries": int(ms.size), "mean_ms": float(ms.mean()), "p50_ms": float(p50), "p90_ms": float(p90),
            "p99_ms": float(p99), "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB.

    Linux: VmHWM from /proc/self/status, the peak of this program alone. getrusage's ru_maxrss would
    also do, except that Linux carries it across exec, so a program started by a big process (e.g. a
    test holding PyTorch) would report its parent's size. Elsewhere: ru_maxrss (bytes on macOS, KiB else).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


# ----------------------------------------------------------------------------- files

def read_json(path: Path, what: str, flag: str) -> dict:
    if not path.is_file():
        raise RunnerError(f"no {what} at {path}; pass {flag} PATH (the bundle's {path.name})")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise RunnerError(f"{path} is not valid JSON ({e}); use the {what} from the bundle") from None


def read_spec(path: Path) -> dict:
    spec = read_json(path, "preprocessing spec", "--spec")
    missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else list(SPEC_KEYS)
    if missing:
        raise RunnerError(f"{path} lacks {', '.join(missing)}; use the preprocess.json from the bundle")
    c = spec["channels"]
    if c not in (1, 3) or len(spec["mean"]) != c or len(spec["std"]) != c or min(spec["std"]) <= 0:
        raise RunnerError(f"{path}: need channels 1 or 3 with one mean and one positive std per channel, got "
                          f"channels={c}, mean={spec['mean']}, std={spec['std']}")
    return spec


def read_labels(path: Path) -> dict:
    labels = read_json(path, "labels file", "--labels")
    if not isinstance(labels, dict) or not isinstance(labels.get("classes"), list) or not labels["classes"]:
        raise RunnerError(f"{path} must hold {{\"classes\": [name, ...]}}; use the labels.json from the bundle")
    return labels


def load_session(path: Path, threads: int):
    import onnxruntime as ort

    if not path.is_file():
        raise RunnerError(f"no model at {path}; pass --model PATH (model_int8.onnx or model_fp32.onnx of the bundle)")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises several types for a broken file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RunnerError(f"{path} is not a loadable ONNX model ({reason}); copy the bundle's model again") from None


# ----------------------------------------------------------------------------- inputs

def expand_inputs(paths) -> tuple[list[Path], list[str]]:
    """(files to classify in order, skipped files): folders become their image and .npy files, sorted."""
    files, skipped = [], []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            usable = [p for p in inside if p.suffix.lower() in IMAGE_SUFFIXES + (".npy",)]
            if not usable:
                raise RunnerError(f"folder {path} holds no image or .npy files ({', '.join(IMAGE_SUFFIXES)}, .npy)")
            files += usable
            skipped += [str(p) for p in inside if p not in usable]
        elif not path.exists():
            raise RunnerError(f"no file or folder {path}; check the path")
        elif path.suffix.lower() not in IMAGE_SUFFIXES + (".npy",):
            raise RunnerError(f"{path}: unknown file type {path.suffix or '(no suffix)'!r}; give images "
                              f"({', '.join(IMAGE_SUFFIXES)}), .npy batches or folders of them")
        else:
            files.append(path)
    return files, skipped


def normalise(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 pixels (N, C, H, W) -> the model's float32 input, exactly as training normalised them."""
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((pixels.astype(np.float32) / np.float32(255) - mean) / std, dtype=np.float32)


def read_image(path: Path, spec: dict) -> np.ndarray:
    """One image file as uint8 pixels (1, C, H, W), or a RunnerError saying what does not fit the spec."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = spec["channels"], spec["height"], spec["width"]
    try:
        with Image.open(path) as img:
            img.load()
            mode, size = img.mode, img.size
            if mode in ("1", "P"):  # bilevel and palette images have no channels of their own
                img = img.convert("L" if mode == "1" or _grey_palette(img) else "RGB")
            pixels = np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise RunnerError(f"{path}: cannot read this image ({e}); is the file complete?") from None
    if size != (w, h):
        raise RunnerError(f"{path} is {size[0]}x{size[1]} pixels, the model takes {w}x{h}; resize it "
                          f"(e.g. Image.open(p).resize(({w}, {h}))) and try again")
    if pixels.dtype != np.uint8:
        raise RunnerError(f"{path} has {mode} pixels; give an 8-bit image (mode L or RGB)")
    got = 1 if pixels.ndim == 2 else pixels.shape[2]
    if got != c:
        want = "grey (mode L)" if c == 1 else "RGB"
        raise RunnerError(f"{path} has {got} channel(s) (mode {mode}), the model takes {c}; save it as {want}")
    return (pixels[None, None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)[None]).copy()


def _grey_palette(img) -> bool:
    rgb = np.asarray(img.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def read_npy(path: Path, spec: dict) -> np.ndarray:
    """A .npy batch as the model's float32 input (N, C, H, W); uint8 arrays are normalised first."""
    c, h, w = spec["channels"], spec["height"], spec["width"]
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise RunnerError(f"{path}: cannot read this .npy file ({e}); save arrays with numpy.save") from None
    if array.ndim == 3 and c == 1:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1:] != (c, h, w) or array.shape[0] == 0:
        shapes = f"(N, {c}, {h}, {w})" + (f" or (N, {h}, {w})" if c == 1 else "")
        raise RunnerError(f"{path} holds an array of shape {array.shape}, the model takes {shapes} with N >= 1")
    if array.dtype == np.uint8:
        return normalise(array, spec)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise RunnerError(f"{path} holds NaN or infinite values")
        return np.ascontiguousarray(array, dtype=np.float32)
    raise RunnerError(f"{path} holds {array.dtype} values; save uint8 pixels (0..255) or float32 inputs "
                      f"already preprocessed as in preprocess.json")


def load_inputs(files, spec) -> tuple[np.ndarray, list[str]]:
    """All inputs as one float32 batch (N, C, H, W) and a name per row."""
    batches, names = [], []
    for path in files:
        if path.suffix.lower() == ".npy":
            x = read_npy(path, spec)
            names += [f"{path}[{i}]" for i in range(len(x))]
        else:
            x = normalise(read_image(path, spec), spec)
            names.append(str(path))
        batches.append(x)
    return np.concatenate(batches), names


# ----------------------------------------------------------------------------- model

class Model:
    """An ONNX Runtime session: `logits = model(x)` on float32 (N, C, H, W) numpy arrays."""

    def __init__(self, path: Path, threads: int):
        self.path, self.session = path, load_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def check(self, spec: dict) -> Model:
        """The model itself, or a RunnerError if its input shape is not the spec's."""
        path, inp = self.path, self.session.get_inputs()[0]
        want = (spec["channels"], spec["height"], spec["width"])
        declared = tuple(inp.shape[1:])
        if len(declared) != 3 or any(isinstance(d, int) and d != s for d, s in zip(declared, want)):
            raise RunnerError(f"{path.name} takes inputs of shape {inp.shape}, the spec says (N, {want[0]}, "
                              f"{want[1]}, {want[2]}); use the preprocess.json from the model's bundle")
        if inp.type != "tensor(float)":
            raise RunnerError(f"{path.name} takes {inp.type} inputs; run.py runs float32-input models only")
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def classify(model: Model, x: np.ndarray, names, labels: dict, task: str) -> tuple[list, dict]:
    """(one prediction dict per row, the classification's own latency)."""
    start = time.perf_counter_ns()
    logits = np.concatenate([model(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
    total_ms = (time.perf_counter_ns() - start) / 1e6
    classes = labels["classes"]
    if logits.ndim != 2 or logits.shape[1] != len(classes):
        raise RunnerError(f"{model.path.name} gives {logits.shape[1:]} outputs per input but the labels file "
                          f"names {len(classes)} classes; use the labels.json from the model's bundle")
    logits = logits.astype(np.float64)
    if task == "multi-label":
        probs = 1 / (1 + np.exp(-logits))
    else:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
    predictions = []
    for name, row, p in zip(names, logits, probs):
        k = int(p.argmax())
        pred = {"input": name, "class": k, "label": str(classes[k]), "probability": float(p[k]),
                "probabilities": [float(v) for v in p], "logits": [float(v) for v in row]}
        if task == "multi-label":
            pred["positive"] = [str(classes[i]) for i in np.flatnonzero(p >= 0.5)]
        predictions.append(pred)
    return predictions, {"total": total_ms, "per_input": total_ms / len(x), "batch_size": min(BATCH, len(x))}


def agreement(predictions, path: Path, model_path: Path) -> dict:
    """How far these logits are from a reference file's: {"models": {model file: {input file: logits}}}."""
    reference = read_json(path, "reference file", "--expect")
    table = reference.get("models", {}).get(model_path.name) if isinstance(reference, dict) else None
    if not isinstance(table, dict):
        raise RunnerError(f"{path} has no logits for {model_path.name}; it lists "
                          f"{', '.join(reference.get('models', {})) if isinstance(reference, dict) else 'nothing'}")
    diffs, different = [], []
    for pred in predictions:
        want = table.get(Path(pred["input"]).name)
        if want is None:
            continue
        if len(want) != len(pred["logits"]):
            raise RunnerError(f"{path} has {len(want)} logits for {Path(pred['input']).name}, the model gives "
                              f"{len(pred['logits'])}; use the reference made for this model")
        diffs.append(float(np.max(np.abs(np.asarray(want) - np.asarray(pred["logits"])))))
        if int(np.argmax(want)) != pred["class"]:
            different.append(pred["input"])
    if not diffs:
        raise RunnerError(f"none of the inputs is in {path}; give the files it was made for (e.g. samples/)")
    return {"reference": reference.get("machine"), "model": model_path.name, "inputs": len(diffs),
            "max_abs_logit_diff": max(diffs), "same_class": len(diffs) - len(different),
            "different_class": different}


def bench(model: Model, example: np.ndarray, name: str, args) -> dict:
    """Single-stream latency at batch 1 (and throughput at --batch): warm-up, then timed queries only."""
    one = np.ascontiguousarray(example[:1])
    for _ in range(args.warmup):
        model(one)
    stats = latency_stats(time_queries(lambda: model(one), args.queries, args.seconds))
    result = {"batch": 1, "threads": args.threads, "input": name, "warmup": args.warmup, **stats,
              "seconds": stats["mean_ms"] * stats["queries"] / 1e3}
    if args.batch:
        many = np.ascontiguousarray(np.resize(example, (args.batch, *example.shape[1:])))
        model(many)  # warm-up: a new batch size allocates new buffers
        times = time_queries(lambda: model(many), max(3, args.queries // args.batch), args.seconds / 4)
        result["throughput"] = {"batch": args.batch, "batches": len(times),
                                "images_per_s": args.batch * len(times) / (sum(times) / 1e9)}
    return result


# ----------------------------------------------------------------------------- command line

class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error here (not argparse's usage + message)
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None):
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or .npy batches")
    p.add_argument("--model", type=Path, default=HERE / "model_int8.onnx")
    p.add_argument("--spec", type=Path, default=HERE / "preprocess.json")
    p.add_argument("--labels", type=Path, default=HERE / "labels.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bench", action="store_true")
    p.add_argument("--queries", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--expect", type=Path)
    args = p.parse_args(argv)
    for name, low in (("threads", 1), ("queries", 1), ("warmup", 0), ("batch", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name} must be an integer >= {low}, got {getattr(args, name)}")
    if not args.seconds >= 0:
        p.error(f"--seconds must be >= 0, got {args.seconds}")
    if not args.inputs and not args.bench:
        p.error("give images, folders or .npy batches to classify, or --bench to time the model")
    return args


def run(args) -> dict:
    model = Model(args.model, args.threads)  # the model first: without it nothing else matters
    spec, labels = read_spec(args.spec), read_labels(args.labels)
    model.check(spec)
    files, skipped = expand_inputs(args.inputs)
    shape = (spec["channels"], spec["height"], spec["width"])
    task = spec.get("task", "multi-class")
    out = {"runner": "qsal-lab run.py", "format": FORMAT, "model": str(args.model),
           "dataset": labels.get("dataset") or spec.get("dataset_display_name"), "task": task,
           "threads": args.threads, "input_shape": list(shape)}
    if files:
        x, names = load_inputs(files, spec)
        out["predictions"], out["latency_ms"] = classify(model, x, names, labels, task)
        out["skipped"] = skipped
        if args.expect:
            out["agreement"] = agreement(out["predictions"], args.expect, args.model)
    elif args.expect:
        raise RunnerError("--expect compares logits of inputs: give the inputs too, e.g. samples/")
    if args.bench:
        if files:
            example, name = x, names[0]
        else:
            example, name = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32), "random"
        out["bench"] = bench(model, example, name, args)
    import onnxruntime
    import PIL

    out["peak_rss_mb"] = peak_rss_mb()
    out["versions"] = {"python": platform.python_version(), "numpy": np.__version__,
                       "onnxruntime": onnxruntime.__version__, "pillow": PIL.__version__}
    out["machine"] = platform.machine()
    return out


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except RunnerError as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - still one line; QSAL_DEBUG=1 shows the traceback
        if os.environ.get("QSAL_DEBUG"):
            raise
        print(f"{PROG}: error: {type(e).__name__}: {one_line(e)} (QSAL_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
