"""qsal-lab installs by name: `python -m build` makes an sdist and a wheel that carry the shipped checkpoints
and the exercises, with the version written once and PyTorch unpinned; the wheel, installed into a fresh
venv, works from outside the repository; the notebooks' install cell installs it by name; and the Colab
rehearsal (tools/colab_rehearsal.py) runs a chapter and an exercise from it.

The fresh venvs see this environment's other packages (PyTorch, NumPy, ...) through a folder of links
that leaves qsal_lab out (colab_rehearsal.dependency_view): qsal_lab itself comes only from the wheel."""
import importlib.util
import json
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("colab_rehearsal", ROOT / "tools" / "colab_rehearsal.py")
rehearsal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rehearsal)
_spec = importlib.util.spec_from_file_location("nbtools", ROOT / "tools" / "nbtools.py")
nbtools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbtools)

pytestmark = pytest.mark.slow   # builds the package and installs it into fresh venvs (about a minute)
VERSION = nbtools.book_version()
CHECKPOINT_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "qsal_lab" / "pretrained").glob("*/*")
                          if p.is_file() and p.suffix != ".pyc")
EXERCISES = sorted(p.name for p in (ROOT / "exercises").glob("*.ipynb"))


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    return rehearsal.build_dists(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory):
    """A fresh venv with the wheel installed (pip offline: its dependencies must already be there)."""
    python = rehearsal.make_venv(tmp_path_factory.mktemp("installed") / "venv")
    wheel = dists[1]
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True,
                   env=rehearsal.clean_env(**rehearsal.offline_pip(wheel.parent)))
    return python


def test_wheel_carries_the_checkpoints_and_the_exercises(dists):
    names = set(zipfile.ZipFile(dists[1]).namelist())
    missing = [f for f in CHECKPOINT_FILES if f not in names]
    assert not missing, f"the wheel lacks shipped checkpoint files: {missing}"
    assert len(EXERCISES) == 11
    missing = [n for n in EXERCISES if f"qsal_lab/exercises/{n}" not in names]
    assert not missing, f"the wheel lacks exercises: {missing}"
    assert not [n for n in names if n.startswith(("tests/", "book/", "solutions/", "exercises/"))]


def test_sdist_carries_what_the_wheel_is_built_from(dists):
    with tarfile.open(dists[0]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for needed in ["pyproject.toml", "setup.py", "README.md", "LICENSE", *CHECKPOINT_FILES,
                   *(f"exercises/{n}" for n in EXERCISES)]:
        assert needed in names, f"the sdist lacks {needed}"
    assert not [n for n in names if n.startswith("tests/")], "the sdist carries tests that need the repository"


def test_metadata_has_the_books_version_and_leaves_torch_unpinned(dists):
    assert dists[1].name == f"qsal_lab-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(dists[1]) as wheel:
        metadata = Parser().parsestr(wheel.read(f"qsal_lab-{VERSION}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"qsal_lab-{VERSION}.dist-info/entry_points.txt").decode()
    assert metadata["Version"] == VERSION
    requires = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    torch = [r for r in requires if r.split(">")[0].split("=")[0].split("<")[0].strip() in ("torch", "torchvision")]
    assert len(torch) == 2 and not [r for r in torch if "==" in r or "<" in r], \
        f"PyTorch must stay unpinned (Colab keeps its own): {torch}"
    assert "qsal = qsal_lab.cli:main" in entry_points


def run_installed(python, code, cwd):
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=cwd,
                          env=rehearsal.clean_env(), timeout=600)


def test_installed_wheel_works_outside_the_repository(installed, tmp_path):
    venv = installed.parent.parent
    help_ = subprocess.run([str(venv / "bin" / "qsal"), "--help"], capture_output=True, text=True, cwd=tmp_path,
                           env=rehearsal.clean_env())
    assert help_.returncode == 0 and "environment variables" in help_.stdout, help_.stderr
    expect = next(c["metadata"]["qsal"]["expect"]
                  for c in json.loads((ROOT / "exercises" / "01_mnist_baseline.ipynb").read_text())["cells"]
                  if "check_accuracy(" in "".join(c["source"]) and "check" in c["metadata"].get("tags", []))
    code = """
import json, torch, qsal_lab
from pathlib import Path
from qsal_lab.pretrained import load_pretrained
from qsal_lab.checks.common import CheckFailed
from qsal_lab.checks.mnist_baseline import check_accuracy

model, info = load_pretrained("mnist_smallcnn")
check_accuracy(lambda logits, labels: (logits.argmax(dim=1) == labels).float().mean().item())
try:
    check_accuracy(lambda logits, labels: None)   # the untouched exercise's function
    failed = ""
except CheckFailed as err:
    failed = str(err)
print(json.dumps({"file": qsal_lab.__file__, "exercises": str(qsal_lab.exercises_dir()),
                  "notebooks": sorted(p.name for p in qsal_lab.exercises_dir().glob("*.ipynb")),
                  "params": sum(p.numel() for p in model.parameters()),
                  "accuracy": info["metrics"]["final"]["test_accuracy"], "failed": failed}))
"""
    run = run_installed(installed, code, tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert Path(report["file"]).is_relative_to(venv) and Path(report["exercises"]).is_relative_to(venv), report
    assert report["notebooks"] == EXERCISES
    shipped = json.loads((ROOT / "qsal_lab/pretrained/mnist_smallcnn/metrics.json").read_text())
    assert report["accuracy"] == shipped["final"]["test_accuracy"] and report["params"] > 0
    assert "✅" in run.stdout, "a correct accuracy() should pass its check"
    assert expect in report["failed"], report["failed"]


def test_copy_exercises_never_overwrites_a_learners_work(installed, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "01_mnist_baseline.ipynb").write_text("my work")
    code = "import qsal_lab; print(len(qsal_lab.copy_exercises('mine')))"
    run = run_installed(installed, code, tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == str(len(EXERCISES) - 1), run.stderr
    assert (tmp_path / "mine" / "01_mnist_baseline.ipynb").read_text() == "my work"


def test_install_cell_installs_qsal_lab_by_name(dists, tmp_path):
    # a fresh venv without qsal_lab, pip pointed at the wheel alone as if PyPI served it
    python = rehearsal.make_venv(tmp_path / "venv")
    env = rehearsal.clean_env(**rehearsal.offline_pip(dists[1].parent))
    source = nbtools.install_cell_source(("", ""))
    run = subprocess.run([str(python), "-c", source], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"installed qsal-lab=={VERSION};"), run.stdout
    where = subprocess.run([str(python), "-c", "import qsal_lab; print(qsal_lab.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where
    again = subprocess.run([str(python), "-c", source], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", ""), "installed: the cell must say nothing"


def test_colab_rehearsal(data_root, tmp_path):
    # tools/colab_rehearsal.py: a chapter and its exercise in a fresh venv holding the wheel (installed by
    # the chapter's own install cell), QSAL_DATA at the offline data; then the data layer without QSAL_DATA
    report = tmp_path / "rehearsal.json"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "colab_rehearsal.py"), "--workdir",
                          str(tmp_path / "work"), "--data", str(data_root), "--json", str(report)],
                         capture_output=True, text=True, env=rehearsal.clean_env(), timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["exercise_checks"] >= 1
    assert Path(result["qsal_lab_file"]).is_relative_to(tmp_path / "work" / "venv")
    assert "QSAL_DATA" in result["no_data_message"] and "missing" in result["qsal_data_listing"]
