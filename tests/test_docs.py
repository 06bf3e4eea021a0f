"""The website: Sphinx builds it with warnings as errors, and a real browser renders it.

The build (``sphinx-build -W -b html docs ...``) executes every notebook in quick
mode, so it takes about as long as running the notebooks; the tests that need it
are marked ``slow`` (they run in CI, which runs the whole suite). The browser test
serves the built site on 127.0.0.1 and opens its pages in headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, which ``.ci/run`` installs), where
it checks what a reader sees: MathJax typeset the math without errors, every image
loaded, the console is free of errors, and a screenshot is written next to the
site (``_screenshots/``) for a person to look at.
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

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IN_CI = os.environ.get("CI") == "true"
#: The build runs the nine notebooks (about a minute on two idle cores); a hung kernel
#: must not hang the suite.
BUILD_TIMEOUT = 1800
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Pages the browser test opens: every notebook, the front page and the API page
#: holding most of the docstring math.
BROWSER_PAGES = ["index.html", "api/numpyvae.ops.html",
                 *(f"notebooks/{p.stem}.html" for p in NOTEBOOKS)]
#: The page whose screenshot is kept: derivations in math, and figures.
SCREENSHOT_PAGE = "notebooks/03_reparameterization.html"


def test_docs_extra_is_installed_by_the_test_extra():
    """``pip install -e ".[test]"`` (the README's test command) must bring Sphinx and co."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["optional-dependencies"]
    assert "numpyvae[docs]" in extras["test"], "the test extra must include the docs extra"
    assert any(req.startswith("selenium") for req in extras["test"])


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the website from scratch into a temporary folder; return its HTML folder."""
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


@pytest.mark.slow
def test_front_page_is_the_readme_and_links_the_course(site):
    text = (site / "index.html").read_text(encoding="utf-8")
    assert "Variational autoencoders in pure NumPy" in text
    for nb in NOTEBOOKS:
        assert f'href="notebooks/{nb.stem}.html"' in text, f"front page lacks {nb.stem}"
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
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = (f"the browser test needs Debian's chromium and chromium-driver "
                   f"(apt-get install -y chromium chromium-driver); missing {missing}")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"the browser test needs selenium (pip install -e '.[test]'): {exc}")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # As root Chromium needs --no-sandbox; the networking flags stop it from calling
    # home (the machine has no network, and each refused call slows the start).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


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


@pytest.mark.slow
@pytest.mark.parametrize("page", BROWSER_PAGES)
def test_page_renders_math_and_figures_in_chromium(site, site_url, browser, page):
    browser.get(f"{site_url}/{page}")
    seen = browser.execute_async_script(_INSPECT_PAGE)
    assert "failed" not in seen, f"{page}: {seen}"
    if page != "index.html":  # the front page (the README) has no math
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
        shots = site / "_screenshots"
        shots.mkdir(exist_ok=True)
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
