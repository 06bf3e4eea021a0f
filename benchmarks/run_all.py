"""Run every benchmark, save the JSON results, draw the chart and write the speed table.

    python benchmarks/run_all.py [--data-dir FOLDER_WITH_FASHION_MNIST] [--quick] [--kernels]

Writes to ``benchmarks/results/`` (or ``$NUMPYVAE_BENCH_RESULTS``):
``peers.json`` (:mod:`bench_peers`: numpyvae against PyTorch eager,
torch.compile and JAX, idle, contended and on one core, the threading
layers, and numpyvae against an older commit of itself), ``startup.json``,
``memory.json``, ``kernels.json`` (with ``--kernels``), ``benchmarks.png``
and ``summary.md`` (the speed table of ``docs/guide/speed.md``, with every target and whether
it was met). The default run takes under ten minutes on two cores;
``--quick`` is a smoke run. ``bench_training.py`` (numpyvae's backends
against plain NumPy and PyTorch, float32 and float64) runs on its own.
"""

from __future__ import annotations

import argparse
import json
import time

import common  # noqa: I001

common.set_threads()

import bench_kernels  # noqa: E402
import bench_memory  # noqa: E402
import bench_peers  # noqa: E402
import bench_startup  # noqa: E402

PEER_LABELS = {"numba": "numpyvae (numba backend, MKL)",
               "numba openblas": "numpyvae (numba backend, NumPy's OpenBLAS)",
               "torch": "PyTorch eager (fused Adam)",
               "torch.compile": "torch.compile (Inductor)", "jax": "JAX jit (whole step, optax)"}
TARGET = 1.2  # times the best peer
KEEP = 0.45  # of its own idle throughput, with one competing process


def _cell(r):
    if not r:
        return ""
    return f"{r['samples_per_s']:,.0f} ({r['min']:,.0f}–{r['max']:,.0f})"


def _columns(peers):
    cols = [(f"batch {b}, idle", peers["idle"].get(str(b), {})) for b in (32, 128, 512)]
    cols += [(f"batch 128, {k} competing process{'es' if k == '2' else ''}",
              peers["contended"].get(k, {})) for k in ("1", "2")]
    cols.append(("batch 128, one core (affinity)", peers.get("one_core") or {}))
    return [(name, table) for name, table in cols if table]


def targets(peers, startup, memory):
    """Each target of the issue: the measured figure and whether it is met."""
    rows = []
    s = peers["summary"]
    for b in ("32", "128", "512"):
        r = s.get(f"idle batch {b}")
        if r:
            rows.append((f"idle, batch {b}: numba >= {TARGET}x the best peer",
                         f"{r['ratio']:.2f}x {r['best_peer']}", r["ratio"] >= TARGET))
    r = s.get("contended 1 batch 128")
    if r:
        rows.append((f"one competing process, batch 128: numba >= {TARGET}x the best peer",
                     f"{r['ratio']:.2f}x {r['best_peer']}", r["ratio"] >= TARGET))
        kept = r["kept_of_idle"].get("numba")
        if kept is not None:
            rows.append((f"one competing process: numba keeps >= {KEEP:.0%} of its idle speed",
                         f"{kept:.0%}", kept >= KEEP))
    one = peers.get("numba_threads_one_core") or {}
    if one:
        rows.append(("one core by affinity: numba runs one thread",
                     f"{one.get('numba_threads')} thread(s)", one.get("numba_threads") == 1))
    if startup:
        t = startup["cached_median"]["launch_to_first_step_s"]
        rows.append(("cached start: first step within 2 s of launch", f"{t:.2f} s", t <= 2.0))
    rss = s.get("peak_rss_mib")
    others = {k: v for k, v in (rss or {}).items() if bench_peers.is_peer(k)}
    if others:  # no peer installed (PyTorch and JAX are optional): nothing to compare with
        lowest = min(others, key=others.get)
        rows.append(("peak memory below every peer's (same data, batch 128)",
                     f"{rss['numba']:.0f} MiB vs {lowest} {others[lowest]:.0f} MiB",
                     rss["numba"] < others[lowest]))
    for key, table in (peers.get("regression") or {}).items():
        if key == "baseline" or not table:
            continue
        old = next((v for k, v in table.items() if "@" in k), None)
        new = table.get(f"{key.split()[0]} now")
        if old and new:
            ratio = new["samples_per_s"] / old["samples_per_s"]
            rows.append((f"no regression: {key}, now vs {peers['regression']['baseline']}",
                         f"{ratio:.2f}x", ratio >= 0.97))
    return rows


def _start_load(peers):
    """The 1-minute load average before the run (older results: when it ended)."""
    return peers.get("load_average_at_start",
                     peers.get("machine", {}).get("load_average_1min", float("nan")))


def summary_markdown(peers, startup, memory, kernels=None):
    m = peers.get("machine", {})
    cols = _columns(peers)
    lines = [
        f"Measured on {m.get('cpu', '?')} ({m.get('cores', '?')} cores; load average "
        f"{_start_load(peers):.1f} when the run started), data: "
        f"{peers['data']}. Training samples per second, float32, 784-400-20 VAE with Adam: "
        f"median of {peers['rounds']} interleaved rounds, slowest and fastest round in "
        f"brackets. Every peer was first validated: same initial weights and noise, losses "
        f"equal to numpyvae's to 1e-4 relative over 20 steps.",
        "",
        "| implementation | " + " | ".join(name for name, _ in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for impl, label in PEER_LABELS.items():
        cells = [_cell(table.get(impl)) for _, table in cols]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratios = []
    for _, table in cols:
        others = {k: v["samples_per_s"] for k, v in table.items() if bench_peers.is_peer(k)}
        if "numba" in table and others:
            best = max(others, key=others.get)
            ratios.append(f"{table['numba']['samples_per_s'] / others[best]:.2f}x ({best})")
        else:
            ratios.append("")
    lines.append("| **numpyvae ÷ best peer** | " + " | ".join(ratios) + " |")
    idle = peers["idle"].get("128", {})
    kept = []
    for _, table in cols[3:]:
        kept.append(", ".join(f"{k} {v['samples_per_s'] / idle[k]['samples_per_s']:.0%}"
                              for k, v in table.items() if k in idle))
    if kept:
        lines.append("| share of its own idle speed (batch 128) | | | | " + " | ".join(kept)
                     + " |")
    lines.append("")
    if startup:
        c = startup["cached_median"]
        cold = (f"first training step with a cold kernel cache "
                f"{startup['cold']['first_step_s']:.1f} s (compiling), " if startup["cold"] else "")
        lines.append(
            f"Start-up: `import numpyvae` {1e3 * startup['import_numpyvae_s']:.0f} ms (Numba not "
            f"imported); {cold}with the cache {c['first_step_s']:.2f} s; launch to first step, "
            f"cached: {c['launch_to_first_step_s']:.2f} s.")
    rss = peers["summary"].get("peak_rss_mib")
    if rss:
        lines.append("Peak memory of each benchmark process (same 16384 examples in memory): "
                     + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()) + ".")
    if memory:
        lines.append("Peak memory of one epoch (" + ", ".join(
            f"{name} {r['peak_rss_mib']:.0f} MiB" for name, r in memory["runs"].items()) + ").")
    chooser = []
    for key, what in (("numba_threads_idle", "idle"), ("numba_threads_contended_1", "1 competing"),
                      ("numba_threads_contended_2", "2 competing"),
                      ("numba_threads_one_core", "one core")):
        info = peers.get(key) or {}
        if "step_s_by_threads" in info:
            times = ", ".join(f"{k} thread{'s' if k != '1' else ''} {1e3 * v:.2f} ms"
                              for k, v in sorted(info["step_s_by_threads"].items()))
            chooser.append(f"{what}: {times}, chose {info['chosen_threads']}")
    if chooser:
        lines.append("The training step's own timing at batch 128 (its thread chooser's running "
                     "figures at the end of each condition): " + "; ".join(chooser) + ".")
    reg = peers.get("regression") or {}
    if len(reg) > 1:
        lines += ["", f"Against commit {reg['baseline']} (side by side, same run):", "",
                  "| configuration | " + " | ".join(("before", "now (default)", "now, per-op path"))
                  + " |", "|---|---:|---:|---:|"]
        for key, table in reg.items():
            if key == "baseline":
                continue
            backend = key.split()[0]
            cells = [_cell(table.get(f"{backend} @{reg['baseline']}")),
                     _cell(table.get(f"{backend} now")), _cell(table.get("numba per-op now"))
                     if backend == "numba" else ""]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    thr = peers.get("threading") or {}
    if thr:
        names = list(next(iter(thr.values())))
        lines += ["", "Numba threading layers (numpyvae's training step; beside it on TBB, the "
                  "per-op path on every thread):", "",
                  "| | " + " | ".join(thr) + " |", "|---|" + "---:|" * len(thr)]
        for name in names:
            lines.append(f"| {name} | " + " | ".join(_cell(t.get(name)) for t in thr.values())
                         + " |")
    busy = _start_load(peers) > (m.get("cores") or 1)
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for what, figure, met in targets(peers, startup, memory):
        verdict = "yes" if met else "**no**"
        if busy and "memory" not in what and "one thread" not in what:
            verdict += " (busy machine: not decided)"
        lines.append(f"| {what} | {figure} | {verdict} |")
    return "\n".join(lines) + "\n"


def chart(peers, path):
    """Samples/s of numpyvae and each peer, per condition (the table's columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(peers)
    fig, ax = plt.subplots(figsize=(12, 4.8))
    names = [n for n in PEER_LABELS if any(n in t for _, t in cols)]
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(cols))]
        ys = [t.get(name, {}).get("samples_per_s", 0) for _, t in cols]
        lo = [y - t.get(name, {}).get("min", y) for y, (_, t) in zip(ys, cols, strict=True)]
        hi = [t.get(name, {}).get("max", y) - y for y, (_, t) in zip(ys, cols, strict=True)]
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=PEER_LABELS[name])
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([name.replace(", ", ",\n") for name, _ in cols], fontsize=8)
    ax.set_ylabel("training samples / s (higher is better)")
    ax.set_title("VAE 784-400-20, Adam, float32: median of interleaved rounds (bars: range)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST (or MNIST) IDX files")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every benchmark")
    parser.add_argument("--kernels", action="store_true",
                        help="also the kernel benchmarks (validation, matmuls, step breakdown)")
    parser.add_argument("--summary-only", action="store_true",
                        help="only rebuild summary.md and the chart from the saved results")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.summary_only:
        def load(name):
            path = common.RESULTS / f"{name}.json"
            return json.loads(path.read_text()) if path.is_file() else None

        peers = load("peers")
        text = summary_markdown(peers, load("startup"), None)  # memory: only with a full run
        common.atomic_write_text(common.RESULTS / "summary.md", text)
        chart(peers, common.RESULTS / "benchmarks.png")
        print(text)
        return

    def save(payload):
        payload["machine"] = common.machine()
        common.save_json("peers", payload)

    print("== numpyvae against its peers")
    peers = bench_peers.run(args.data_dir, args.quick, save=save)
    save(peers)
    kernels = None
    if args.kernels or args.quick:
        print("== kernels")
        kernels = bench_kernels.run(args.quick)
        common.save_json("kernels", kernels)
    print("== start-up")
    startup = bench_startup.run(args.data_dir, args.quick)
    common.save_json("startup", startup)
    print("== peak memory")
    memory = bench_memory.run(args.data_dir, args.quick)
    common.save_json("memory", memory)
    text = summary_markdown(peers, startup, memory, kernels)
    common.atomic_write_text(common.RESULTS / "summary.md", text)
    chart(peers, common.RESULTS / "benchmarks.png")
    print("\n" + text)
    print(f"results in {common.RESULTS} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
