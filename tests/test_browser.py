"""The rendered book in a real browser: every page in _toc.yml loads offline and shows what it should.

Chromium (Debian's /usr/bin/chromium, driven by Playwright; never `playwright install`) opens
each page from a local http.server and the test fails, naming the page, on: a JavaScript error,
a failed request or any request off 127.0.0.1, a broken image, formulas MathJax left as TeX
or could not typeset, a Markdown table left as a paragraph of "|", a stray `PosixPath(` in the
page, a widget that does not render, and a slider whose move changes nothing in its output.
It reads the book that tests/test_book.py builds (the `book_html` fixture: one build per
session), or an already built one given by QSAL_BOOK_HTML. One full-page screenshot per page
goes to _build/screenshots/<page>.png, to look at.
"""

import functools
import http.server
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("QSAL_SCREENSHOTS") or ROOT / "_build" / "screenshots")
LOCAL_HOST = "127.0.0.1"
TIMEOUT_MS = 30_000   # per wait; pages are local, so this only trips on a real hang

pytestmark = pytest.mark.slow


def toc_documents():
    return list(parse_toc_yaml(ROOT / "_toc.yml"))


# --------------------------------------------------------------------------------------------
# fixtures: the browser, a local server for the built book

@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless Chromium context with a fresh profile (skips, saying why, if there is none)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright (it is in the test extra)")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def book_url(book_html):
    """http://127.0.0.1:<free port>/ serving the built book."""
    server = http.server.ThreadingHTTPServer((LOCAL_HOST, 0), functools.partial(_QuietHandler, directory=str(book_html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOCAL_HOST}:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser_report(book_html):
    """What the pages showed and what was driven, written after every page (a partial run still
    leaves a true report): {"pages": {doc: counts}, "totals": {...}}."""
    path = Path(os.environ.get("QSAL_BROWSER_REPORT") or book_html.parent / "browser_report.json")
    report = {"book_html": str(book_html), "pages": {}}

    def record(doc, counts):
        report["pages"][doc] = counts
        keys = [k for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)]
        report["totals"] = {"pages": len(report["pages"]),
                            "pages_passed": sum(not c["problems"] for c in report["pages"].values()),
                            **{k: sum(c.get(k, 0) for c in report["pages"].values()) for k in keys if k != "problems"}}
        report["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    record.path = path
    return record


@pytest.fixture(scope="module")
def screenshots(pytestconfig):
    """_build/screenshots, emptied; tests/conftest.py names it in pytest's summary."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    pytestconfig.qsal_screenshots = SCREENSHOTS
    return SCREENSHOTS


# --------------------------------------------------------------------------------------------
# what the page shows, read in the browser

# Text nodes a reader sees outside code (code may quote TeX or paths on purpose)
VISIBLE_PROSE_TEXT = """() => {
  const skip = "pre, code, script, style, textarea, mjx-container, mjx-assistive-mml";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const texts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip) || parent.getClientRects().length === 0) continue;
    texts.push(node.textContent);
  }
  return texts.join(" ");
}"""

PIPE_PARAGRAPHS = """() => Array.from(document.querySelectorAll("p"))
  .map(p => p.innerText.trim())
  .filter(t => t.startsWith("|") && (/\\|\\s*:?-{3,}/.test(t) || (t.match(/\\|/g) || []).length >= 6))
  .map(t => t.slice(0, 80))"""

BROKEN_IMAGES = """() => Array.from(document.images)
  .filter(img => img.complete && img.naturalWidth === 0)
  .map(img => (img.getAttribute("src") || "").slice(0, 80) || "(no src)")"""

# TeX errors, and macros MathJax does not know (its noundefined extension shows them in red)
MATHJAX_ERRORS = """() => Array.from(document.querySelectorAll("mjx-merror"))
  .map(e => e.getAttribute("data-mjx-error") || e.textContent)
  .concat(Array.from(document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]'))
          .map(e => e.textContent).filter(t => t.startsWith("\\\\")).map(t => "undefined macro " + t))"""

# Each widget-view script the page carries, and whether the manager rendered a view for it
WIDGET_VIEWS = """() => {
  const stateScript = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
  const state = stateScript ? JSON.parse(stateScript.textContent).state : {};
  return Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
    .map(script => { const id = JSON.parse(script.textContent).model_id, area = script.previousElementSibling;
                     return {model: ((state[id] || {}).model_name || "model missing from the widget state") + " " + id,
                             rendered: !!(area && area.classList.contains("widget-subarea")
                                          && area.querySelector(".jupyter-widgets"))}; });
}"""

# What the output around a slider shows, without the slider itself: the images on screen
# and the text. Moving a slider must change this.
OUTPUT_FINGERPRINT = """(handle) => {
  const slider = handle.closest(".widget-slider") || handle;
  const output = handle.closest(".cell_output") || handle.closest(".widget-subarea") || document.body;
  const images = Array.from(output.querySelectorAll("img"))
    .filter(img => !slider.contains(img) && img.getClientRects().length > 0)
    .map(img => img.src);
  const text = output.innerText.replace(slider.innerText, "");
  return JSON.stringify({images, text});
}"""


def _wait_for_mathjax(page):
    """Wait until MathJax has typeset the page; a problem message, or None."""
    has_math = page.evaluate("() => document.querySelector('.math, .MathJax, mjx-container') !== null")
    if not has_math:
        return None
    started = page.evaluate("""(timeout) => new Promise(resolve => {
        // MathJax replaces its configuration object by itself, with a startup promise, once loaded
        const startup = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
        const settle = () => MathJax.startup.promise.then(() => resolve(true), () => resolve(false));
        if (startup()) return settle();
        const began = Date.now();
        const poll = setInterval(() => {
          if (startup()) { clearInterval(poll); settle(); }
          else if (Date.now() - began > timeout) { clearInterval(poll); resolve(false); }
        }, 50);
        setTimeout(() => resolve(false), 2 * timeout);  // a startup promise that never settles
    })""", TIMEOUT_MS)
    return None if started else "the page has formulas but MathJax did not start (or its startup failed)"


def _check_sliders(page):
    """Move every slider one step with the keyboard; problems for those whose output stays the same."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    problems = []
    handles = page.locator(".jupyter-widgets .noUi-handle")
    for i in range(handles.count()):
        handle = handles.nth(i)
        label = handle.evaluate("h => { const s = h.closest('.widget-slider'); const l = s && s.querySelector('.widget-label');"
                                " return (l && l.innerText.trim()) || 'slider ' + " + str(i + 1) + "; }")
        handle.scroll_into_view_if_needed()
        before = handle.evaluate(OUTPUT_FINGERPRINT)
        at_end = handle.evaluate("h => h.getAttribute('aria-valuenow') === h.getAttribute('aria-valuemax')")
        handle.focus()
        page.keyboard.press("ArrowLeft" if at_end else "ArrowRight")
        try:
            page.wait_for_function(f"([h, before]) => ({OUTPUT_FINGERPRINT})(h) !== before",
                                   arg=[handle.element_handle(), before], timeout=5_000)
        except PlaywrightTimeout:  # nothing changed
            problems.append(f"moving the slider {label!r} one step changes nothing in its output")
    return problems


def _check_toggle_buttons(page):
    """Click every toggle button that is not selected; problems for clicks that change nothing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    problems, clicked = [], 0
    buttons = page.locator(".widget-toggle-buttons button.widget-toggle-button")
    for i in range(buttons.count()):
        button = buttons.nth(i)
        if "mod-active" in (button.get_attribute("class") or ""):
            continue
        label = button.inner_text().strip() or f"toggle button {i + 1}"
        button.scroll_into_view_if_needed()
        before = button.evaluate(OUTPUT_FINGERPRINT)
        button.click()
        clicked += 1
        try:
            page.wait_for_function(f"([b, before]) => ({OUTPUT_FINGERPRINT})(b) !== before",
                                   arg=[button.element_handle(), before], timeout=5_000)
        except PlaywrightTimeout:
            problems.append(f"clicking the toggle button {label!r} changes nothing in its output")
    return problems, clicked


# The interactive figures the book promises, each driven above: a page that loses one fails
EXPECTED_CONTROLS = {
    "book/02_quantization_basics": {"sliders_moved": 1},                           # the bit-width slider
    "book/05_saliency_maps": {"sliders_moved": 1, "toggle_buttons_clicked": 1},    # the saliency viewer
    "book/09_medical_imaging": {"sliders_moved": 1},                               # the operating-point slider
}

# What the page carries, counted after MathJax and the widgets are done
PAGE_COUNTS = """() => ({
  images: Array.from(document.images).filter(img => img.complete && img.naturalWidth > 0).length,
  formulas: document.querySelectorAll("mjx-container").length,
  widget_views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
  sliders: document.querySelectorAll(".jupyter-widgets .noUi-handle").length,
  toggle_button_groups: document.querySelectorAll(".widget-toggle-buttons").length,
})"""

LINKS = """() => Array.from(document.querySelectorAll("a[href]")).map(a => ({
  href: a.href, raw: a.getAttribute("href"), text: a.innerText.trim().slice(0, 60),
  download: a.classList.contains("download"), colab_badge: !!a.querySelector('img[alt="Open in Colab"]')}))"""

_ANCHORS = {}


def _anchors(html_file):
    """The ids (and names) an HTML file defines, read once per file."""
    if html_file not in _ANCHORS:
        text = html_file.read_text(errors="replace")
        _ANCHORS[html_file] = set(re.findall(r'\b(?:id|name)="([^"]+)"', text))
    return _ANCHORS[html_file]


def _broken_internal_links(links, book_html, book_url):
    """Problems for links into the build that lead to no file, or to no such anchor; and the count."""
    problems, checked = [], 0
    root = urlsplit(book_url)
    for link in links:
        url = urlsplit(link["href"])
        if url.scheme not in ("http", "https") or url.netloc != root.netloc:
            continue  # another host (tested offline: none on a local build) or mailto:, javascript:
        checked += 1
        target = book_html / unquote(url.path).lstrip("/")
        if url.path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"link {link['raw']!r} ({link['text']!r}) leads to no file: {target.relative_to(book_html)}")
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in _anchors(target):
            problems.append(f"link {link['raw']!r} ({link['text']!r}): {target.relative_to(book_html)} has no anchor "
                            f"#{unquote(url.fragment)}")
    return problems, checked


def _exercise_link_problems(doc, links, book_html):
    """A chapter must link its exercise (exercises/<name>.ipynb, downloaded from the build) and carry
    the Colab badge for it (to Colab with a repository, else the same download)."""
    name = Path(doc).name + ".ipynb"
    if not (ROOT / "exercises" / name).is_file():
        return []
    downloads = [link for link in links if link["download"] and link["href"].endswith("/" + name)
                 and "/_downloads/" in link["href"]]
    badges = [link for link in links if link["colab_badge"]]
    problems = []
    if not downloads:
        problems.append(f"no download link to its exercise {name} (Try it yourself)")
    if not badges:
        problems.append("no Colab badge for its exercise (tools/nbtools.py launch-cells)")
    for badge in badges:
        colab = urlsplit(badge["href"]).netloc == "colab.research.google.com"
        if not badge["href"].endswith(("/exercises/" + name) if colab else ("/" + name)):
            problems.append(f"the Colab badge links {badge['href']}, not exercises/{name}")
    return problems


# --------------------------------------------------------------------------------------------
# the test: one per page

@pytest.mark.parametrize("doc", toc_documents())
def test_page_in_browser(doc, chromium, book_html, book_url, screenshots, browser_report):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if not (book_html / f"{doc}.html").is_file():
        pytest.fail(f"{doc} is in _toc.yml but {book_html} has no {doc}.html", pytrace=False)

    problems, counts = [], {}
    page = chromium.new_page()
    page.on("console", lambda msg: problems.append(f"console error: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} ({request.failure})"))
    page.on("response", lambda response: problems.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400 else None)

    def local_only(route):
        # the book must work offline: any other host is a defect, and is never contacted
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob", "about") or url.hostname == LOCAL_HOST:
            route.continue_()
        else:
            problems.append(f"request to another host: {route.request.url}")
            route.abort()

    def wait(what, js):
        try:
            page.wait_for_function(js, timeout=TIMEOUT_MS)
        except PlaywrightTimeout:
            problems.append(f"timed out after {TIMEOUT_MS // 1000} s waiting for {what}")

    page.route("**/*", local_only)
    try:
        page.goto(book_url + f"{doc}.html", wait_until="load", timeout=TIMEOUT_MS)
        try:
            page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
        except PlaywrightTimeout:
            problems.append(f"the page kept loading for more than {TIMEOUT_MS // 1000} s")
        problems += filter(None, [_wait_for_mathjax(page)])
        if page.evaluate(WIDGET_VIEWS):  # the manager renders on window "load", asynchronously
            try:
                page.wait_for_function(f"() => ({WIDGET_VIEWS})().every(v => v.rendered)", timeout=TIMEOUT_MS)
            except PlaywrightTimeout:
                problems += [f"widget {v['model']} did not render" for v in page.evaluate(WIDGET_VIEWS)
                             if not v["rendered"]]
        wait("every image to load", "() => Array.from(document.images).every(img => img.complete)")

        prose = page.evaluate(VISIBLE_PROSE_TEXT)
        for delimiter in (r"\(", r"\[", "$$"):
            if delimiter in prose:
                at = prose.index(delimiter)
                problems.append(f"formula left untypeset: ...{prose[max(0, at - 40):at + 60]}...")
        problems += [f"MathJax error: {error}" for error in page.evaluate(MATHJAX_ERRORS)]
        problems += [f"Markdown table shown as a paragraph: {text}" for text in page.evaluate(PIPE_PARAGRAPHS)]
        problems += [f"broken image: {src}" for src in page.evaluate(BROKEN_IMAGES)]
        text = page.evaluate("() => document.body.innerText")
        problems += [f"stray output: {line.strip()[:120]}" for line in text.splitlines() if "PosixPath(" in line]

        links = page.evaluate(LINKS)
        link_problems, counts["internal_links"] = _broken_internal_links(links, book_html, book_url)
        problems += link_problems
        if (ROOT / f"{doc}.ipynb").is_file():
            problems += _exercise_link_problems(doc, links, book_html)
        counts.update(page.evaluate(PAGE_COUNTS))
        counts["widgets_rendered"] = sum(v["rendered"] for v in page.evaluate(WIDGET_VIEWS))

        shot = screenshots / f"{doc.replace('/', '_')}.png"   # the page as a reader first sees it
        page.screenshot(path=str(shot), full_page=True)
        slider_problems = _check_sliders(page)
        toggle_problems, counts["toggle_buttons_clicked"] = _check_toggle_buttons(page)
        counts["sliders_moved"] = counts.pop("sliders")
        counts["controls_that_changed_nothing"] = len(slider_problems) + len(toggle_problems)
        problems += slider_problems + toggle_problems
        for control, least in EXPECTED_CONTROLS.get(doc, {}).items():
            if counts[control] < least:
                problems.append(f"expected at least {least} {control.replace('_', ' ')} here (a widget of #13), "
                                f"found {counts[control]}")
    finally:
        page.close()
        counts["problems"] = list(dict.fromkeys(problems))
        browser_report(doc, counts)
    if problems:
        pytest.fail(f"{doc}.html in Chromium (screenshot {shot}):\n  " + "\n  ".join(dict.fromkeys(problems)),
                    pytrace=False)


# --------------------------------------------------------------------------------------------
# the link checks themselves, on a small fixture (no browser needed)

def test_link_checks_find_what_is_broken(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.html").write_text('<h1 id="top">A</h1><section id="try-it-yourself"></section>')
    (tmp_path / "_downloads" / "abc").mkdir(parents=True)
    (tmp_path / "_downloads" / "abc" / "01_mnist_baseline.ipynb").write_text("{}")
    base = "http://127.0.0.1:8000/"

    def link(href, download=False, colab_badge=False):
        return {"href": base + href if not href.startswith("http") else href, "raw": href, "text": "",
                "download": download, "colab_badge": colab_badge}
    good = [link("book/a.html#top"), link("book/a.html"), link("_downloads/abc/01_mnist_baseline.ipynb", download=True),
            link("https://colab.research.google.com/github/o/r/blob/main/exercises/01_mnist_baseline.ipynb",
                 colab_badge=True)]
    assert _broken_internal_links(good, tmp_path, base) == ([], 3)   # the Colab link is another host
    problems, _ = _broken_internal_links([link("book/b.html"), link("book/a.html#nowhere")], tmp_path, base)
    assert len(problems) == 2 and "leads to no file" in problems[0] and "no anchor #nowhere" in problems[1]
    assert _exercise_link_problems("book/01_mnist_baseline", good, tmp_path) == []
    missing = _exercise_link_problems("book/01_mnist_baseline", good[:2], tmp_path)
    assert any("no download link" in p for p in missing) and any("no Colab badge" in p for p in missing)
    wrong = [good[2], link("https://colab.research.google.com/github/o/r/blob/main/exercises/02_x.ipynb", colab_badge=True)]
    assert any("not exercises/01_mnist_baseline.ipynb" in p for p in _exercise_link_problems("book/01_mnist_baseline", wrong, tmp_path))
