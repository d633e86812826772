"""A deployment bundle: one folder with everything a Raspberry Pi needs to run a trained classifier.

    build_bundle("runs/mnist", "bundle/")        # or `qsal deploy --checkpoint runs/mnist --out bundle/`

writes

    model_fp32.onnx    the float model (export_onnx: BN folded, batch dynamic)
    model_int8.onnx    ONNX Runtime static int8 (QDQ, per-channel int8 weights), calibrated on the
                       checkpoint's own training data
    labels.json        {"dataset": display name, "classes": [...]}
    preprocess.json    input size, channels, mean and std: x = (pixels / 255 - mean) / std
    requirements.txt   what run.py needs on the device: numpy, onnxruntime, pillow
    run.py             the standalone runner (qsal_lab/edge/runner.py, copied verbatim)
    samples/           a few test images as PNG files and expected.json, the logits both models
                       give them on the machine that built the bundle (`run.py --expect` compares)
    README.md          the exact steps on the device

The dataset's display name travels into labels.json, preprocess.json and the README, so a model
trained on the synthetic CIFAR-10 stand-in says so on the device too.
"""
from __future__ import annotations

import json
import platform
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..files import atomic_write, atomic_write_text
from . import runner

BUNDLE_FILES = ("model_fp32.onnx", "model_int8.onnx", "labels.json", "preprocess.json", "requirements.txt",
                "run.py", "README.md", "samples/expected.json")
PREPROCESS_FORMAT = "qsal-lab preprocess 1"
MODEL_NAMES = {"smallcnn": "SmallCNN", "resnet20": "ResNet-20", "resnet18": "ResNet-18"}


def build_bundle(checkpoint, out, calib: int = 512, method: str = "minmax", samples: int = 8,
                 root=None, seed: int = 1, progress: bool = True) -> Path:
    """Write the bundle for `checkpoint` (a float qsal checkpoint or its folder) into `out`; returns `out`.

    calib: training images of the checkpoint's dataset used to calibrate the int8 model's activations.
    samples: test images written to samples/ with the logits of both models (0 for none).
    root: the data root (default $QSAL_DATA). Files in `out` with the bundle's names are replaced.
    progress=False: no calibration bar.
    """
    import torch

    from ..data import load_dataset, make_loader
    from ..quant.int8 import CALIBRATION_METHODS, export_onnx, quantize_onnx
    from ..train import load_checkpoint

    if not isinstance(calib, int) or calib < 1:
        raise ValueError(f"calib must be a positive number of training images, got {calib!r}")
    if not isinstance(samples, int) or samples < 0:
        raise ValueError(f"samples must be a number of test images >= 0, got {samples!r}")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of: {', '.join(CALIBRATION_METHODS)}")
    model, ckpt = load_checkpoint(checkpoint)
    spec = ckpt["model_spec"]
    if spec.get("quant"):
        raise ValueError(f"{checkpoint} is a PACT QAT checkpoint; a bundle's int8 model comes from post-training "
                         f"quantization of a float model: deploy the float checkpoint")
    if not spec.get("dataset"):
        raise ValueError(f"{checkpoint} does not record its dataset, needed for calibration and the labels")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the bundle")
    calib_ds = load_dataset(spec["dataset"], "train", root=root, subset=calib, seed=seed)
    info = calib_ds.info  # what was loaded: the stand-in's info when the stand-in stood in
    shape = (1, spec["in_channels"], spec["image_size"], spec["image_size"])
    metadata = {"dataset": info.name, "dataset_display_name": info.display_name, "model": spec["model"],
                "class_names": list(info.class_names), "mean": list(info.mean), "std": list(info.std)}
    fp32 = export_onnx(model, out / "model_fp32.onnx", input_shape=shape, metadata=metadata)
    int8 = quantize_onnx(fp32, out / "model_int8.onnx", make_loader(calib_ds, batch_size=64),
                         num_batches=-(-calib // 64), method=method, progress=progress)

    labels = {"dataset": info.display_name, "dataset_key": info.name, "standin": info.standin, "task": info.task,
              "classes": [str(c) for c in info.class_names]}
    preprocess = {"format": PREPROCESS_FORMAT, "dataset": info.name, "dataset_display_name": info.display_name,
                  "standin": info.standin, "task": info.task, "height": info.image_size, "width": info.image_size,
                  "channels": info.in_channels, "pil_mode": "L" if info.in_channels == 1 else "RGB",
                  "layout": "NCHW", "dtype": "float32", "mean": list(info.mean), "std": list(info.std),
                  "formula": "x = (pixels / 255 - mean) / std, per channel", "resize": "none: images must already "
                  f"be {info.image_size}x{info.image_size}"}
    atomic_write_text(json.dumps(labels, indent=2) + "\n", out / "labels.json")
    atomic_write_text(json.dumps(preprocess, indent=2) + "\n", out / "preprocess.json")
    atomic_write_text(requirements(), out / "requirements.txt")
    atomic_write(out / "run.py", lambda tmp: shutil.copyfile(runner.__file__, tmp), suffix=".tmp.py")
    names = write_samples(out, spec["dataset"], samples, root, info, preprocess, labels)
    readme = bundle_readme(out, spec, ckpt.get("config") or {}, info, calib_ds, method, names,
                           checkpoint=checkpoint, torch_version=torch.__version__)
    atomic_write_text(readme, out / "README.md")
    return out


def requirements() -> str:
    """run.py's requirements: the onnxruntime that built (and checked) the int8 model, pinned; numpy and
    pillow only move arrays and read images, so any recent release will do."""
    import onnxruntime

    return ("# run.py's requirements on the device (Raspberry Pi OS 64-bit and its python3)\n"
            f"onnxruntime=={onnxruntime.__version__}\nnumpy>=1.24\npillow>=9.1\n")


def write_samples(out: Path, dataset: str, n: int, root, info, preprocess, labels) -> list[str]:
    """n test images as PNG files in out/samples/, and the logits both models give them here."""
    from PIL import Image

    from ..data import load_dataset

    folder = out / "samples"
    if folder.is_dir():
        for old in folder.glob("*.png"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    if n:
        test = load_dataset(dataset, "test", root=root, subset=n, seed=0)
        for i in range(len(test)):
            pixels = test.images[i].permute(1, 2, 0).numpy()
            label = re.sub(r"[^A-Za-z0-9]+", "-", str(info.class_names[int(test.labels[i])]))[:24].strip("-")
            name = f"{i:02d}_{label}.png"
            Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(folder / name)
            names.append(name)
    expected = {"what": "logits that run.py gives for these images on the machine that built the bundle",
                "machine": platform.machine(), "platform": platform.platform(), "models": {}}
    if names:
        x, rows = runner.load_inputs([folder / n for n in names], preprocess)  # the device's own code path
        for model_file in ("model_fp32.onnx", "model_int8.onnx"):
            model = runner.Model(out / model_file, threads=1).check(preprocess)
            predictions, _ = runner.classify(model, x, rows, labels, preprocess["task"])
            expected["models"][model_file] = {Path(p["input"]).name: p["logits"] for p in predictions}
    atomic_write_text(json.dumps(expected, indent=1) + "\n", folder / "expected.json")
    return names


def bundle_readme(out: Path, spec, config, info, calib_ds, method, samples, checkpoint, torch_version) -> str:
    size = {f: (out / f).stat().st_size / 1024 for f in ("model_fp32.onnx", "model_int8.onnx")}
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    c, s = info.in_channels, info.image_size
    example = f"samples/{samples[0]}" if samples else "image.png"
    standin = ("\n**This model was trained on the synthetic CIFAR-10 stand-in, not on CIFAR-10: its classes are "
               "shapes and textures, and it says nothing about real CIFAR-10 images.**\n" if info.standin else "")
    source = Path(checkpoint)
    source = source.as_posix() if not source.is_absolute() else "/".join(source.parts[-2:])
    return f"""# {MODEL_NAMES.get(spec['model'], spec['model'])} on {info.display_name}: a bundle for a Raspberry Pi
{standin}
Made by qsal-lab on {made} from `{source}` ({config.get('budget', '?')} budget, torch {torch_version}).
It classifies {s}x{s} {'grey' if c == 1 else 'RGB'} images into {info.num_classes} classes
({', '.join(map(str, info.class_names[:10]))}{', ...' if info.num_classes > 10 else ''}).

| file | what |
| --- | --- |
| `model_int8.onnx` | int8 model, {size['model_int8.onnx']:.1f} KiB: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations calibrated with {method} on {len(calib_ds)} {info.display_name} training images) |
| `model_fp32.onnx` | the float model, {size['model_fp32.onnx']:.1f} KiB (BatchNorm folded) |
| `labels.json` | the class names, in the order of the model's outputs |
| `preprocess.json` | what an input must be: {s}x{s} pixels, {c} channel(s), x = (pixels / 255 - mean) / std with mean {list(info.mean)}, std {list(info.std)} |
| `requirements.txt` | what `run.py` needs: onnxruntime, numpy, pillow (no PyTorch) |
| `run.py` | the runner: classifies image files, folders and `.npy` batches, prints JSON; `--bench` times the model |
| `samples/` | {len(samples)} {info.display_name} test images and `expected.json`, the logits both models gave them on the machine that built this bundle ({platform.machine()}) |

## On the Raspberry Pi

Raspberry Pi OS **64-bit** (Bookworm or later; Pi 3, 4, 5 or Zero 2 W). `uname -m` must print `aarch64`:
onnxruntime publishes no wheels for the 32-bit OS (`armv7l`).

1. Copy this folder to the Pi, e.g. from your computer: `scp -r {out.name} pi@raspberrypi.local:~/`
2. On the Pi, make a virtual environment and install the requirements (about a minute):

   ```bash
   cd ~/{out.name}
   python3 -m venv .venv
   . .venv/bin/activate
   pip install -r requirements.txt
   ```

3. Classify:

   ```bash
   python run.py {example}                 # one image
   python run.py samples/                  # a folder (its images and .npy files)
   python run.py batch.npy                 # a (N, {c}, {s}, {s}) or (N, {s}, {s}) array: uint8 pixels or float32 preprocessed inputs
   python run.py --model model_fp32.onnx samples/   # the float model instead of the int8 one
   ```

   Each run prints one JSON object: a prediction per input (class, label, probability, probabilities, logits),
   the time the classification took, and the peak memory.

4. Check the Pi computes what this machine computed: `python run.py --expect samples/expected.json samples/`
   adds "agreement" (largest logit difference, same predicted class) to the JSON.
5. Benchmark on the device (batch 1, 1 thread; at least 1,024 queries and 10 s after a warm-up):

   ```bash
   python run.py --bench                          # the int8 model
   python run.py --bench --model model_fp32.onnx  # the float model, to compare
   python run.py --bench --threads 4 --batch 64   # all four cores, plus throughput at batch 64
   ```

   Measure with the Pi otherwise idle, cool and on a good power supply: a throttled Pi is slower. Only
   these timings are Pi timings; numbers from a laptop or an emulator are not.

Images must already be {s}x{s} and {'grey (mode L)' if c == 1 else 'RGB'}: `run.py` does not resize or convert,
and says so when an image does not fit. Any error prints one line, `run.py: error: ...`, and exits with status 2.
"""
