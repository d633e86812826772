"""Keep the rendered book offline: no Thebe scripts, and a warning for any script or style
sheet that a page would load from the network.

MathJax, RequireJS and the ipywidgets manager are vendored in book/_static/vendor (`make vendor`)
and wired in _config.yml. sphinx-thebe, which Jupyter Book always loads, adds to every page a
script naming Thebe's unpkg URL, sphinx-thebe.js and .css, and at the end of the page a Thebe
configuration (pointing at a Binder repository) and a kernelName script. With
`launch_buttons.thebe: false` nothing uses them, so they are dropped. A remote asset that
appears later (a new extension, a theme update) is reported as a Sphinx warning, which fails
`jupyter-book build -W`.
"""

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

THEBE_FILES = ("sphinx-thebe.js", "sphinx-thebe.css")


def _is_thebe(asset):
    filename = asset.filename or ""
    return filename.endswith(THEBE_FILES) or "THEBE_JS_URL" in asset.attributes.get("body", "")


def drop_thebe_config(app, doctree, docname):
    for node in list(doctree.findall(nodes.raw)):
        if node.get("format") == "html" and ("text/x-thebe-config" in node.astext()
                                            or node.astext().startswith("<script>kernelName =")):
            node.parent.remove(node)


def drop_thebe_and_report_remote(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        assets = context.get(key)
        if assets is None:
            continue
        assets[:] = [asset for asset in assets if not _is_thebe(asset)]
        for asset in assets:
            if "://" in (asset.filename or ""):
                logger.warning(f"page {pagename!r} loads {asset.filename} from the network; vendor it "
                               f"under book/_static/vendor (tools/vendor_assets.sh) so the book works offline",
                               type="offline_assets", subtype="remote")


def setup(app):
    # priority 900: after sphinx.ext.mathjax, myst-nb and sphinx-thebe have added their files
    app.connect("doctree-resolved", drop_thebe_config, priority=900)
    app.connect("html-page-context", drop_thebe_and_report_remote, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
