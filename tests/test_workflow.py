"""The workflows cannot run here; this reads them and checks what they promise. The publishing workflow
(.github/workflows/book.yml): triggers, Pages permissions, a build with real data, the Pages artifact and
deployment, and that its config step gives the published book its repository and launch buttons while
the committed _config.yml names no repository. The release workflow (release.yml): a version tag builds
the sdist and the wheel and publishes them to PyPI by trusted publishing, with no token."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


@pytest.fixture(scope="module")
def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def steps(workflow, job):
    return workflow["jobs"][job]["steps"]


def step_using(workflow, job, action):
    found = [s for s in steps(workflow, job) if s.get("uses", "").split("@")[0] == action]
    assert found, f"job {job} has no step using {action}"
    return found[0]


def test_triggers_and_permissions(workflow):
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert on["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in on
    assert workflow["permissions"]["pages"] == "write"
    assert workflow["permissions"]["id-token"] == "write"


def test_build_job_builds_with_real_data_and_uploads_the_html(workflow):
    actions = [s.get("uses", "").split("@")[0] for s in steps(workflow, "build")]
    assert actions[:2] == ["actions/checkout", "actions/setup-python"]
    assert str(step_using(workflow, "build", "actions/setup-python")["with"]["python-version"]) == "3.11"
    runs = [s.get("run", "") for s in steps(workflow, "build")]
    assert any(re.search(r"^make book\b", run, re.M) for run in runs), "no step runs `make book`"
    # real data: nothing points the build at a local copy or the CIFAR-10 stand-in
    text = WORKFLOW.read_text()
    for name in ("QSAL_DATA", "QSAL_STANDIN"):
        assignments = re.findall(rf"{name}\s*[:=]", text)
        assert not assignments, f"the workflow sets {name}: the published book must download real data"
    upload = step_using(workflow, "build", "actions/upload-pages-artifact")
    assert upload["with"]["path"] == "_build/html"


def test_deploy_job_publishes_to_pages(workflow):
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert deploy["environment"]["name"] == "github-pages"
    step = step_using(workflow, "deploy", "actions/deploy-pages")
    assert "steps.deployment.outputs.page_url" in deploy["environment"]["url"] and step["id"] == "deployment"


def config_step(workflow):
    found = [s for s in steps(workflow, "build") if "REPOSITORY_URL" in s.get("env", {})]
    assert len(found) == 1, "expected one step that writes the repository's address into _config.yml"
    return found[0]


def test_committed_config_names_no_repository():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert not config.get("repository", {}).get("url"), "_config.yml must not name a repository address"
    assert not config["html"]["use_repository_button"]
    assert not config["launch_buttons"]["colab_url"] and not config["launch_buttons"]["binderhub_url"]


def test_config_step_fills_the_buttons_from_githubs_variables(workflow, tmp_path):
    step = config_step(workflow)
    assert step["env"]["REPOSITORY_URL"] == "${{ github.server_url }}/${{ github.repository }}"
    assert step["env"]["BRANCH"] == "${{ github.ref_name }}"
    # run the step's own Python on a copy of _config.yml, as GitHub would
    script = re.search(r"<<'PY'\n(.*?)^\s*PY\s*$", step["run"], re.S | re.M).group(1)
    (tmp_path / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    env = {**os.environ, "REPOSITORY_URL": "https://github.example/owner/repo", "BRANCH": "main"}
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True)
    written = yaml.safe_load((tmp_path / "_config.yml").read_text())
    assert written["repository"] == {"url": "https://github.example/owner/repo", "branch": "main"}
    assert written["html"]["use_repository_button"] is True
    assert written["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert written["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    original = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert written["execute"] == original["execute"] and written["sphinx"] == original["sphinx"]


def test_launch_cells_get_the_same_address_before_the_build(workflow):
    # the install cells and Colab badges read _config.yml's repository, so they run after it is written
    runs = [s.get("run", "") for s in steps(workflow, "build")]
    config_at = steps(workflow, "build").index(config_step(workflow))
    launch = [i for i, run in enumerate(runs) if re.search(r"tools/nbtools\.py launch-cells\s*$", run, re.M)]
    book = [i for i, run in enumerate(runs) if re.search(r"^make book\b", run, re.M)]
    assert launch, "no step runs `tools/nbtools.py launch-cells` (every notebook, from _config.yml)"
    assert config_at < launch[0] < book[0], "launch-cells must run after the config step and before `make book`"


def test_binder_installs_the_project_with_the_makefiles_pytorch():
    makefile = (ROOT / "Makefile").read_text()
    torch_spec = re.search(r"^TORCH_SPEC \?= (.+)$", makefile, re.M).group(1).split()
    requirements = [line.strip() for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert sorted(r for r in requirements if not r.startswith("--")) == sorted(torch_spec)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements   # Binder has no GPU
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable (repo2docker runs it)"
    assert re.search(r"^python -m pip install .*-e \.$", post_build.read_text(), re.M)
    assert re.fullmatch(r"python-3\.\d+", (ROOT / "binder" / "runtime.txt").read_text().strip())


# ----------------------------------------------------------------------------
# .github/workflows/release.yml: a version tag builds the sdist and the wheel and publishes them to PyPI

RELEASE = ROOT / ".github" / "workflows" / "release.yml"


@pytest.fixture(scope="module")
def release():
    return yaml.safe_load(RELEASE.read_text())


def named_step(workflow, job, words):
    found = [s for s in steps(workflow, job) if words in s.get("name", "")]
    assert len(found) == 1, f"job {job}: expected one step named '...{words}...'"
    return found[0]


def test_release_runs_on_version_tags_only(release):
    on = release.get("on", release.get(True))
    assert on == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {"contents": "read"}, "only the publish job may ask for an OIDC token"


def test_release_builds_checks_and_uploads_the_dists(release):
    runs = "\n".join(s.get("run", "") for s in steps(release, "build"))
    assert re.search(r"^python -m build$", runs, re.M), "the build job must run `python -m build` (sdist + wheel)"
    assert "twine check --strict dist/*" in runs
    upload = step_using(release, "build", "actions/upload-artifact")
    assert upload["with"] == {"name": "dist", "path": "dist/"}


def test_release_publishes_with_trusted_publishing_and_no_token(release):
    publish = release["jobs"]["publish"]
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    download = step_using(release, "publish", "actions/download-artifact")
    assert download["with"] == {"name": "dist", "path": "dist/"}
    step = step_using(release, "publish", "pypa/gh-action-pypi-publish")
    assert step["uses"].endswith("@release/v1") and not step.get("with"), "no password, token or repository URL"
    assert "secrets." not in RELEASE.read_text(), "trusted publishing needs no secret"


def test_release_refuses_a_tag_that_is_not_the_packages_version(release, tmp_path):
    script = named_step(release, "build", "tag names the package's version")["run"]
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "qsal_lab" / "__init__.py").read_text()).group(1)
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / f"qsal_lab-{version}-py3-none-any.whl").write_text("")
    for tag, ok in ((f"v{version}", True), ("v99.0.0", False)):
        run = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "GITHUB_REF_NAME": tag})
        assert (run.returncode == 0) == ok, (tag, run.stderr)
    assert "set __version__ in qsal_lab/__init__.py" in run.stderr


def test_release_points_the_readmes_links_at_the_tag(release, tmp_path):
    step = named_step(release, "build", "Absolute links in the README")
    assert step["env"]["BLOB"] == "${{ github.server_url }}/${{ github.repository }}/blob/${{ github.ref_name }}"
    script = re.search(r"<<'PY'\n(.*?)^\s*PY\s*$", step["run"], re.S | re.M).group(1)
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text())
    env = {**os.environ, "BLOB": "https://github.example/o/r/blob/v1", "RAW": "https://raw.example/o/r/v1"}
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env, check=True)
    links = re.findall(r"(!?)\[[^\]]*\]\(([^)\s]+)\)", (tmp_path / "README.md").read_text())
    assert links, "the README has no links to check"
    relative = [target for _, target in links if not re.match(r"https?://|#", target)]
    assert not relative, f"links PyPI's page could not follow: {relative}"
    images = [target for image, target in links if image]
    assert images and all(t.startswith("https://raw.example/o/r/v1/") for t in images), images
