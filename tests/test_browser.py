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
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]
SCREENSHOTS = ROOT / "_build" / "screenshots"
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


# --------------------------------------------------------------------------------------------
# the test: one per page

@pytest.mark.parametrize("doc", toc_documents())
def test_page_in_browser(doc, chromium, book_html, book_url, screenshots):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if not (book_html / f"{doc}.html").is_file():
        pytest.fail(f"{doc} is in _toc.yml but {book_html} has no {doc}.html", pytrace=False)

    problems = []
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

        shot = screenshots / f"{doc.replace('/', '_')}.png"   # the page as a reader first sees it
        page.screenshot(path=str(shot), full_page=True)
        problems += _check_sliders(page)
    finally:
        page.close()
    if problems:
        pytest.fail(f"{doc}.html in Chromium (screenshot {shot}):\n  " + "\n  ".join(dict.fromkeys(problems)),
                    pytrace=False)
