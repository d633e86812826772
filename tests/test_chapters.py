"""The pages describe the book that exists: README.md's and book/intro.md's chapter lists are written from
_toc.yml (tools/chapters.py), name every chapter, and no page calls a written chapter planned."""
import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("chapters", ROOT / "tools" / "chapters.py")
chapters = importlib.util.module_from_spec(_spec)
sys.modules["chapters"] = chapters   # its dataclass looks its module up there
_spec.loader.exec_module(chapters)


def between_markers(path):
    text = path.read_text()
    return text.split(chapters.BEGIN, 1)[1].split(chapters.END, 1)[0]


def toc_chapters():
    return [p for p in chapters.pages() if p.number]


def test_there_are_eleven_chapters_numbered_in_toc_order():
    found = toc_chapters()
    assert [p.number for p in found] == list(range(1, 12))
    assert [p.doc for p in found] == sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def test_chapter_lists_are_up_to_date():
    assert chapters.stale() == [], "run `python tools/chapters.py write` and commit README.md and book/intro.md"


@pytest.mark.parametrize("page", toc_chapters(), ids=lambda p: p.doc)
def test_every_chapter_in_the_toc_is_in_the_intro_and_the_readme(page):
    intro, readme = between_markers(chapters.INTRO), between_markers(chapters.README)
    assert re.search(rf"^{page.number}\. {{doc}}`{page.doc}`: \S", intro, re.M), \
        f"book/intro.md's list has no line for chapter {page.number}, {page.doc}"
    assert f"{page.number}. **{page.title}** — " in readme, f"README.md's list has no line for {page.title!r}"


def test_every_other_toc_page_is_in_the_intro():
    intro = between_markers(chapters.INTRO)
    others = [p for p in chapters.pages() if not p.number]
    assert {"setup", "command_line", "tests_and_benchmarks", "instructor_guide"} <= {p.doc for p in others}
    missing = [p.doc for p in others if f"- {{doc}}`{p.doc}`: " not in intro]
    assert not missing, f"book/intro.md does not list {missing}"


def test_a_toc_page_without_a_line_fails_by_name(tmp_path):
    lines = (ROOT / "book" / "chapters.yml").read_text()
    cut = re.sub(r"^09_medical_imaging:\n(  .*\n)+", "", lines, flags=re.M)
    assert cut != lines
    (tmp_path / "chapters.yml").write_text(cut)
    with pytest.raises(ValueError, match="no 'short' line for 09_medical_imaging"):
        chapters.pages(lines=tmp_path / "chapters.yml")


def test_a_list_missing_a_chapter_is_stale(tmp_path, monkeypatch):
    intro = tmp_path / "intro.md"
    shutil.copy(chapters.INTRO, intro)
    intro.write_text(re.sub(r"^8\. \{doc\}`08_cifar10_resnet20`.*\n", "", intro.read_text(), flags=re.M))
    monkeypatch.setattr(chapters, "INTRO", intro)
    assert intro in chapters.stale()


def test_no_page_calls_an_existing_chapter_planned():
    claims = chapters.planned_claims()
    assert not claims, "pages that call a written chapter planned:\n" + "\n".join(claims)


def test_planned_claims_are_caught_and_plain_uses_are_not(tmp_path):
    # the landing page as it was (issue 24), and a sentence where "planned" names no chapter
    page = tmp_path / "old_intro.md"
    page.write_text(
        "- **Real images** (planned, not yet written). CIFAR-10 and medical images from MedMNIST.\n\n"
        "This edition has chapters 1-7. Chapters 8\n(CIFAR-10) and 9 (MedMNIST) are planned.\n\n"
        "The medical chapters (planned) will use MedMNIST.\n\n"
        "- ONNX Runtime executes a graph it\n  planned once.\n")
    claims = chapters.planned_claims(files=[page])
    assert len(claims) == 3, claims
    assert not any("graph it planned once" in c for c in claims)


def test_readme_fits_on_two_screens():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert 100 <= lines <= 150, f"README.md has {lines} lines; the newcomer's page is 100-150 (reference goes to book/)"


def test_readmes_links_and_screenshot_exist():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [t for t in targets if not re.match(r"[a-z]+:|#", t)]
    missing = [t for t in relative if not (ROOT / t).exists()]
    assert not missing, f"README.md links files that do not exist: {missing}"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert len(images) == 1, "the README shows one screenshot of a rendered page"
    png = (ROOT / images[0]).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 300_000, "the screenshot is a small PNG"
