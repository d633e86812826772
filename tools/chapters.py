"""The list of the book's chapters in README.md and book/intro.md, written from _toc.yml.

    python tools/chapters.py write     # rewrite both lists
    python tools/chapters.py check     # exit 1 if a list is stale, or a page calls a chapter planned

Each list sits between the lines `<!-- chapters: begin ... -->` and `<!-- chapters: end -->` and is
written from three sources, so that it cannot drift from the book: _toc.yml (which pages, in which
order and part), each chapter's own title (the first heading of book/NN_name.ipynb) and one line per
page in book/chapters.yml (what it shows; what its exercise has the learner write).
tests/test_chapters.py runs `check`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOC = ROOT / "_toc.yml"
LINES = ROOT / "book" / "chapters.yml"
README = ROOT / "README.md"
INTRO = ROOT / "book" / "intro.md"
BEGIN = "<!-- chapters: begin (written by tools/chapters.py from _toc.yml and book/chapters.yml; do not edit) -->"
END = "<!-- chapters: end -->"
SHORT_MAX = 90
# words that call something unwritten; a page that says them about an existing chapter is out of date
PLANNED = re.compile(r"\b(planned|not yet written|not written yet|coming soon|to be written|forthcoming|"
                     r"in preparation|upcoming|will be added)\b", re.I)


@dataclass
class Page:
    doc: str        # the name in book/, without suffix: '03_ptq'
    part: str       # its part's caption in _toc.yml
    title: str      # its first heading
    number: int | None   # chapters (notebooks) are numbered 1, 2, ...; other pages are not
    short: str
    shows: str
    exercise: str


def first_heading(path: Path) -> str:
    if path.suffix == ".ipynb":
        text = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                         if c["cell_type"] == "markdown")
    else:
        text = path.read_text()
    match = re.search(r"^# (.+)$", text, re.M)
    if not match:
        raise ValueError(f"{path.relative_to(ROOT)} has no '# Title' heading")
    return match.group(1).strip()


def pages(toc=TOC, lines=LINES) -> list[Page]:
    """Every page _toc.yml lists under a part, in order, with its title and its lines from chapters.yml."""
    config = yaml.safe_load(Path(toc).read_text())
    try:
        described = yaml.safe_load(Path(lines).read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{Path(lines).relative_to(ROOT)} is not valid YAML (quote a line that holds ': '): {err}")
    found, number = [], 0
    for part in config.get("parts", []):
        for entry in part.get("chapters", []):
            doc = Path(entry["file"]).name
            path = next((ROOT / f"{entry['file']}{s}" for s in (".ipynb", ".md")
                         if (ROOT / f"{entry['file']}{s}").is_file()), None)
            if path is None:
                raise ValueError(f"_toc.yml lists {entry['file']}, which is neither a .ipynb nor a .md file")
            line = described.get(doc)
            if not line or not line.get("short"):
                raise ValueError(f"book/chapters.yml has no 'short' line for {doc}, listed in _toc.yml; add one")
            if len(line["short"]) > SHORT_MAX:
                raise ValueError(f"book/chapters.yml: {doc}'s short line has {len(line['short'])} characters "
                                 f"(at most {SHORT_MAX})")
            is_chapter = path.suffix == ".ipynb"
            if is_chapter:
                number += 1
                if not re.match(rf"0*{number}_", doc):
                    raise ValueError(f"{doc} is chapter {number} in _toc.yml: its name should start with {number:02d}_")
                missing = [k for k in ("shows", "exercise") if not line.get(k)]
                if missing:
                    raise ValueError(f"book/chapters.yml: chapter {doc} needs {' and '.join(missing)}")
            found.append(Page(doc, part.get("caption", ""), first_heading(path), number if is_chapter else None,
                              line["short"], line.get("shows", ""), line.get("exercise", "")))
    unknown = sorted(set(described) - {p.doc for p in found})
    if unknown:
        raise ValueError(f"book/chapters.yml describes pages _toc.yml does not list: {', '.join(unknown)}")
    return found


def readme_list(all_pages) -> str:
    """One line per chapter, then the other pages in one line."""
    out = [f"{p.number}. **{p.title}** — {p.short}" for p in all_pages if p.number]
    others = [p.title for p in all_pages if not p.number]
    out += ["", "Also in the book: " + " · ".join(others) + "."]
    return "\n".join(out)


def intro_list(all_pages) -> str:
    """The chapters by part, each linked with its title, what it shows and its exercise."""
    out, part = [], None
    for p in all_pages:
        if not p.number:
            continue
        if p.part != part:
            out += (["", f"**{p.part}**", ""] if out else [f"**{p.part}**", ""])
            part = p.part
        out.append(f"{p.number}. {{doc}}`{p.doc}`: {p.shows}. *Exercise:* {p.exercise}.")
    others = [f"- {{doc}}`{p.doc}`: {p.short}" for p in all_pages if not p.number]
    return "\n".join(out + ["", "And, to look things up:", ""] + others)


def replace_between_markers(text: str, body: str, where: str) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{where} needs one line\n  {BEGIN}\nfollowed by one line\n  {END}\n"
                         "where the chapter list goes")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def targets():
    all_pages = pages()
    return {README: readme_list(all_pages), INTRO: intro_list(all_pages)}


def stale() -> list[Path]:
    return [path for path, body in targets().items()
            if replace_between_markers(path.read_text(), body, path.name) != path.read_text()]


def planned_claims(all_pages=None, files=None) -> list[str]:
    """Paragraphs of README.md and the book's pages that call an existing chapter planned or unwritten."""
    all_pages = all_pages or pages()
    names = {"chapter", "chapters"} | {p.doc for p in all_pages}
    names |= {p.title.split(":")[0].lower() for p in all_pages if p.number}
    files = files or [README, *sorted((ROOT / "book").glob("*.md")), *sorted((ROOT / "book").glob("*.ipynb"))]
    found = []
    for path in files:
        if path.suffix == ".ipynb":
            text = "\n\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                               if c["cell_type"] == "markdown")
        else:
            text = path.read_text()
        # a paragraph or a list item is the unit: "- **Real images** (planned). CIFAR-10 and ..."
        for unit in re.split(r"\n\s*\n|\n(?=\s*(?:[-*]|\d+\.)\s)", text):
            flat = " ".join(unit.split())
            if PLANNED.search(flat) and any(re.search(rf"\b{re.escape(n)}\b", flat, re.I) for n in names):
                found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {flat[:200]}")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["write", "check"])
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            for path, body in targets().items():
                new = replace_between_markers(path.read_text(), body, path.name)
                if new != path.read_text():
                    path.write_text(new)
                    print(f"wrote the chapter list in {path.relative_to(ROOT)}")
            return 0
        problems = [f"{p.relative_to(ROOT)}: the chapter list is stale" for p in stale()]
        problems += [f"calls an existing chapter planned: {claim}" for claim in planned_claims()]
        for problem in problems:
            print(problem)
        if problems:
            print("run `python tools/chapters.py write` (and reword what calls a written chapter planned)")
            return 1
        print("chapter lists are up to date")
        return 0
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
