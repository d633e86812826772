"""qsal_lab: quantized, saliency-aware, lightweight image classifiers (the library behind the qsal-lab book)."""
from pathlib import Path

__version__ = "0.1.0"   # the one place the version is written: pyproject.toml and the notebooks' install cell read it

_HERE = Path(__file__).resolve().parent


def exercises_dir() -> Path:
    """The folder of exercise notebooks (01_mnist_baseline.ipynb, ...) as handed out: inside the installed
    package (a wheel carries them as qsal_lab/exercises/), or the clone's exercises/ folder."""
    for folder in (_HERE / "exercises", _HERE.parent / "exercises"):
        if any(folder.glob("*.ipynb")):
            return folder
    raise FileNotFoundError(f"no exercise notebooks in {_HERE / 'exercises'} or {_HERE.parent / 'exercises'}: "
                            "reinstall qsal-lab, or in a clone run `make exercises`")


def copy_exercises(dest) -> list[Path]:
    """Copy the exercise notebooks into dest (created if missing) to work on; never overwrites a notebook
    that is already there (your work), and returns the paths it wrote."""
    import shutil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for notebook in sorted(exercises_dir().glob("*.ipynb")):
        target = dest / notebook.name
        if not target.exists():
            shutil.copyfile(notebook, target)
            written.append(target)
    return written
