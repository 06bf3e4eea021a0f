"""The website: Sphinx builds it with warnings as errors, and a real browser renders it.

The README is the landing page and the website the front door: the first tests
(quick, no build) hold the README short, its links and the guide pages in step,
and the pictures' labels readable. The build (``sphinx-build -W -b html docs ...``)
executes every notebook in quick mode, so it takes about as long as running the
notebooks; the tests that need it are marked ``slow`` (they run in CI, which runs the
whole suite). The browser test
serves the built site on 127.0.0.1 and opens its pages in headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, which ``.ci/run`` installs), where
it checks what a reader sees: MathJax typeset the math without errors, every image
loaded, the console is free of errors, and every page fits a window 1280 and 390
pixels wide (a phone) without scrolling sideways. A screenshot of each page at
each width is kept for a person to look at, in ``$NUMPYVAE_ARTEFACTS/docs/``
(or the build's temporary folder). ``NUMPYVAE_DOCS_SITE=DIR`` checks a site
already built from this checkout instead of building one.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from browser import chromium

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
GUIDE = sorted((DOCS / "guide").glob("*.md"))
README = ROOT / "README.md"
IN_CI = os.environ.get("CI") == "true"
#: The build runs the nine notebooks (about a minute on two idle cores); a hung kernel
#: must not hang the suite.
BUILD_TIMEOUT = 1800
#: Pages the browser test opens: the front page, every guide page, the inspector, every
#: notebook, the API index and the API page holding most of the docstring math.
BROWSER_PAGES = ["index.html", *(f"guide/{p.stem}.html" for p in GUIDE), "inspector.html",
                 "api/index.html", "api/numpyvae.ops.html",
                 *(f"notebooks/{p.stem}.html" for p in NOTEBOOKS)]
#: Window widths the pages must fit: a laptop and a phone.
WIDTHS = (1280, 390)
#: The width of the main column at 1280 pixels (the theme's 46em); pictures drawn
#: for the page are at most this wide, so they are shown at their own size.
COLUMN_PX = 736
#: The page whose screenshot is kept: derivations in math, and figures.
SCREENSHOT_PAGE = "notebooks/03_reparameterization.html"


def test_docs_extra_is_installed_by_the_test_extra():
    """``pip install -e ".[test]"`` (the README's test command) must bring Sphinx and co."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["optional-dependencies"]
    assert "numpyvae[docs]" in extras["test"], "the test extra must include the docs extra"
    assert any(req.startswith("selenium") for req in extras["test"])


# ---------------------------------------------------------------------------
# The README as a landing page, the guide as the depth (no build needed)
# ---------------------------------------------------------------------------
#: What a student reads in five minutes: the sections of the landing page, in order.
README_SECTIONS = ["## Install and the two commands", "### The first run",
                   "### Running the tests", "## A tour of the code", "## The course",
                   "## Going further", "## License"]


def _links(path: Path) -> list[str]:
    """Relative link and image targets of a Markdown file (no URLs, no in-page anchors)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_readme_is_a_landing_page():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 200, f"the README has {len(lines)} lines: move depth to docs/guide/"
    found = [line for line in lines if line.startswith("#")]
    positions = [found.index(h) for h in README_SECTIONS if h in found]
    assert len(positions) == len(README_SECTIONS), f"README sections are {found}"
    assert positions == sorted(positions), f"README sections out of order: {found}"
    assert "Variational autoencoders in pure NumPy" in text
    # A picture, the two commands and the code tour, one-page VAE first.
    assert "![" in text and "numpyvae train" in text and "numpyvae inspect --tiny" in text
    tour = text[text.index("## A tour of the code"):text.index("## The course")]
    assert tour.index("numpyvae/one_page_vae.py") < tour.index("numpyvae/ops.py")
    # The depth lives on the website: no speed tables or profiles in the README.
    assert "samples/s" not in text and "GFLOP/s" not in text
    assert "<!-- speed table" in (DOCS / "guide" / "speed.md").read_text(encoding="utf-8")


def test_readme_says_which_test_command_is_which_and_how_long_each_takes():
    text = README.read_text(encoding="utf-8")
    assert 'pip install -e ".[test]" && ruff check . && python -m pytest' in text  # CI runs it
    assert 'python -m pytest -m "not slow"' in text
    # Each command is followed by how long it took, in minutes on two idle cores.
    full = text.index('python -m pytest\n')
    quick = text.index('python -m pytest -m "not slow"')
    took = r"(\d+(?:½)?) minutes on two idle cores"
    assert re.search(took, text[full:quick]), "the full suite's time is not stated"
    assert re.search(took, text[quick:quick + 400]), "the quick tier's time is not stated"
    assert "`chromium`" in text and "`chromium-driver`" in text and "skips without them" in text
    assert "PyTorch or JAX" in text and "skip" in text


def test_every_guide_page_is_linked_from_the_readme_and_in_the_toctree():
    readme_links = set(_links(README))
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert len(GUIDE) >= 8
    for page in GUIDE:
        assert f"docs/guide/{page.name}" in readme_links, f"the README does not link {page.name}"
        assert f"\nguide/{page.stem}\n" in index, f"docs/index.md's toctree lacks {page.stem}"
        assert page.read_text(encoding="utf-8").startswith("# "), f"{page.name} has no title"
    assert ":relative-docs: docs/" in index  # README links to docs/... work on the website


@pytest.mark.parametrize("path", [README, *GUIDE, DOCS / "inspector.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_of_the_readme_and_the_guide_resolve(path):
    for target in _links(path):
        file = target.split("#")[0]
        resolved = (path.parent / file).resolve()
        # docs/notebooks/ is the build's copy of notebooks/
        if resolved.is_relative_to(DOCS / "notebooks"):
            resolved = ROOT / "notebooks" / resolved.relative_to(DOCS / "notebooks")
        assert resolved.exists(), f"{path.name} links {target}, which does not exist"


def _displayed_label_px(fig) -> list[tuple[float, str]]:
    """Each text's height in pixels once the figure is shown in the main column."""
    width_px = fig.get_figwidth() * fig.dpi
    shrink = min(1.0, COLUMN_PX / width_px)
    return [(t.get_fontsize() * fig.dpi / 72 * shrink, t.get_text()) for t in fig.findobj(
        lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")) if t.get_text()]


def test_layout_figure_labels_are_readable_at_the_page_width():
    pytest.importorskip("matplotlib")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_layout_figure", DOCS / "figures" / "make_layout_figure.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fig = script.draw()
    labels = _displayed_label_px(fig)
    assert len(labels) >= 9
    small = [(round(px, 1), text) for px, text in labels if px < 12]
    assert not small, f"labels under 12 px in the main column: {small}"
    # Every module the picture names is where the picture says.
    for title, _, modules in script.NEIGHBOURHOODS:
        folder = ROOT / title.split()[0]
        for name in modules.replace("...", "").split():
            path = folder / name.rstrip("/")
            assert path.is_dir() or path.with_suffix(".py").is_file() or (
                name == "one_page_vae"), f"the layout picture names {path}, which is absent"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_inspector_graph_labels_are_readable_at_the_page_width():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from numpyvae.inspector.trace import inspect, tiny_model

    model, x = tiny_model(backend="numpy")
    fig = inspect(model, x).plot()
    small = [(round(px, 1), text) for px, text in _displayed_label_px(fig) if px < 12]
    plt.close(fig)
    assert not small, f"labels under 12 px in the main column: {small[:5]}"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the website from scratch into a temporary folder; return its HTML folder."""
    if os.environ.get("NUMPYVAE_DOCS_SITE"):
        return Path(os.environ["NUMPYVAE_DOCS_SITE"])
    try:
        import myst_nb  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"building the docs needs the docs extra (pip install -e '.[docs]'): {exc}")
    out = tmp_path_factory.mktemp("site")
    html = out / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
           "-d", str(out / "doctrees"), str(DOCS), str(html)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        log = (proc.stdout + proc.stderr).splitlines()
        problems = [line for line in log if ("WARNING" in line or "ERROR" in line
                                             or "Error" in line) and "[IPKernelApp]" not in line]
        tail = "\n".join(log[-40:])
        pytest.fail(f"sphinx-build -W failed (exit {proc.returncode}):\n"
                    + "\n".join(problems[:40]) + f"\n--- last lines ---\n{tail}", pytrace=False)
    return html


@pytest.mark.slow
def test_every_notebook_is_a_page_with_its_outputs_and_math(site):
    for nb in NOTEBOOKS:
        page = site / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), f"{nb.name} has no page in the built site"
        text = page.read_text(encoding="utf-8")
        assert "cell_output" in text, f"{page.name}: no cell outputs (was it executed?)"
        assert 'class="math' in text, f"{page.name}: no math nodes"
        # The figures come from executing the code: PNG outputs copied to _images.
        images = re.findall(r'<img[^>]*src="\.\./_images/([^"]+\.png)"', text)
        assert images, f"{page.name}: no figure among its outputs"
        for name in images:
            assert (site / "_images" / name).stat().st_size > 1000, name


def test_the_figures_page_links_the_default_runs_explorer():
    """The page ``numpyvae export`` wrote for the default run: linked, shipped, small."""
    text = (DOCS / "guide" / "figures.md").read_text(encoding="utf-8")
    assert '<a href="../figures/explorer.html">' in text  # raw HTML: a Markdown link downloads
    page = DOCS / "figures" / "explorer.html"
    assert page.stat().st_size < 3_000_000
    quoted = re.search(r"The default model's page is\s+([\d.]+) MB", text)
    assert quoted and float(quoted.group(1)) == round(page.stat().st_size / 1e6, 1)
    assert 'id="numpyvae-data"' in page.read_text(encoding="utf-8")
    assert "figures/explorer.html" in (DOCS / "conf.py").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_site_ships_the_default_runs_explorer(site):
    page = site / "guide" / "figures.html"
    assert '<a href="../figures/explorer.html">' in page.read_text(encoding="utf-8")
    shipped = site / "figures" / "explorer.html"
    assert shipped.read_bytes() == (DOCS / "figures" / "explorer.html").read_bytes()


@pytest.mark.slow
def test_front_page_is_the_readme_and_links_the_course_and_the_guide(site):
    text = (site / "index.html").read_text(encoding="utf-8")
    assert "Variational autoencoders in pure NumPy" in text
    for nb in NOTEBOOKS:
        assert f'href="notebooks/{nb.stem}.html"' in text, f"front page lacks {nb.stem}"
    body = text[text.index("<article"):text.index("</article>")]
    for page in GUIDE:  # in the README's own text, not only in the sidebar
        assert f'href="guide/{page.stem}.html"' in body, f"front page lacks guide/{page.stem}"
        assert (site / "guide" / f"{page.stem}.html").is_file()
    for src in re.findall(r'<img[^>]*src="([^"]+)"', text):
        assert (site / src).is_file(), f"front page image {src} missing from the site"


@pytest.mark.slow
def test_api_reference_covers_every_module_with_rendered_docstrings(site):
    import importlib
    import pkgutil

    import numpyvae

    modules = ["numpyvae"] + [m.name for m in pkgutil.walk_packages(
        numpyvae.__path__, prefix="numpyvae.") if not m.name.endswith("__main__")]
    for name in modules:
        assert (site / "api" / f"{name}.html").is_file(), f"no API page for {name}"
    ref = (site / "api" / "numpyvae.ops.html").read_text(encoding="utf-8")
    # A docstring's ``.. math::`` block and a function signature, both rendered.
    assert ref.count('class="math') >= 10
    for fn in ("linear_forward", "linear_backward"):
        assert hasattr(importlib.import_module("numpyvae.ops"), fn)
        assert f'id="numpyvae.ops.{fn}"' in ref


@pytest.mark.slow
def test_api_reference_shows_the_public_api_first_and_the_internals_after(site):
    text = (site / "api" / "index.html").read_text(encoding="utf-8")
    body = text[text.index("<article"):text.index("</article>")]
    headings = re.findall(r"<h2>(.*?)<a", body)
    groups = ["Models", "Layers", "Distributions", "Optimizers", "Checks", "Inspector", "Exercises",
              "Data", "Training", "Internals"]
    assert headings == groups, headings
    internals = body.index("<h2>Internals")

    def where(module):
        found = body.find(f'href="{module}.html"')
        assert found >= 0, f"the API index does not link {module}"
        return found

    for module in ("numpyvae.model", "numpyvae.layers", "numpyvae.distributions",
                   "numpyvae.optim", "numpyvae.gradcheck", "numpyvae.inspector.trace",
                   "numpyvae.app.data", "numpyvae.app.train"):
        assert where(module) < internals, f"{module} is not in the public API"
    for module in ("numpyvae.fast.numba_blas", "numpyvae.app.interrupts", "numpyvae.fileio"):
        assert where(module) > internals, f"{module} is not among the internals"
    # The public groups come in the order a student meets them.
    order = [where(m) for m in ("numpyvae.model", "numpyvae.layers", "numpyvae.distributions",
                                "numpyvae.optim", "numpyvae.gradcheck",
                                "numpyvae.inspector.trace", "numpyvae.app.data",
                                "numpyvae.app.train")]
    assert order == sorted(order)


@pytest.mark.slow
def test_site_loads_nothing_from_the_network(site):
    """MathJax and every script and stylesheet are served by the site itself."""
    remote = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', re.I)
    offenders = [str(p.relative_to(site)) for p in site.rglob("*.html")
                 if remote.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"pages loading remote resources: {offenders}"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()


# ---------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def site_url(site):
    """Serve the built site on 127.0.0.1 (a free port) for the module's tests."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian Chromium through its chromedriver (nothing is downloaded)."""
    yield from chromium(tmp_path_factory.mktemp("chromium-profile"))


#: Resolves with what the reader sees once MathJax has typeset the page.
_INSPECT_PAGE = """
const done = arguments[arguments.length - 1];
const report = () => {
  const imgs = Array.from(document.querySelectorAll('article img'));
  done({
    mathjax: typeof MathJax !== 'undefined' && !!MathJax.version,
    typeset: document.querySelectorAll('mjx-container').length,
    math_nodes: document.querySelectorAll('.math').length,
    errors: Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]'))
                 .map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5),
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  });
};
const wait = () => (typeof MathJax !== 'undefined' && MathJax.startup
                    && MathJax.startup.promise) ? MathJax.startup.promise : Promise.resolve();
// Images load lazily only when scrolled to in some themes: ask for all of them.
document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager');
Promise.all([wait(), ...Array.from(document.images).map(
    i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; }))])
  .then(report, e => done({failed: String(e)}));
"""


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]


@pytest.fixture(scope="module")
def artefacts(site) -> Path:
    """Where the screenshots go: ``$NUMPYVAE_ARTEFACTS/docs/``, else beside the built site."""
    root = os.environ.get("NUMPYVAE_ARTEFACTS")
    folder = Path(root) / "docs" if root else site.parent / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("page", BROWSER_PAGES)
def test_page_renders_math_and_figures_in_chromium(site, site_url, browser, artefacts, page):
    browser.set_window_size(1280, 1000)
    browser.get(f"{site_url}/{page}")
    seen = browser.execute_async_script(_INSPECT_PAGE)
    assert "failed" not in seen, f"{page}: {seen}"
    if page.startswith("notebooks/") or page in ("api/numpyvae.ops.html", "inspector.html"):
        assert seen["mathjax"], f"{page}: MathJax did not load"
        assert seen["math_nodes"] > 0, f"{page}: no math on the page"
    assert not seen["errors"], f"{page}: MathJax errors {seen['errors']}"
    # Every math node of the page became a typeset formula (display math may add more).
    assert seen["typeset"] >= seen["math_nodes"], (
        f"{page}: {seen['typeset']} typeset formulas for {seen['math_nodes']} math nodes")
    assert not seen["broken"], f"{page}: images that did not load: {seen['broken']}"
    if page.startswith("notebooks/"):
        assert seen["images"] > 0, f"{page}: no figures on the page"
    assert not _console_errors(browser), f"{page}: console errors {_console_errors(browser)}"

    if page == SCREENSHOT_PAGE:
        shots = artefacts
        assert browser.save_screenshot(str(shots / "top.png"))
        # The first figure with the text above it: derivation, code and output.
        # (furo scrolls smoothly: jump instead, or the shot catches the start of it)
        browser.execute_script(
            "const top = document.querySelector('article img').getBoundingClientRect().top;"
            "window.scrollTo({top: window.scrollY + top - 300, behavior: 'instant'});")
        assert browser.save_screenshot(str(shots / "figure.png"))
        for name in ("top.png", "figure.png"):
            assert (shots / name).stat().st_size > 20_000, f"{name} looks empty"


def test_docs_build_command_is_in_the_readme():
    """The README names the one command that builds the site."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html' in readme


#: What overflows sideways, once the page has settled (MathJax typeset, images loaded).
#: ``sticks_out``: visible blocks of the main column reaching past its right edge
#: (the theme's table wrappers reach 6 px past it), outside any
#: box that scrolls. ``hidden``: boxes that hide part of their content behind a
#: horizontal scroll bar (code, outputs, tables).
_OVERFLOW = """
const done = arguments[arguments.length - 1];
const measure = () => {
  const main = document.querySelector('article');
  const edge = main.getBoundingClientRect().right;
  const inScroller = el => {
    for (let p = el.parentElement; p && p !== main; p = p.parentElement)
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(p).overflowX)) return true;
    return false;
  };
  const name = el => el.tagName.toLowerCase() + (el.className ? '.' + el.className : '')
      + ' "' + (el.textContent || el.getAttribute('src') || '').trim().slice(0, 40) + '"';
  const blocks = main.querySelectorAll(
    'p, li, pre, img, table, div.highlight, div.table-wrapper, mjx-container, dl');
  const sticksOut = Array.from(blocks).filter(el => !inScroller(el)
      && el.getBoundingClientRect().width > 0 && el.getBoundingClientRect().right > edge + 8)
    .map(el => name(el) + ' right edge ' + Math.round(el.getBoundingClientRect().right)
                + ' > ' + Math.round(edge));
  const hidden = Array.from(main.querySelectorAll('*')).filter(el =>
      ['auto', 'scroll', 'hidden'].includes(getComputedStyle(el).overflowX)
      && el.scrollWidth > el.clientWidth + 1 && el.tagName.toLowerCase() !== 'mjx-assistive-mml')
    .map(el => name(el) + ' ' + el.scrollWidth + ' px in ' + el.clientWidth);
  done({window: window.innerWidth, page: document.documentElement.scrollWidth,
        sticks_out: sticksOut.slice(0, 5), hidden: hidden.slice(0, 5)});
};
const wait = (typeof MathJax !== 'undefined' && MathJax.startup && MathJax.startup.promise)
    ? MathJax.startup.promise : Promise.resolve();
document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager');
Promise.all([wait, ...Array.from(document.images).map(
    i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; }))])
  .then(measure, e => done({failed: String(e)}));
"""


#: Pages known to overflow, for a reason outside the website's own files. Strict: once
#: the page is fixed the test says so, and the entry goes.
KNOWN_OVERFLOW: dict = {}


@pytest.mark.slow
@pytest.mark.parametrize(("page", "width"), [
    pytest.param(page, width, marks=[pytest.mark.xfail(
        strict=True, reason=KNOWN_OVERFLOW[page, width])] if (page, width) in KNOWN_OVERFLOW
        else []) for page in BROWSER_PAGES for width in WIDTHS])
def test_page_fits_the_window_without_scrolling_sideways(site_url, browser, artefacts, page,
                                                         width):
    """No page scrolls sideways; at 1280 px nothing hides behind a scroll bar either.

    On a phone a wide table or a printed output may scroll inside its own box, but
    never the page; on a laptop every code block, output and table shows whole
    (code wraps, see ``docs/_static/numpyvae.css``).
    """
    browser.set_window_size(width, 1000)
    browser.get(f"{site_url}/{page}")
    seen = browser.execute_async_script(_OVERFLOW)
    assert "failed" not in seen, f"{page}: {seen}"
    shot = artefacts / f"{width}px_{page.replace('/', '_').removesuffix('.html')}.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000, shot
    assert seen["window"] == width, f"the window is {seen['window']} px wide, not {width}"
    assert seen["page"] <= width, f"{page} at {width} px scrolls sideways ({seen['page']} px)"
    assert not seen["sticks_out"], f"{page} at {width} px: {seen['sticks_out']}"
    if width >= 1280:
        assert not seen["hidden"], f"{page} at {width} px, behind scroll bars: {seen['hidden']}"


@pytest.mark.slow
def test_printed_output_of_100_columns_fits_the_main_column_at_1280(site_url, browser,
                                                                     artefacts):
    """The inspector's table (at most 100 columns) shows whole, aligned, on a laptop."""
    browser.set_window_size(1280, 1000)
    browser.get(f"{site_url}/inspector.html")
    room = browser.execute_script("""
        const pre = document.querySelector('article div.cell_output pre');
        const probe = document.createElement('span');
        probe.style.whiteSpace = 'pre';
        probe.textContent = 'x'.repeat(100);
        pre.appendChild(probe);
        const style = getComputedStyle(pre);
        const inner = pre.clientWidth - parseFloat(style.paddingLeft)
                      - parseFloat(style.paddingRight);
        const need = probe.getBoundingClientRect().width;
        probe.remove();
        return {need: need, inner: inner, font: parseFloat(style.fontSize)};""")
    assert room["need"] <= room["inner"], f"100 columns need {room['need']} px: {room}"
    assert room["font"] >= 11, f"output text of {room['font']} px is too small to read"
    browser.execute_script(
        "const top = document.querySelector('article div.cell_output').getBoundingClientRect().top;"
        "window.scrollTo({top: window.scrollY + top - 100, behavior: 'instant'});")
    assert browser.save_screenshot(str(artefacts / "1280px_inspector_table.png"))
