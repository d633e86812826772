"""Writing files so that nobody ever reads half of one: checkpoints, metrics, ONNX models, bundles.

Each writer goes to a temp file in the target's folder, then renames it over the target (a rename
within one folder is atomic on POSIX and Windows), so a crash or Ctrl-C leaves the old file or the
new one, never a torn one. This module imports nothing from qsal_lab: every layer may use it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable, suffix: str = ".tmp") -> Path:
    """write(tmp) into a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; ours are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save, atomically (see `atomic_write`)."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Path.write_text, atomically (see `atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
