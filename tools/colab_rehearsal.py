"""A Colab rehearsal, as far as this machine allows: qsal-lab installed by name from its wheel into a fresh
venv, then a chapter and an exercise run there with no repository in sight.

    python tools/colab_rehearsal.py [--chapter 02_quantization_basics] [--workdir DIR] [--json report.json]

What it does, in order (each step prints one line, and the JSON report records it):

1. builds the sdist and the wheel (`python -m build`) from a copy of the files they are made of;
2. creates a fresh venv that does not hold qsal_lab. Its other packages (PyTorch, NumPy, Jupyter, ...)
   are this environment's, seen through a folder of links that leaves every qsal_lab entry out, the way
   Colab comes with PyTorch and NumPy installed (this machine can fetch no CPU PyTorch of its own);
3. executes the chapter, copied alone into a folder outside the repository, in a kernel of that venv,
   with pip pointed at the wheel as its only index (PIP_NO_INDEX, PIP_FIND_LINKS): its install cell must
   install `qsal-lab==<version>` by name, and qsal_lab must then be imported from the venv;
4. copies the exercises out of the installed package (`qsal_lab.copy_exercises`), runs the chapter's one
   untouched (each check must fail with its intended message) and its solution (every check passes);
5. without QSAL_DATA (and an empty cache), asks the data layer for MNIST: with download=False it must say
   which files are missing, where to get them and that QSAL_DATA points at a local copy; with the default
   download=True it either downloads (online) or says the same and why the download failed (offline).

Not rehearsed: Colab itself (its Python, its preinstalled package versions, its GPU runtime), and downloads
of the datasets and of qsal-lab from PyPI (this machine is offline but for package registries, and qsal-lab
is not published from here). tests/test_packaging.py runs this script; book/setup.md says the same.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what the sdist and the wheel are built from (MANIFEST.in and pyproject.toml say what goes in)
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "qsal_lab", "exercises"]
# never seen by the fresh venv: qsal_lab itself, and pip, which the venv has of its own
HIDDEN = ("qsal_lab", "qsal-lab", "__editable__", "pip")
KERNEL = "qsal-fresh-venv"


def step(message):
    print(f"[rehearsal] {message}", flush=True)


def build_dists(out: Path, python=sys.executable) -> tuple[Path, Path]:
    """(sdist, wheel) built from a copy of SOURCES (the repository stays untouched), the wheel from the sdist."""
    out = Path(out)
    src = out / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = out / "dist"
    run = subprocess.run([python, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"python -m build failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    return sdist, wheel


def dependency_view(folder: Path, site_packages=None) -> Path:
    """A folder of links to this environment's installed packages, qsal_lab's entries left out."""
    site_packages = Path(site_packages or sysconfig.get_paths()["purelib"]).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for entry in site_packages.iterdir():
        name = entry.name.lower().replace("-", "_")
        if entry.suffix == ".pth" or name == "__pycache__" or name.startswith(tuple(h.replace("-", "_") for h in HIDDEN)):
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def make_venv(path: Path, with_dependencies=True) -> Path:
    """A fresh venv (its own pip, no qsal_lab); with_dependencies, it also sees dependency_view's packages.
    Returns its python."""
    path = Path(path)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    python = path / "bin" / "python"
    if with_dependencies:
        # the venv's own old setuptools would hide the newer one PyTorch's metadata asks for
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True,
                       capture_output=True, env=clean_env())
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        view = dependency_view(path / "dependencies")
        (Path(purelib) / "zz_dependencies.pth").write_text(f"{view}\n")   # after the venv's own packages
        kernels = path / "share" / "jupyter" / "kernels" / KERNEL
        kernels.mkdir(parents=True)
        (kernels / "kernel.json").write_text(json.dumps({
            "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "fresh venv (qsal-lab from its wheel)", "language": "python"}))
    return python


def clean_env(**extra) -> dict:
    """The environment of a process that must not see the repository: no PYTHONPATH, no QSAL_DATA."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "QSAL_DATA", "QSAL_STANDIN", "VIRTUAL_ENV", "MPLBACKEND", "PIP_FIND_LINKS",
                        "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **{k: str(v) for k, v in extra.items()})
    return env


def offline_pip(wheel_dir: Path) -> dict:
    """pip settings under which 'qsal-lab==VERSION' resolves to the wheel alone, as if PyPI held it."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheel_dir)}


def execute(python: Path, notebook: Path, env: dict, cwd: Path, allow_errors=False, timeout=900) -> dict:
    """Run a notebook in the fresh venv's kernel (nbclient in that venv); the executed notebook as a dict."""
    out = notebook.with_suffix(".executed.ipynb")
    code = f"""
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read({str(notebook)!r}, as_version=4)
client = NotebookClient(nb, kernel_name={KERNEL!r}, timeout={timeout}, allow_errors={allow_errors!r},
                        resources={{"metadata": {{"path": {str(cwd)!r}}}}})
try:
    client.execute()
finally:
    nbformat.write(nb, {str(out)!r})
"""
    run = subprocess.run([str(python), "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{notebook.name} failed in the fresh venv:\n{run.stderr[-4000:]}")
    return json.loads(out.read_text())


def cell_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", "") if isinstance(output.get("text", ""), str) else "".join(output["text"]))
        parts.append(str(output.get("evalue", "")))
        parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def source(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def rehearse(chapter: str, workdir: Path, data: Path) -> dict:
    report = {"chapter": chapter, "steps": {}}
    t0 = time.time()
    sdist, wheel = build_dists(workdir / "build")
    report["sdist"], report["wheel"] = sdist.name, wheel.name
    report["steps"]["build"] = round(time.time() - t0, 1)
    step(f"built {sdist.name} and {wheel.name} ({time.time() - t0:.0f} s)")

    t0 = time.time()
    python = make_venv(workdir / "venv")
    found = subprocess.run([str(python), "-c", "import importlib.util; print(importlib.util.find_spec('qsal_lab'))"],
                           env=clean_env(), cwd=workdir, capture_output=True, text=True).stdout.strip()
    if found != "None":
        raise RuntimeError(f"the fresh venv already finds qsal_lab ({found}); it must come from the wheel only")
    report["steps"]["venv"] = round(time.time() - t0, 1)
    step(f"fresh venv {workdir / 'venv'} without qsal_lab ({time.time() - t0:.0f} s)")

    # 3. the chapter, alone in a folder, its install cell installing qsal-lab by name
    t0 = time.time()
    room = workdir / "colab"
    room.mkdir(exist_ok=True)
    notebook = room / f"{chapter}.ipynb"
    nb = json.loads((ROOT / "book" / notebook.name).read_text())
    nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                        "source": "import qsal_lab\nprint('QSAL_LAB_FILE', qsal_lab.__file__)"})
    notebook.write_text(json.dumps(nb))
    env = clean_env(QSAL_DATA=data, QSAL_BUDGET="ci", **offline_pip(wheel.parent))
    ran = execute(python, notebook, env, room)
    install = next(c for c in ran["cells"] if c.get("metadata", {}).get("qsal", {}).get("launch") == "install")
    said = cell_text(install)
    version = wheel.name.split("-")[1]
    if f"installed qsal-lab=={version}" not in said:
        raise RuntimeError(f"the install cell did not install qsal-lab=={version} by name; it printed: {said!r}")
    where = cell_text(ran["cells"][-1]).split("QSAL_LAB_FILE", 1)[-1].strip()
    if not Path(where).resolve().is_relative_to((workdir / "venv").resolve()):
        raise RuntimeError(f"the chapter imported qsal_lab from {where}, not from the fresh venv")
    report["steps"]["chapter"] = round(time.time() - t0, 1)
    report["qsal_lab_file"] = where
    step(f"{chapter}: install cell installed qsal-lab=={version} by name, every cell ran, qsal_lab from "
         f"{where} ({time.time() - t0:.0f} s)")

    # 4. the exercise from the installed package: untouched, every check fails as intended; solved, all pass
    t0 = time.time()
    mine = room / "my-exercises"
    subprocess.run([str(python), "-c", f"import qsal_lab; qsal_lab.copy_exercises({str(mine)!r})"],
                   env=env, cwd=room, check=True, capture_output=True)
    ran = execute(python, mine / notebook.name, env, mine, allow_errors=True)
    checks = [c for c in ran["cells"] if "check" in c.get("metadata", {}).get("tags", [])]
    wrong = [f"{source(c)!r}: expected {c['metadata']['qsal']['expect']!r}, got {cell_text(c)[-300:]!r}"
             for c in checks if c["metadata"]["qsal"]["expect"] not in cell_text(c)]
    if not checks or wrong:
        raise RuntimeError("the untouched exercise's checks did not fail as intended:\n" + "\n".join(wrong))
    solved = mine / f"{chapter}_solved.ipynb"
    shutil.copy(ROOT / "solutions" / notebook.name, solved)   # a learner's notebook, filled in
    execute(python, solved, env, mine)
    report["steps"]["exercise"] = round(time.time() - t0, 1)
    report["exercise_checks"] = len(checks)
    step(f"exercise {chapter}: {len(checks)} checks fail as intended untouched, all pass solved "
         f"({time.time() - t0:.0f} s)")

    # 5. no QSAL_DATA: the data layer names what is missing
    cache = workdir / "empty-cache"
    cache.mkdir(exist_ok=True)
    no_data = clean_env(XDG_CACHE_HOME=cache)
    probe = ("from qsal_lab.data import DataError, load_dataset\n"
             "try:\n    load_dataset('mnist', 'test', download=False)\n"
             "except DataError as e:\n    print(e)\nelse:\n    print('LOADED')\n")
    said = subprocess.run([str(python), "-c", probe], env=no_data, cwd=room, capture_output=True, text=True)
    listed = subprocess.run([str(workdir / "venv" / "bin" / "qsal"), "data"], env=no_data, cwd=room,
                            capture_output=True, text=True)
    message = said.stdout
    needed = ["train-images-idx3-ubyte", "QSAL_DATA", str(cache / "qsal_lab" / "data")]
    if said.returncode != 0 or "LOADED" in message or not all(n in message for n in needed):
        raise RuntimeError(f"without QSAL_DATA the data layer did not say what is missing:\n{message}{said.stderr}")
    if listed.returncode != 0 or "missing" not in listed.stdout:
        raise RuntimeError(f"`qsal data` without QSAL_DATA:\n{listed.stdout}{listed.stderr}")
    report["no_data_message"] = message.strip()
    report["qsal_data_listing"] = listed.stdout.strip()
    step("without QSAL_DATA: " + message.strip().splitlines()[0])
    # the default, download=True: online it downloads; offline (here) the message also says why it could not
    said = subprocess.run([str(python), "-c", probe.replace(", download=False", "")], env=no_data, cwd=room,
                          capture_output=True, text=True, timeout=600)
    if said.returncode != 0 or ("LOADED" not in said.stdout and not all(n in said.stdout for n in needed)):
        raise RuntimeError(f"without QSAL_DATA, load_dataset('mnist', 'test') said:\n{said.stdout}{said.stderr}")
    report["no_data_download"] = said.stdout.strip()
    step("without QSAL_DATA, download=True: " + said.stdout.strip().splitlines()[0])
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapter", default="02_quantization_basics", help="book/<chapter>.ipynb and its exercise")
    parser.add_argument("--workdir", type=Path, help="where the build, the venv and the notebooks go "
                                                      "(default: a temporary folder, removed afterwards)")
    parser.add_argument("--data", type=Path, default=os.environ.get("QSAL_DATA") or ROOT.parent / "shared" / "data",
                        help="the offline data folder for QSAL_DATA (default: $QSAL_DATA, else ../shared/data)")
    parser.add_argument("--json", type=Path, help="write the report there")
    args = parser.parse_args(argv)
    if not (ROOT / "book" / f"{args.chapter}.ipynb").is_file():
        print(f"error: no chapter book/{args.chapter}.ipynb", file=sys.stderr)
        return 2
    if not Path(args.data, "MNIST").is_dir():
        print(f"error: no MNIST/ in {args.data}; give --data (or QSAL_DATA) the offline data folder", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qsal-rehearsal-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = rehearse(args.chapter, workdir.resolve(), Path(args.data).resolve())
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    step("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
