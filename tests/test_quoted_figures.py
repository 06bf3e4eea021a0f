"""Every speed and memory figure the README quotes from a results file agrees with that file.

"The README" here is README.md with the website's guide pages (``docs/guide/``),
where its speed and conv sections now live. It quotes benchmark results: the speed table, which is
``benchmarks/results/summary.md`` as ``benchmarks/run_all.py`` writes it
(from ``peers.json``, ``startup.json`` and ``memory.json``), and figures in
its prose from ``peers.json``, ``core_share.json``, ``sustained.json`` and
``conv.json``. Each is checked here against the file it came from, as
rounded in the text: ``1.39x`` must be a ratio between 1.385 and 1.395,
``32,457`` a rate between 32,456.5 and 32,457.5, and a range such as
``1.1–1.25`` must hold every value it summarises. When a benchmark is run
again, its file changes and the failures name each figure to update.

Not checked: figures the README says were measured outside the benchmark
harness (in one process, on one machine's profile), ranges over several
runs of which the results file keeps the last (only the last is checked
against them), and quality figures (nats). A figure that matches no
results file is marked ``xfail(strict=True)`` with the reason: correcting
the README makes the check pass, and then the mark must go.

Docstrings and comments in the package quote no such figures: they name
the benchmark that measures them instead.

Reads markdown and JSON only; no benchmark runs here.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: The README and the website's guide pages, where the README's depth (the speed
#: tables, the conv VAE, beyond the ELBO) lives: the text whose figures are checked.
#: The speed page comes first: its targets table is the first headed "| target | measured |".
GUIDE = ROOT / "docs" / "guide"
PAGES = [ROOT / "README.md", GUIDE / "speed.md",
         *sorted(p for p in GUIDE.glob("*.md") if p.name != "speed.md")]
README = "\n\n".join(page.read_text(encoding="utf-8") for page in PAGES)
PROSE = " ".join(README.split())  # one space wherever the text wraps

#: A figure as written: "32,457", "0.35", "244".
NUMBER = r"(\d{1,3}(?:,\d{3})*(?:\.\d+)?|\d+(?:\.\d+)?)"
#: A table cell "median (slowest–fastest)".
CELL = re.compile(rf"{NUMBER} \({NUMBER}–{NUMBER}\)")


def results(name):
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def says(pattern, text=PROSE):
    """The figures (the groups of ``pattern``, a regex) where the README says ``pattern``."""
    match = re.search(pattern, text)
    assert match, (f"README.md and docs/guide/ no longer say {pattern!r}: find where the "
                   "figure went and update this check")
    return match.groups()


def _unit(text):
    """Half of the last digit's place of a figure as written: 0.005 for "1.39", 0.5 for "244"."""
    return 0.5 * 10.0 ** -len(text.partition(".")[2])


def rounds_to(text, value):
    """Whether ``value`` rounds to ``text``, a figure as written ("32,457", "1.39", "0.35")."""
    return abs(float(text.replace(",", "")) - value) <= _unit(text) * (1 + 1e-9)


def within(low, high, value):
    """Whether ``value``, rounded as the range's ends are, lies in ``low``–``high``."""
    return (float(low) - _unit(low) * (1 + 1e-9) <= value
            <= float(high.replace(",", "")) + _unit(high) * (1 + 1e-9))


def check(pairs):
    """``pairs`` of (figure as written, value from the file, what): the ones that disagree."""
    wrong = [f"{what}: README says {text}, the results file gives {value:.6g}"
             for text, value, what in pairs if not rounds_to(text, value)]
    assert not wrong, "\n".join(wrong)


def table(header):
    """The rows of the README's markdown table whose header row starts with ``header``.

    A dict from each row's first cell to its other cells.
    """
    lines = README.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, f"README.md and docs/guide/ have no table headed {header!r}"
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def cell_pairs(cell, result, what):
    """A cell "32,457 (29,198–33,298)" against a result's median, slowest and fastest round."""
    match = CELL.search(cell)
    assert match, f"{what}: expected 'median (slowest–fastest)', got {cell!r}"
    rounds = result.get("rounds", [])
    low = result.get("min", min(rounds) if rounds else None)
    high = result.get("max", max(rounds) if rounds else None)
    return [(match[1], result["samples_per_s"], what), (match[2], low, f"{what}, slowest"),
            (match[3], high, f"{what}, fastest")]


# --------------------------------------------------------------------------
# The speed table: summary.md, shown verbatim in the README
# --------------------------------------------------------------------------

PEERS = results("peers")
SUMMARY = PEERS["summary"]
IMPLEMENTATIONS = {
    "numpyvae (numba backend, MKL)": "numba",
    "numpyvae (numba backend, NumPy's OpenBLAS)": "numba openblas",
    "PyTorch eager (fused Adam)": "torch",
    "torch.compile (Inductor)": "torch.compile",
    "JAX jit (whole step, optax)": "jax",
}
#: The speed table's columns: where each one's results are in peers.json, and its summary.
CONDITIONS = [
    (lambda impl: PEERS["idle"]["32"][impl], "idle batch 32"),
    (lambda impl: PEERS["idle"]["128"][impl], "idle batch 128"),
    (lambda impl: PEERS["idle"]["512"][impl], "idle batch 512"),
    (lambda impl: PEERS["contended"]["1"][impl], "contended 1 batch 128"),
    (lambda impl: PEERS["contended"]["2"][impl], "contended 2 batch 128"),
    (lambda impl: PEERS["one_core"][impl], "one core batch 128"),
]


def test_the_readme_shows_the_speed_summary_as_written():
    summary = (RESULTS / "summary.md").read_text(encoding="utf-8")
    marker = "<!-- speed table: benchmarks/results/summary.md -->\n"
    assert marker + summary in README, "README.md's speed table differs from summary.md"


def test_the_speed_table_is_peers_json():
    rows = table("| implementation | batch 32, idle |")
    pairs = []
    for label, impl in IMPLEMENTATIONS.items():
        for cell, (where, name) in zip(rows[label], CONDITIONS, strict=True):
            if cell:  # an implementation not run in that condition leaves its cell empty
                pairs += cell_pairs(cell, where(impl), f"{label}, {name}")
    for cell, (_, name) in zip(rows["**numpyvae ÷ best peer**"], CONDITIONS, strict=True):
        ratio, peer = says(r"([\d.]+)x \(([^)]+)\)", cell)
        assert peer == SUMMARY[name]["best_peer"], f"best peer, {name}"
        pairs.append((ratio, SUMMARY[name]["ratio"], f"numpyvae ÷ best peer, {name}"))
    for cell, (where, name) in zip(rows["share of its own idle speed (batch 128)"], CONDITIONS,
                                   strict=True):
        for impl, percent in re.findall(r"([a-z. ]+?) (\d+)%", cell):
            idle = PEERS["idle"]["128"][impl.strip(", ")]["samples_per_s"]
            share = where(impl.strip(", "))["samples_per_s"] / idle
            pairs.append((percent, 100 * share, f"share of idle speed, {impl}, {name}"))
    check(pairs)


def test_the_start_up_memory_and_thread_lines_are_their_results():
    startup, memory = results("startup"), results("memory")
    cached = startup["cached_median"]
    imp, cold, first, launch = says(
        r"Start-up: `import numpyvae` (\d+) ms \(Numba not imported\); first training step "
        r"with a cold kernel cache ([\d.]+) s \(compiling\), with the cache ([\d.]+) s; "
        r"launch to first step, cached: ([\d.]+) s")
    assert startup["numba_imported_by_import"] is False
    pairs = [(imp, 1000 * startup["import_numpyvae_s"], "import numpyvae, ms"),
             (cold, startup["cold"]["first_step_s"], "first step, cold"),
             (first, cached["first_step_s"], "first step, cached"),
             (launch, cached["launch_to_first_step_s"], "launch to first step")]
    line = says(r"Peak memory of each benchmark process \(same \d+ examples in memory\): "
                r"([^.]+(?:\.\d[^.]*)*)\.")[0]
    for impl, mib in re.findall(r"([a-z. ]+?) (\d+) MiB", line):
        impl = impl.strip(", ")
        pairs.append((mib, PEERS["peak_rss_mib"][impl], f"peak memory, {impl}"))
    line = says(r"Peak memory of one epoch \(([^)]+)\)")[0]
    for impl, mib in re.findall(r"([a-z. ]+?) (\d+) MiB", line):
        impl = impl.strip(", ")
        pairs.append((mib, memory["runs"][impl]["peak_rss_mib"], f"one epoch's peak, {impl}"))
    line = says(r"The training step's own timing at batch 128 [^:]*: (.*?chose \d+; .*?chose \d+; "
                r".*?chose \d+)\.")[0]
    keys = {"idle": "numba_threads_idle", "1 competing": "numba_threads_contended_1",
            "2 competing": "numba_threads_contended_2"}
    for cond, one, two, chose in re.findall(
            r"([\w ]+): 1 thread ([\d.]+) ms, 2 threads ([\d.]+) ms, chose (\d)", line):
        measured = PEERS[keys[cond.strip()]]
        pairs += [(one, 1000 * measured["step_s_by_threads"]["1"], f"{cond}: 1 thread"),
                  (two, 1000 * measured["step_s_by_threads"]["2"], f"{cond}: 2 threads")]
        assert int(chose) == measured["chosen_threads"], cond
    check(pairs)


def test_the_regression_and_threading_tables_are_peers_json():
    pairs = []
    baseline = PEERS["regression"]["baseline"]
    rows = table("| configuration | before | now (default) | now, per-op path |")
    for label, cells in rows.items():
        impl = label.split()[0]
        runs = PEERS["regression"][label]
        names = [f"{impl} @{baseline}", f"{impl} now", f"{impl} per-op now"]
        for cell, name in zip(cells, names, strict=True):
            if cell:
                pairs += cell_pairs(cell, runs[name], f"{label}, {name}")
    rows = table("| | batch 32 idle | batch 32 contended |")
    columns = ["batch 32 idle", "batch 32 contended", "batch 128 idle", "batch 128 contended"]
    for label, cells in rows.items():
        for cell, column in zip(cells, columns, strict=True):
            pairs += cell_pairs(cell, PEERS["threading"][column][label], f"{label}, {column}")
    check(pairs)


def test_the_targets_table_is_its_results():
    rows = table("| target | measured | met |")
    startup = results("startup")
    pairs = []
    for name, key in [("idle, batch 32", "idle batch 32"), ("idle, batch 128", "idle batch 128"),
                      ("idle, batch 512", "idle batch 512"),
                      ("one competing process, batch 128", "contended 1 batch 128")]:
        ratio, peer = says(r"([\d.]+)x (\S+)", rows[f"{name}: numba >= 1.2x the best peer"][0])
        assert peer == SUMMARY[key]["best_peer"], name
        pairs.append((ratio, SUMMARY[key]["ratio"], name))
    kept = rows["one competing process: numba keeps >= 45% of its idle speed"][0]
    pairs.append((kept.rstrip("%"), 100 * SUMMARY["contended 1 batch 128"]["kept_of_idle"]["numba"],
                  "kept of idle speed"))
    threads = rows["one core by affinity: numba runs one thread"][0]
    assert int(threads.split()[0]) == PEERS["numba_threads_one_core"]["numba_threads"]
    pairs.append((rows["cached start: first step within 2 s of launch"][0].split()[0],
                  startup["cached_median"]["launch_to_first_step_s"], "cached start"))
    ours, peer, theirs = says(r"(\d+) MiB vs (\S+) (\d+) MiB",
                              rows["peak memory below every peer's (same data, batch 128)"][0])
    pairs += [(ours, PEERS["peak_rss_mib"]["numba"], "peak memory, numba"),
              (theirs, PEERS["peak_rss_mib"][peer], f"peak memory, {peer}")]
    baseline = PEERS["regression"]["baseline"]
    for label, cells in rows.items():
        if label.startswith("no regression: "):
            config = label.removeprefix("no regression: ").split(", now vs")[0]
            impl = config.split()[0]
            runs = PEERS["regression"][config]
            ratio = runs[f"{impl} now"]["samples_per_s"] / runs[f"{impl} @{baseline}"][
                "samples_per_s"]
            pairs.append((cells[0].rstrip("x"), ratio, label))
    check(pairs)


# --------------------------------------------------------------------------
# Figures in the README's prose
# --------------------------------------------------------------------------


def _mkl_over_openblas():
    return [PEERS["idle"][b]["numba"]["samples_per_s"]
            / PEERS["idle"][b]["numba openblas"]["samples_per_s"] for b in ("32", "128", "512")]


def test_mkl_against_openblas():
    ratios = _mkl_over_openblas()
    for pattern in (r"\*\*MKL's `sgemm`\*\* \(on Intel CPUs\): the step ([\d.]+)–([\d.]+)× "
                    r"as fast as on OpenBLAS",):
        low, high = says(pattern)
        assert all(within(low, high, r) for r in ratios), (pattern, ratios)


def test_what_the_speed_table_says():
    figures = says(r"default VAE ([\d.]+)× as fast as JAX at batch 32, ([\d.]+)× at batch 128 "
                   r"and ([\d.]+)× torch.compile at batch 512, on an idle machine; with one "
                   r"competing process it runs ([\d.]+)× JAX, with two ([\d.]+)×, and on one "
                   r"core ([\d.]+)×")
    keys = ["idle batch 32", "idle batch 128", "idle batch 512", "contended 1 batch 128",
            "contended 2 batch 128", "one core batch 128"]
    pairs = [(f, SUMMARY[k]["ratio"], k) for f, k in zip(figures, keys, strict=True)]
    last = says(r"\(\d\.\d+, \d\.\d+ and (\d\.\d+): the 1.2× target met")[0]
    pairs.append((last, SUMMARY["contended 1 batch 128"]["ratio"], "the last of three runs"))
    check(pairs)
    low, high = says(r"so that column is the one-core column again \((\d+)–(\d+)% of it\)")
    share = (PEERS["contended"]["1"]["numba"]["samples_per_s"]
             / PEERS["one_core"]["numba"]["samples_per_s"])
    assert within(low, high, 100 * share), share


def test_the_core_share_figure_is_core_share_json():
    share = results("core_share")
    busy, idle = share["1 competing process"], share["idle"]
    cores, low, high, idle_cores, speed = says(
        r"granted ([\d.]+) cores \(([\d.]+)–([\d.]+) over six rounds; ([\d.]+) when idle\) "
        r"and ran ([\d.]+)× as fast as on one thread \(`benchmarks/bench_core_share.py`")
    check([(cores, busy["2"]["cores"], "cores, two threads beside a busy process"),
           (low, busy["2"]["cores_min"], "cores, fewest"),
           (high, busy["2"]["cores_max"], "cores, most"),
           (idle_cores, idle["2"]["cores"], "cores, two threads idle"),
           (speed, busy["2"]["samples_per_s"] / busy["1"]["samples_per_s"],
            "two threads' speed over one thread's, beside a busy process")])


def test_the_cores_granted_to_one_thread_and_two():
    busy = results("core_share")["1 competing process"]
    one, two = says(r"\(measured: CPU time ÷ wall time ([\d.]+) and ([\d.]+)\)")
    check([(one, busy["1"]["cores"], "one thread"), (two, busy["2"]["cores"], "two threads")])


def _threading(column, label):
    return PEERS["threading"][column][label]["samples_per_s"]


def test_the_one_call_step_against_the_per_op_path():
    at32, at128 = says(r"the one-call step runs ([\d.]+)× the per-op path at batch 32 and "
                       r"([\d.]+)× at batch 128 \(threading table above\)")
    check([(at, _threading(f"batch {b} idle", "numba, tbb (default)")
            / _threading(f"batch {b} idle", "numba per-op, tbb (default)"), f"batch {b}")
           for at, b in ((at32, 32), (at128, 128))])


def test_openmp_against_tbb_beside_a_busy_process():
    omp, low, tbb = says(rf"two spinning threads run the batch-32 step at {NUMBER} samples/s "
                         rf"\(rounds as low as {NUMBER}\) against TBB's {NUMBER}")
    runs = PEERS["threading"]["batch 32 contended"]
    check([(omp, runs["numba, omp"]["samples_per_s"], "OpenMP"),
           (low, runs["numba, omp"]["min"], "OpenMP, slowest round"),
           (tbb, runs["numba, tbb (default)"]["samples_per_s"], "TBB")])


def test_against_the_commit_before_the_redesign():
    at32, at128, f64, numpy = says(
        r"\(4e52964, the regression table above\): ([\d.]+)× at batch 32, ([\d.]+)× at batch "
        r"128, ([\d.]+)× in float64 .*? The numpy backend: ([\d.]+)×")
    pairs = []
    for figure, config in [(at32, "numba batch 32 float32"), (at128, "numba batch 128 float32"),
                           (f64, "numba batch 128 float64"), (numpy, "numpy batch 128 float32")]:
        impl, runs = config.split()[0], PEERS["regression"][config]
        pairs.append((figure, runs[f"{impl} now"]["samples_per_s"]
                      / runs[f"{impl} @4e52964"]["samples_per_s"], config))
    check(pairs)


def test_long_runs_are_sustained_json():
    sustained = results("sustained")
    runs = sustained["after_warmup"]
    before = f"numba @{sustained['before']}"
    rows = table("| implementation | samples/s after 3,000 steps |")
    labels = {"numpyvae (numba backend, MKL)": "numba",
              f"numpyvae at {sustained['before']} (before the subnormal flush)": before,
              "PyTorch eager": "torch", "torch.compile": "torch.compile", "JAX jit": "jax"}
    assert set(rows) == set(labels)
    pairs = [(rows[label][0], runs[impl]["samples_per_s"], label) for label, impl in labels.items()]
    jax, own = says(r"After 3,000 steps numpyvae runs ([\d.]+)× JAX, and ([\d.]+)× its own commit")
    ours = runs["numba"]["samples_per_s"]
    pairs += [(jax, ours / runs["jax"]["samples_per_s"], "against JAX"),
              (own, ours / runs[before]["samples_per_s"], "against its own older commit")]
    check(pairs)


CONV = results("conv")


def test_the_conv_table_and_memory_are_conv_json():
    rows = table("| implementation | batch 32 | batch 128 |")
    labels = {"numpyvae, numba backend": "numba", "numpyvae, numpy backend": "numpy",
              "PyTorch 2.13 eager, same architecture and Adam step": "torch"}
    pairs = []
    for label, impl in labels.items():
        for cell, batch in zip(rows[label], ("32", "128"), strict=True):
            run = CONV["throughput"][batch][impl]
            pairs += cell_pairs(cell, run, f"conv {label}, batch {batch}")
            ratio = re.search(r"([\d.]+)× PyTorch", cell)
            if ratio:
                pairs.append((ratio[1], run["ratio_to_torch"], f"conv {label} ÷ PyTorch, {batch}"))
    numba, numpy, low, high = says(r"Peak resident memory of a training run \(batch 128, "
                                   r"Fashion-MNIST\): numba backend (\d+) MiB, numpy backend "
                                   r"(\d+) MiB, PyTorch (\d+)–(\d+) MiB")
    memory = CONV["memory"]
    pairs += [(numba, memory["numba"]["peak_rss_mib"], "conv peak memory, numba"),
              (numpy, memory["numpy"]["peak_rss_mib"], "conv peak memory, numpy")]
    assert within(low, high, memory["torch"]["peak_rss_mib"])
    slower32, slower128 = says(r"\| ([\d.]+)× slower at batch 32, ([\d.]+)× at batch 128 \|")
    pairs += [(slower32, 1 / CONV["throughput"]["32"]["numpy"]["ratio_to_torch"],
               "numpy reference, times slower than PyTorch, batch 32"),
              (slower128, 1 / CONV["throughput"]["128"]["numpy"]["ratio_to_torch"],
               "numpy reference, times slower than PyTorch, batch 128")]
    check(pairs)
    for pattern, batch in [(r"numba ÷ PyTorch was ([\d.]+)–([\d.]+)× at batch 32", "32"),
                           (r"and ([\d.]+)–([\d.]+)× at batch 128 \(before the grouped", "128")]:
        low, high = says(pattern)  # over three runs, of which conv.json keeps the last
        assert within(low, high, CONV["throughput"][batch]["numba"]["ratio_to_torch"]), pattern


def test_the_conv_memory_target():
    numba, numpy, torch = says(r"\| (\d+) and (\d+) MiB against (\d+) MiB \|")
    memory = CONV["memory"]
    check([(numba, memory["numba"]["peak_rss_mib"], "numba"),
           (numpy, memory["numpy"]["peak_rss_mib"], "numpy"),
           (torch, memory["torch"]["peak_rss_mib"], "torch")])


def test_the_direct_convolution_against_im2col():
    low, high = says(r"The direct six-loop convolution, also kept there, measured "
                     r"([\d.]+)–([\d.]+)× slower")
    kernels = [k for k in CONV["kernels"].values()
               if isinstance(k, dict) and "direct_forward_ms" in k]
    slower = [k["direct_forward_ms"] / k["numba_forward_ms"] for k in kernels]
    assert slower and all(within(low, high, r) for r in slower), slower


#: A speed or memory figure as prose writes one: "1.4 times as fast", "36,000 samples/s", "2.3 ms".
FIGURE = re.compile(r"\d(?:\.\d+)? ?(?:x|×|times) (?:as fast|faster|slower)"
                    r"|[\d,]+ samples/s|\d+ ?GFLOP/s|\d(?:\.\d+)? ?(?:ms|us|µs|MiB|MB)\b")


def _figures(paths):
    return [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in paths
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if FIGURE.search(line) and 'f"' not in line]


def test_the_package_quotes_no_speed_figures():
    # A docstring or comment names the benchmark that measured a figure; a
    # number there would go stale with no test to notice.
    found = _figures(sorted((ROOT / "numpyvae").rglob("*.py")))
    assert not found, "\n".join(found)


def test_the_docs_pages_quote_no_unchecked_figures():
    # docs/*.md quote no benchmark figures today; one added there needs a check here.
    found = _figures(sorted((ROOT / "docs").glob("*.md")))
    assert not found, "\n".join(found)


def test_the_first_run_table_is_cold_start_json():
    cold_start = results("cold_start")
    rows = table("| command | first training step, empty kernel cache |")
    assert len(rows) == len(cold_start["commands"])
    pairs = []
    for name, measured in cold_start["commands"].items():
        cells = rows[f"`{measured['command']}`"]
        for cell, (when, key) in zip(cells, [("cold", "first_step_s"), ("cold", "total_s"),
                                             ("cached", "first_step_s"),
                                             ("cached", "total_s")], strict=True):
            value = measured[when][key]
            if value is None:  # a command without a training step
                assert cell == "–", f"{name}, {when} {key}: {cell!r}"
                continue
            pairs.append((says(r"([\d.]+) s", cell)[0], value, f"{name}, {when} {key}"))
        compiled = measured["cold"]["kernels_compiled"]
        if compiled:
            assert f"({compiled} kernels compiled" in cells[1], f"{name}: kernels compiled"
    check(pairs)
    install = cold_start["install"]  # the interpreter measured, and what it ran on
    blas = re.escape(install["numba_backend_blas"])
    says(rf"NumPy {re.escape(install['numpy'])}, Numba {re.escape(install['numba'])} on "
         rf"{install['numba_threading_layer'].upper()} with {blas}")


def test_the_quick_start_install_table_is_peers_student_json():
    student = results("peers_student")
    assert student["installs"]["numba"]["venv"] is True  # numpyvae measured in a venv
    rows = table("| install as the Quick start gives it |")
    labels = {"numpyvae (numba backend)": "numba", "PyTorch eager (fused Adam)": "torch",
              "torch.compile (Inductor)": "torch.compile", "JAX jit (whole step, optax)": "jax",
              "the same, on NumPy's OpenBLAS": "numba openblas"}
    where = [student["idle"]["32"], student["idle"]["128"], student["idle"]["512"],
             student["contended"]["1"], student["contended"]["2"], student["one_core"]]
    names = ["idle 32", "idle 128", "idle 512", "1 competing", "2 competing", "one core"]
    pairs = []
    for label, impl in labels.items():
        if impl not in student["installs"]:
            continue
        runs_on, *cells = rows[label]
        install = student["installs"][impl]
        assert runs_on == f"{install['threading_layer']}; {install['blas']}", label
        for cell, table_of, name in zip(cells, where, names, strict=True):
            if impl not in table_of:  # not run in that condition: an empty cell
                assert cell == "", f"{label}, {name}: {cell!r}"
                continue
            pairs += cell_pairs(cell, table_of[impl], f"{label}, {name}")
    keys = ["idle batch 32", "idle batch 128", "idle batch 512", "contended 1 batch 128",
            "contended 2 batch 128", "one core batch 128"]
    for cell, key in zip(rows["**numpyvae ÷ best peer**"][1:], keys, strict=True):
        ratio, peer = says(r"([\d.]+)x \(([^)]+)\)", cell)
        assert peer == student["summary"][key]["best_peer"], key
        pairs.append((ratio, student["summary"][key]["ratio"], f"÷ best peer, {key}"))
    idle = student["idle"]["128"]["numba"]["samples_per_s"]
    for cell, table_of, name in zip(rows["numpyvae's share of its own idle speed (batch 128)"][4:],
                                    where[3:], names[3:], strict=True):
        pairs.append((says(r"(\d+)%", cell)[0], 100 * table_of["numba"]["samples_per_s"] / idle,
                      f"share of idle speed, {name}"))
    check(pairs)


def test_the_quick_start_install_spread_is_its_twelve_runs():
    runs = [results(f"peers_student_run{i}") for i in range(1, 13)]
    assert runs[-1] == results("peers_student"), "the table is the last of the twelve runs"
    R = r"([\d.]+)–([\d.]+)"
    M = rf"{R}× \(median ([\d.]+)\)"
    *ratios, = says(rf"Across the twelve, numpyvae ÷ best peer was {M} idle at batch 32, "
                    rf"{M} at 128, {M} at 512, {M} with one "
                    rf"competing process, {M} with two, {M} on one core; MKL against "
                    rf"OpenBLAS in the same install, {R}× idle, {R}× with one competing "
                    rf"process and {R}× with two; with one competing process numpyvae kept "
                    rf"(\d+)–(\d+)% of its idle speed")
    keys = ["idle batch 32", "idle batch 128", "idle batch 512", "contended 1 batch 128",
            "contended 2 batch 128", "one core batch 128"]
    conditions = [("idle", "128"), ("contended", "1"), ("contended", "2")]
    peer_ratios = [[r["summary"][k]["ratio"] for r in runs] for k in keys]
    values = [[r[a][b]["numba"]["samples_per_s"] / r[a][b]["numba openblas"]["samples_per_s"]
               for r in runs] for a, b in conditions]
    values.append([100 * r["contended"]["1"]["numba"]["samples_per_s"]
                   / r["idle"]["128"]["numba"]["samples_per_s"] for r in runs])
    quoted = [tuple(ratios[3 * i:3 * i + 3]) for i in range(len(keys))]
    rest = ratios[3 * len(keys):]
    quoted += list(zip(rest[::2], rest[1::2], strict=True))
    wrong = []
    for words, measured in zip(quoted, peer_ratios + values, strict=True):
        low, high, *median = words
        ok = rounds_to(low, min(measured)) and rounds_to(high, max(measured))
        if median:
            ok = ok and rounds_to(median[0], statistics.median(measured))
        if not ok:
            wrong.append(f"{words} against {min(measured):.4g}–{max(measured):.4g}, "
                         f"median {statistics.median(measured):.4g}")
    assert not wrong, wrong
    numbers = ["none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
               "ten", "eleven", "twelve"]
    below = [numbers[sum(ratio < 1.2 for ratio in values)] for values in peer_ratios[:4]]
    quoted = says(r"Runs below 1\.2× the best peer, of the twelve: (\w+) idle at batch 32, "
                  r"(\w+) at 128, (\w+) at 512, (\w+) with one competing process\.")
    assert list(quoted) == below


def test_no_results_file_names_a_folder_of_the_machine_it_ran_on():
    # A results file says which kind of install ran (a venv, its bin/python),
    # never where it was on the machine that measured it.
    def strings(value, where):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from strings(item, f"{where}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from strings(item, f"{where}[{i}]")
        elif isinstance(value, str):
            yield where, value

    paths = [f"{where}: {text}" for file in sorted(RESULTS.glob("*.json"))
             for where, text in strings(json.loads(file.read_text()), file.name)
             if text.startswith(("/", "~")) or re.match(r"[A-Za-z]:\\", text)]
    assert not paths, paths


def test_the_whole_products_figures_are_bench_whole_products_results():
    mkl, openblas = (results(name)["results"] for name in ("whole_products",
                                                            "whole_products_openblas"))
    F = r"([\d.]+)"
    figures = says(rf"Quick start's venv\): {F}× at batch 128 with MKL \(quartiles {F}–{F}\), "
                   rf"{F}× with OpenBLAS \({F}–{F}\); at batch 32 {F}× and {F}×, at 256 "
                   rf"{F}× and {F}×; the same bits after the first step in every case")
    measured = [mkl["128"]["ratio_median"], *mkl["128"]["ratio_quartiles"],
                openblas["128"]["ratio_median"], *openblas["128"]["ratio_quartiles"],
                mkl["32"]["ratio_median"], openblas["32"]["ratio_median"],
                mkl["256"]["ratio_median"], openblas["256"]["ratio_median"]]
    check(list(zip(figures, measured, [f"figure {i}" for i in range(len(measured))],
                   strict=True)))
    assert all(r["same_bits"] for run in (mkl, openblas) for r in run.values())


def test_the_batch_512_gap_is_the_median_of_the_twelve_runs():
    runs = [results(f"peers_student_run{i}") for i in range(1, 13)]
    quoted = says(r"There numpyvae ran ([\d.]+)× the best peer \(the median of the twelve runs "
                  r"above\), short of the 1\.2× it aims for")[0]
    check([(quoted, statistics.median(r["summary"]["idle batch 512"]["ratio"] for r in runs),
            "batch 512, median of the twelve runs")])


def test_the_blas_libraries_table_is_bench_blas_libraries_results():
    measured = results("blas_libraries")["results"]
    rows = table("| BLAS library, one thread |")
    keys = {"Intel MKL 2024.2.2 (the Quick start's)": ("--mkl 1", "2024.2.2"),
            "Intel MKL 2026.2": ("--mkl 2", "2026.2"),
            "NumPy 2.4.6's OpenBLAS 0.3.31": ("openblas", "openblas 0.3.31"),
            "BLIS 1.3.4 (the `blis` package)": ("blis", "blis package 1.3.4")}
    assert set(rows) == set(keys)
    pairs = []
    for label, (key, named) in keys.items():
        big, ratio_big, gflops, small, ratio_small = rows[label]
        for cell, ratio, rows_ in ((big, ratio_big, "256"), (small, ratio_small, "64")):
            r = measured[rows_][key]
            assert named in r["library"], (label, r["library"])
            low, high = r["total_us_range"]
            pairs += cell_pairs(cell, {"samples_per_s": r["total_us"], "min": low, "max": high},
                                f"{label}, {rows_} rows")
            pairs.append((ratio, r["time_over_first"], f"{label}, {rows_} rows, ratio"))
        low, high = gflops.split("–")
        rates = measured["256"][key]["gflops"].values()
        pairs += [(low, min(rates), f"{label}, slowest product"),
                  (high, max(rates), f"{label}, fastest product")]
    check(pairs)


def test_the_threading_layers_beside_the_peers_are_threading_student_json():
    measured = results("threading_student")
    rows = table("| Quick start's install | batch 32 idle |")
    columns = [f"batch {b} {c}" for b in (32, 128, 512) for c in ("idle", "contended")]
    pairs = []
    for label, cells in rows.items():
        for cell, column in zip(cells, columns, strict=True):
            pairs += cell_pairs(cell, measured["threading"][column][label], f"{label}, {column}")
    summary = measured["summary"]
    F = r"([\d.]+)×"
    for layer, name in (("TBB", "numba, tbb (default)"), ("OpenMP", "numba, omp")):
        figures = says(rf"On {layer} numpyvae ran {F}, {F} and {F} the best peer idle at batch 32, "
                       r"128 and 512" if layer == "TBB" else rf"on OpenMP {F}, {F} and {F}\.")
        for figure, b in zip(figures, (32, 128, 512), strict=True):
            pairs.append((figure, summary[f"batch {b} idle"]["ratio"][name], f"{name}, {b}"))
    figures = says(rf"Round by round, OpenMP ran {F}, {F} and {F} TBB's speed idle, and {F}, "
                   rf"{F} and {F} beside a busy process")
    for figure, (b, c) in zip(figures, [(b, c) for c in ("idle", "contended")
                                         for b in (32, 128, 512)], strict=True):
        pairs.append((figure, summary[f"batch {b} {c}"]["per_round_over_default"]["numba, omp"],
                      f"OpenMP over TBB, batch {b} {c}"))
    check(pairs)


def test_the_chooser_figures_are_bench_chooser_results():
    measured = results("chooser")["results"]
    F = r"([\d.]+)"
    figures = says(rf"rounds\): idle, {F}× at batch 128 and {F}× at 512 \(quartiles {F}–{F} "
                   rf"and {F}–{F}\) against two threads; beside a busy process, {F}× and {F}× "
                   rf"against one thread\. The doubling-only wait, in the same rounds: {F}×, "
                   rf"{F}×, {F}× and {F}×\.")
    cases = [("idle", "128"), ("idle", "512"), ("1 competing process", "128"),
             ("1 competing process", "512")]
    idle = [measured[c][b]["chooser"] for c, b in cases[:2]]
    values = ([r["ratio_median"] for r in idle] + idle[0]["ratio_quartiles"]
              + idle[1]["ratio_quartiles"]
              + [measured[c][b]["chooser"]["ratio_median"] for c, b in cases[2:]]
              + [measured[c][b]["doubling"]["ratio_median"] for c, b in cases])
    check(list(zip(figures, values, [f"figure {i}" for i in range(len(values))], strict=True)))
    for condition, count in (("idle", 2), ("1 competing process", 1)):
        assert all(r["fixed"]["last_count"] == count for r in measured[condition].values())
