"""Checkpoints shipped with the package, so a lesson never waits on training.

Each folder holds `checkpoint.pt` (weights + model spec, no optimizer state), the `metrics.json`
written by the run that trained it, and `COMMAND`, the command that trained it. Weights may be
stored in float16 to fit the repository (`slim_checkpoint(..., dtype="float16")`); `load_checkpoint`
reads them back into the float32 model.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.name for p in HERE.iterdir() if (p / "checkpoint.pt").exists())


def pretrained_dir(name: str) -> Path:
    if name not in available():
        raise ValueError(f"no pretrained checkpoint {name!r}; available: {', '.join(available()) or 'none'}")
    return HERE / name


def load_pretrained(name: str):
    """(model in eval mode, info) where info has the training 'command' and its 'metrics'."""
    from ..train import load_checkpoint

    folder = pretrained_dir(name)
    model, ckpt = load_checkpoint(folder / "checkpoint.pt")
    info = {"command": (folder / "COMMAND").read_text().strip(),
            "metrics": json.loads((folder / "metrics.json").read_text()),
            "model_spec": ckpt["model_spec"], "path": folder}
    return model, info


def slim_checkpoint(src: str | Path, dst_dir: str | Path, command: str, dtype: str = "float32"):
    """Copy a finished run into a shippable folder: weights + spec only, its metrics, its command.

    dtype "float16" stores every floating-point tensor at half precision (half the file; the checkpoint
    records `weights_dtype`); loading casts them back to the model's float32 parameters."""
    import shutil

    import torch

    from ..files import atomic_save

    src = Path(src)
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    ckpt = torch.load(src / "checkpoint.pt", map_location="cpu", weights_only=False)
    if not ckpt.get("finished"):
        raise ValueError(f"{src} is not a finished run; let it finish before shipping it")
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    slim = {k: ckpt[k] for k in ("model", "model_spec", "config", "history", "epoch", "finished")}
    if dtype == "float16":
        slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
        slim["weights_dtype"] = "float16"
    atomic_save(slim, dst / "checkpoint.pt")
    shutil.copy(src / "metrics.json", dst / "metrics.json")
    (dst / "COMMAND").write_text(command.strip() + "\n")
    return dst
