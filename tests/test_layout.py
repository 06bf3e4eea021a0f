"""The package's layout holds: imports flow one way, in no circle, and keep out of private names.

numpyvae lives in three neighbourhoods:

* the **core**, every module at the top of ``numpyvae/`` and ``numpyvae.inspector``:
  what a student reads;
* the **fast path**, ``numpyvae.fast.*``: the Numba backend and the one-call step;
* the **application**, ``numpyvae.app.*``: the command, run folders, data, figures;

plus the **front door**, ``numpyvae`` itself (``__init__``) and ``numpyvae.__main__``,
which may reach anywhere. Data flows ``app -> fast -> core``: the core imports
neither ``fast`` nor ``app``, and ``fast`` never imports ``app``.

The walker reads every module with :mod:`ast`, so it sees every ``import``
statement, at the top of a file or inside a function, absolute or relative.
An import inside a function still is a dependency (it only defers the
circle to the first call), so it counts. Modules loaded by a string
(``importlib.import_module(name)``, as :mod:`numpyvae.backend` loads a
backend by name) are not import statements and are not arrows.

On failure each offending arrow prints as ``file:line importer -> imported``.
"""

from __future__ import annotations

import ast
import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "numpyvae"

#: (importer's neighbourhood, imported's neighbourhood) pairs that point the wrong way.
WRONG_WAY = {("core", "fast"), ("core", "app"), ("fast", "app")}


# --------------------------------------------------------------------------
# The walker
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrow:
    """One import: ``importer`` (in ``file`` at ``line``) imports ``imported``.

    ``name`` is the attribute taken from ``imported`` (``from imported import name``,
    or ``module.name`` on a module bound by an import), None when the arrow is
    to the module itself. ``via`` is the old name the import statement used,
    when it named a moved module (see :func:`module_arrows`).
    """

    file: str
    line: int
    importer: str
    imported: str
    name: str | None = None
    via: str | None = field(default=None, compare=False)

    def __str__(self):
        target = self.imported if self.name is None else f"{self.imported}.{self.name}"
        return f"{self.file}:{self.line} {self.importer} -> {target}"


def is_private(name: str) -> bool:
    """``_name`` is private; ``__name__``-style (dunder) names are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def package_modules(package_dir: Path) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the package (``__init__`` as the package)."""
    package_dir = Path(package_dir)
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_alias(name: str, aliases: dict[str, str]) -> str:
    for old, new in aliases.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return name


def module_arrows(package_dir: Path, aliases: dict[str, str] | None = None) -> list[Arrow]:
    """Every import, by any module of the package, of a module of the package.

    ``aliases`` maps a moved module's old name to its new one (the package's
    ``MOVED`` table): an import of the old name is an arrow to the new module.
    ``from package import name`` is an arrow to the module ``package.name`` when
    that is a module, else to ``package`` with ``name`` noted. Attribute use of a
    module bound by an import (``from . import ops`` then ``ops._pad``) is
    noted too when the attribute is private, so that private names cannot be
    reached around ``from`` imports.
    """
    package_dir = Path(package_dir)
    package = package_dir.name
    modules = package_modules(package_dir)
    aliases = aliases or {}

    def inside(name):
        return name == package or name.startswith(package + ".")

    def known(name):
        """The module an absolute name means: itself, or the nearest enclosing module."""
        name = _resolve_alias(name, aliases)
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def old(name):
        """``name`` if it is (in) a moved module's old name, else None."""
        return name if _resolve_alias(name, aliases) != name else None

    arrows = []
    for importer, path in modules.items():
        file = path.relative_to(package_dir.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        bound = {}  # a local name bound to a module of the package -> that module

        def add(line, imported, name=None, via=None, importer=importer, file=file):
            arrows.append(Arrow(file, line, importer, imported, name, via))

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if not inside(alias.name):
                        continue
                    target = known(alias.name)
                    add(node.lineno, target, via=old(alias.name))
                    if alias.asname:
                        bound[alias.asname] = target
                    else:  # ``import numpyvae.ops`` binds ``numpyvae``
                        bound[alias.name.partition(".")[0]] = known(alias.name.partition(".")[0])
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _package_of(importer, path).split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not inside(source):
                    continue
                for alias in node.names:
                    submodule = _resolve_alias(f"{source}.{alias.name}", aliases)
                    via = old(f"{source}.{alias.name}")
                    if submodule in modules:
                        add(node.lineno, submodule, via=via)
                        bound[alias.asname or alias.name] = submodule
                    else:
                        add(node.lineno, known(source),
                            None if alias.name == "*" else alias.name, via=old(source))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and is_private(node.attr)
                    and bound[node.value.id] != importer):
                add(node.lineno, bound[node.value.id], node.attr)
    return sorted(set(arrows), key=lambda a: (a.file, a.line, a.imported, a.name or ""))


def neighbourhood(module: str, package: str = PACKAGE) -> str:
    """``"front door"``, ``"fast"``, ``"app"`` or ``"core"``."""
    if module in (package, f"{package}.__main__"):
        return "front door"
    for part in ("fast", "app"):
        if module == f"{package}.{part}" or module.startswith(f"{package}.{part}."):
            return part
    return "core"


def wrong_way_arrows(arrows, package=PACKAGE) -> list[Arrow]:
    """Arrows from the core to ``fast`` or ``app``, and from ``fast`` to ``app``."""
    return [a for a in arrows
            if (neighbourhood(a.importer, package), neighbourhood(a.imported, package))
            in WRONG_WAY]


def private_name_arrows(arrows) -> list[Arrow]:
    """Arrows that take another module's private name, or a private module from outside.

    A private module (``pkg/_impl.py``) may be imported by its own package's modules.
    """
    bad = []
    for a in arrows:
        if a.imported == a.importer:
            continue
        if a.name is not None and is_private(a.name):
            bad.append(a)
            continue
        parts = a.imported.split(".")
        for depth in range(1, len(parts)):
            if is_private(parts[depth]):
                owner = ".".join(parts[:depth])
                if not (a.importer == owner or a.importer.startswith(owner + ".")):
                    bad.append(a)
                break
    return bad


def import_circles(arrows) -> list[list[Arrow]]:
    """The import circles among modules, each as the arrows of one closed chain.

    The modules that import each other in a circle are the strongly connected
    components of the module graph (Tarjan's algorithm); for every module of
    such a component, the shortest chain from it back to itself is reported
    (each circle once, starting at its first module in name order).
    """
    first = {}  # (importer, imported) -> the arrow of its first line
    for a in arrows:
        if a.importer != a.imported:
            first.setdefault((a.importer, a.imported), a)
    graph = defaultdict(set)
    for importer, imported in first:
        graph[importer].add(imported)

    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            connect(v)

    circles, seen = [], set()
    for component in sorted(components, key=min):
        for start in sorted(component):
            chain = _shortest_chain_back(graph, component, start)
            key = _canonical(chain)
            if key not in seen:
                seen.add(key)
                circles.append([first[pair] for pair in zip(chain, chain[1:], strict=False)])
    return circles


def _shortest_chain_back(graph, component, start):
    """``[start, ..., start]``: a shortest path from ``start`` back to itself in ``component``."""
    parent = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & component):
            if w == start:
                chain = [v]
                while chain[-1] != start:
                    chain.append(parent[chain[-1]])
                return [start, *reversed(chain[:-1]), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in a circle but no chain leads back to it")


def _canonical(chain):
    """A circle's modules rotated to start at the smallest, so each circle is named once."""
    ring = chain[:-1]
    i = ring.index(min(ring))
    return tuple(ring[i:] + ring[:i])


def describe_circle(circle: list[Arrow]) -> str:
    names = " -> ".join([circle[0].importer, *(a.imported for a in circle)])
    return "circle: " + names + "".join(f"\n    {a}" for a in circle)


# --------------------------------------------------------------------------
# The package
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arrows():
    import numpyvae

    return module_arrows(ROOT / PACKAGE, aliases=numpyvae.MOVED)


def _report(what, lines):
    return f"{len(lines)} {what}:\n" + "\n".join(str(line) for line in lines)


def test_the_walker_sees_the_packages_imports(arrows):
    """The walk is not vacuous: it finds arrows known to exist in each neighbourhood."""
    pairs = {(a.importer, a.imported) for a in arrows}
    assert ("numpyvae.model", "numpyvae.layers") in pairs
    assert ("numpyvae.backend", "numpyvae.ops") in pairs      # ``from . import ops as reference``
    assert ("numpyvae.fast.numba_ops", "numpyvae.ops") in pairs \
        or any(a.importer.startswith("numpyvae.fast.") and neighbourhood(a.imported) == "core"
               for a in arrows)
    assert ("numpyvae.__main__", "numpyvae.app.cli") in pairs
    assert all(neighbourhood(a.imported) in ("core", "fast", "app", "front door") for a in arrows)


def test_the_core_imports_neither_fast_nor_app(arrows):
    bad = [a for a in wrong_way_arrows(arrows) if neighbourhood(a.importer) == "core"]
    if bad:
        pytest.fail(_report("arrows from the core to fast/ or app/", bad), pytrace=False)


def test_the_fast_path_does_not_import_the_application(arrows):
    bad = [a for a in wrong_way_arrows(arrows) if neighbourhood(a.importer) == "fast"]
    if bad:
        pytest.fail(_report("arrows from fast/ to app/", bad), pytrace=False)


def test_no_import_circles(arrows):
    circles = import_circles(arrows)
    text = [describe_circle(c) for c in circles]
    if circles:
        pytest.fail(_report("import circles", text), pytrace=False)


def test_no_module_imports_another_modules_private_names(arrows):
    bad = private_name_arrows(arrows)
    if bad:
        pytest.fail(_report("imports of private names", bad), pytrace=False)


def test_no_module_of_the_package_imports_a_moved_module_by_its_old_name(arrows):
    """The old names (``numpyvae.MOVED``) are for users' code; the package uses the new ones."""
    bad = [f"{a} (imported as {a.via})" for a in arrows if a.via is not None]
    if bad:
        pytest.fail(_report("imports by an old name", bad), pytrace=False)


# --------------------------------------------------------------------------
# The walker itself, on a made-up package
# --------------------------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


@pytest.fixture
def made_up(tmp_path):
    """A package with one of each fault, at known lines."""
    return write_package(tmp_path, {
        "pkg/__init__.py": "import importlib\n",
        "pkg/__main__.py": "from .app.cli import main\n",
        "pkg/ops.py": "import numpy as np\n\n\ndef _pad(x):\n    return x\n",
        # a circle, closed by an import inside a function
        "pkg/model.py": "from . import ops\nfrom .layers import Linear\n",
        "pkg/layers.py": ("import os\n\n\ndef build():\n"
                          "    from .model import VAE\n    return VAE\n\n\nclass Linear:\n"
                          "    pass\n"),
        # a wrong-way arrow from the core (absolute, inside a function), and private names
        "pkg/conv.py": ("from .ops import _pad\nfrom . import ops\n\n\ndef fast():\n"
                        "    import pkg.fast.kernels\n    return ops._pad(pkg.fast.kernels)\n"),
        "pkg/fast/__init__.py": "",
        "pkg/fast/kernels.py": "from .. import ops\nfrom ..app import limits\n",
        "pkg/app/__init__.py": "",
        "pkg/app/limits.py": "from ..fast import kernels\nfrom .. import model\n",
        "pkg/app/cli.py": "from ..fast.kernels import *\nfrom pkg.limits import budget\n",
    })


def test_walker_reads_relative_absolute_and_function_level_imports(made_up):
    got = {str(a) for a in module_arrows(made_up, aliases={"pkg.limits": "pkg.app.limits"})}
    assert got == {
        "pkg/__main__.py:1 pkg.__main__ -> pkg.app.cli.main",
        "pkg/app/cli.py:1 pkg.app.cli -> pkg.fast.kernels",
        "pkg/app/cli.py:2 pkg.app.cli -> pkg.app.limits.budget",   # the old name, resolved
        "pkg/app/limits.py:1 pkg.app.limits -> pkg.fast.kernels",
        "pkg/app/limits.py:2 pkg.app.limits -> pkg.model",
        "pkg/conv.py:1 pkg.conv -> pkg.ops._pad",
        "pkg/conv.py:2 pkg.conv -> pkg.ops",
        "pkg/conv.py:6 pkg.conv -> pkg.fast.kernels",
        "pkg/conv.py:7 pkg.conv -> pkg.ops._pad",                  # ops._pad(...)
        "pkg/fast/kernels.py:1 pkg.fast.kernels -> pkg.ops",
        "pkg/fast/kernels.py:2 pkg.fast.kernels -> pkg.app.limits",
        "pkg/layers.py:5 pkg.layers -> pkg.model.VAE",
        "pkg/model.py:1 pkg.model -> pkg.ops",
        "pkg/model.py:2 pkg.model -> pkg.layers.Linear",
    }


def test_walker_finds_the_wrong_way_arrows(made_up):
    bad = wrong_way_arrows(module_arrows(made_up), package="pkg")
    assert [str(a) for a in bad] == [
        "pkg/conv.py:6 pkg.conv -> pkg.fast.kernels",
        "pkg/fast/kernels.py:2 pkg.fast.kernels -> pkg.app.limits",
    ]
    assert neighbourhood("pkg", "pkg") == neighbourhood("pkg.__main__", "pkg") == "front door"
    assert neighbourhood("pkg.fastidious", "pkg") == "core"


def test_walker_finds_the_circles_as_readable_chains(made_up):
    circles = import_circles(module_arrows(made_up))
    chains = [describe_circle(c) for c in circles]
    assert chains == [
        "circle: pkg.app.limits -> pkg.fast.kernels -> pkg.app.limits"
        "\n    pkg/app/limits.py:1 pkg.app.limits -> pkg.fast.kernels"
        "\n    pkg/fast/kernels.py:2 pkg.fast.kernels -> pkg.app.limits",
        "circle: pkg.layers -> pkg.model -> pkg.layers"
        "\n    pkg/layers.py:5 pkg.layers -> pkg.model.VAE"
        "\n    pkg/model.py:2 pkg.model -> pkg.layers.Linear",
    ]


def test_walker_finds_a_longer_circle_once(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "from . import c\n",
        "pkg/c.py": "def f():\n    from . import a\n",
        "pkg/d.py": "from . import a, b, c\n",
    })
    circles = import_circles(module_arrows(package))
    assert [describe_circle(c).splitlines()[0] for c in circles] == [
        "circle: pkg.a -> pkg.b -> pkg.c -> pkg.a"]
    assert str(circles[0][-1]) == "pkg/c.py:2 pkg.c -> pkg.a"


def test_walker_finds_private_names(tmp_path, made_up):
    assert [str(a) for a in private_name_arrows(module_arrows(made_up))] == [
        "pkg/conv.py:1 pkg.conv -> pkg.ops._pad",
        "pkg/conv.py:7 pkg.conv -> pkg.ops._pad",
    ]
    package = write_package(tmp_path / "other", {
        "pkg/__init__.py": "__version__ = '1'\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/_impl.py": "",
        "pkg/sub/public.py": "from . import _impl\n",          # its own package: allowed
        "pkg/user.py": "from .sub import _impl\nfrom . import __version__\n",
    })
    assert [str(a) for a in private_name_arrows(module_arrows(package))] == [
        "pkg/user.py:1 pkg.user -> pkg.sub._impl"]


def test_walker_notes_imports_by_an_old_name(made_up):
    arrows = module_arrows(made_up, aliases={"pkg.limits": "pkg.app.limits"})
    assert [(str(a), a.via) for a in arrows if a.via] == [
        ("pkg/app/cli.py:2 pkg.app.cli -> pkg.app.limits.budget", "pkg.limits")]


# --------------------------------------------------------------------------
# The reading path the layout page quotes: measured again, and as written
# --------------------------------------------------------------------------


def _reading_path_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "reading_path", Path(__file__).resolve().parent.parent / "benchmarks" / "reading_path.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reading_path_is_what_its_results_file_says(tmp_path, monkeypatch):
    # The frames from ``numpyvae train`` to each gradient, walked again on today's code:
    # a change of the path (a frame more or less) must come with its new results file.
    monkeypatch.setenv("NUMPYVAE_BENCH_RESULTS", str(tmp_path / "results"))
    reading_path = _reading_path_module()
    measured = reading_path.main()
    saved = json.loads((Path(__file__).resolve().parent.parent / "benchmarks" / "results"
                        / "reading_path.json").read_text(encoding="utf-8"))
    assert measured == saved


def test_the_layout_page_quotes_the_reading_path():
    root = Path(__file__).resolve().parent.parent
    saved = json.loads((root / "benchmarks" / "results" / "reading_path.json")
                       .read_text(encoding="utf-8"))
    page = (root / "docs" / "guide" / "layout.md").read_text(encoding="utf-8")
    for target, r in saved.items():
        row = (f"| {target} | {r['frames_from_command']} in {r['files_from_command']} | "
               f"{r['frames_from_step']} in {r['files_from_step']} |")
        assert row in page, f"docs/guide/layout.md: expected the row {row!r}"
    listed = "\n".join(f"{i}. `{frame}`"
                       for i, frame in enumerate(saved["KL gradient"]["path"], 1))
    assert listed in page, "docs/guide/layout.md: the path to the KL's gradient, as measured"
