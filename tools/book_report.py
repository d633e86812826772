"""The book's figures in one report: build and test times, what the browser test checked, and how long
each chapter took to execute. Writes book_report.json and book_report.md (bench/results/ by default).

    python tools/book_report.py                          # after `make book` (reads _build/)
    python tools/book_report.py --build _build/ci/_build # after `make test` (its ci build)
    python tools/book_report.py --build /tmp/book-ci/_build --out /tmp/report

Every number comes from a file a run wrote, never from here:

* per-chapter execution times: myst-nb's execution data in the build's Sphinx environment
  (<build>/.doctrees/environment.pickle; the same numbers the instructor guide's {nb-exec-table} shows);
* the budget: what chapter 1 printed in this build ("budget: book");
* the whole build's and `make test`'s wall-clock time: <build>/book_time.json and _build/test_time.json,
  {"seconds": ..., "budget": ...}, written by the Makefile when it times its targets (or given with
  --book-time / --test-time); without them the report says "not recorded" (the notebooks' summed
  execution time is a lower bound of the build, and is reported as that);
* the browser test's counts: browser_report.json beside the HTML folder (tests/test_browser.py).
"""

import argparse
import json
import pickle
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"book_build_seconds": 20 * 60, "make_test_seconds": 35 * 60}   # issue #13's budgets (2 cores)
BUDGET_LINE = re.compile(r"\bbudget: (ci|book|full)\b")


def execution_table(build):
    """[{document, seconds, succeeded, method}] from myst-nb's data in the build's environment."""
    pickle_path = Path(build) / ".doctrees" / "environment.pickle"
    if not pickle_path.is_file():
        raise FileNotFoundError(f"{pickle_path} is missing: point --build at a Jupyter Book _build folder "
                                "(the one holding html/ and .doctrees/) of a finished build")
    with open(pickle_path, "rb") as f:
        env = pickle.load(f)
    rows = []
    for document, data in sorted(getattr(env, "nb_metadata", {}).items()):
        run = data.get("exec_data")
        if run:
            rows.append({"document": document, "seconds": run.get("runtime"), "succeeded": bool(run.get("succeeded")),
                         "method": run.get("method")})
    return rows


def build_budget(html):
    """The budget the chapters printed in this build, or None."""
    for page in sorted(Path(html).glob("book/*.html")):
        found = BUDGET_LINE.search(page.read_text(errors="replace"))
        if found:
            return found[1]
    return None


def read_timing(path):
    """{"seconds": ..., ...} from a timing file, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    timing = json.loads(path.read_text())
    if not isinstance(timing.get("seconds"), (int, float)):
        raise ValueError(f"{path} has no number 'seconds': {timing}")
    return timing


def verdict(seconds, target):
    if seconds is None:
        return "not recorded"
    return "met" if seconds <= target else "MISSED"


def make_report(build, test_time=None, book_time=None):
    build = Path(build)
    html = build / "html"
    chapters = execution_table(build)
    book = read_timing(book_time or build / "book_time.json")
    test = read_timing(test_time or ROOT / "_build" / "test_time.json")
    browser_path = build / "browser_report.json"
    browser = json.loads(browser_path.read_text()) if browser_path.is_file() else None
    executed = [row["seconds"] for row in chapters if row["seconds"] is not None]
    budget = (book or {}).get("budget") or build_budget(html)
    book_verdict = verdict(book and book["seconds"], TARGETS["book_build_seconds"])
    if book and budget != "book":   # the 20-minute target is for the book budget only
        book_verdict = f"no target at the {budget or 'unknown'} budget"
    return {
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build": str(build),
        "budget": budget,
        "book_build": {"seconds": book and book["seconds"], "target_seconds": TARGETS["book_build_seconds"],
                       "verdict": book_verdict,
                       "source": str(book_time or build / "book_time.json") if book else None},
        "notebooks_executed_seconds": round(sum(executed), 1) if executed else None,
        "make_test": {"seconds": test and test["seconds"], "target_seconds": TARGETS["make_test_seconds"],
                      "verdict": verdict(test and test["seconds"], TARGETS["make_test_seconds"]),
                      "budget": test and test.get("budget")},
        "browser": (browser or {}).get("totals"),
        "browser_pages_with_problems": sorted(doc for doc, page in (browser or {}).get("pages", {}).items()
                                              if page.get("problems")),
        "chapters": chapters,
    }


def minutes(seconds):
    return "not recorded" if seconds is None else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def to_markdown(report):
    book, test, browser = report["book_build"], report["make_test"], report["browser"]
    lines = [f"# Book report ({report['written']})", "",
             f"Build: `{report['build']}`, budget `{report['budget'] or 'unknown'}`.", "",
             "| figure | value | target | verdict |", "| --- | --- | --- | --- |",
             f"| whole book build | {minutes(book['seconds'])} | ≤ {book['target_seconds'] // 60} min | {book['verdict']} |",
             f"| notebooks' execution, summed (a lower bound of the build) | {minutes(report['notebooks_executed_seconds'])} | | |",
             f"| `make test` | {minutes(test['seconds'])} | ≤ {test['target_seconds'] // 60} min | {test['verdict']} |"]
    if report["budget"] != "book":
        lines.append(f"\nThe build target is for the `book` budget; this build ran at `{report['budget']}`.")
    lines += ["", "## Browser test", ""]
    if browser:
        lines += ["| checked | count |", "| --- | ---: |"] + [f"| {key.replace('_', ' ')} | {value} |"
                                                           for key, value in browser.items()]
        if report["browser_pages_with_problems"]:
            lines.append("\nPages with problems: " + ", ".join(report["browser_pages_with_problems"]))
    else:
        lines.append("No browser_report.json beside the HTML: run tests/test_browser.py on this build "
                     "(QSAL_BOOK_HTML=<build>/html).")
    lines += ["", "## Execution per chapter", "", "| document | seconds | status |", "| --- | ---: | --- |"]
    for row in report["chapters"]:
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(f"| {row['document']} | {seconds} | {'ok' if row['succeeded'] else 'FAILED'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", type=Path, default=ROOT / "_build",
                        help="the Jupyter Book _build folder (html/ and .doctrees/; default _build)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where to write the report")
    parser.add_argument("--book-time", type=Path, help="timing JSON of the build (default <build>/book_time.json)")
    parser.add_argument("--test-time", type=Path, help="timing JSON of make test (default _build/test_time.json)")
    args = parser.parse_args(argv)
    try:
        report = make_report(args.build, test_time=args.test_time, book_time=args.book_time)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "book_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "book_report.md").write_text(to_markdown(report))
    print(to_markdown(report))
    print(f"wrote {args.out / 'book_report.json'} and {args.out / 'book_report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
