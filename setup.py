"""The one packaging step pyproject.toml cannot say: the exercise notebooks live in exercises/ (made
from solutions/ by `make exercises`) and ship inside the package as qsal_lab/exercises/, where
`qsal_lab.exercises_dir()` finds them in an installed wheel. Everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EXERCISES = Path(__file__).resolve().parent / "exercises"


class BuildPyWithExercises(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads exercises/ from the clone itself
            return
        notebooks = sorted(EXERCISES.glob("*.ipynb"))
        if not notebooks:
            raise SystemExit(f"no exercise notebooks in {EXERCISES}: run `make exercises` before building")
        target = Path(self.build_lib) / "qsal_lab" / "exercises"
        target.mkdir(parents=True, exist_ok=True)
        for notebook in notebooks:
            shutil.copyfile(notebook, target / notebook.name)


setup(cmdclass={"build_py": BuildPyWithExercises})
