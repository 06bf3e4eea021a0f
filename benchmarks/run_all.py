"""Run every benchmark, save the JSON results, draw the chart and write the README table.

    python benchmarks/run_all.py [--data-dir FOLDER_WITH_FASHION_MNIST] [--quick]

Writes to ``benchmarks/results/`` (or ``$NUMPYVAE_BENCH_RESULTS``):
``training.json``, ``kernels.json``, ``startup.json``, ``memory.json``,
``benchmarks.png`` and ``summary.md`` (the headline table, with every target
and whether it was met). The default run takes about ten minutes on two
cores; ``--quick`` is a smoke run of well under a minute.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: I001

common.set_threads()

import bench_kernels  # noqa: E402
import bench_memory  # noqa: E402
import bench_startup  # noqa: E402
import bench_training  # noqa: E402

ORDER = ("numba", "numpy", "plain numpy", "torch")


def _config(training, batch, dtype):
    return next((c for c in training["configs"] if c["batch"] == batch and c["dtype"] == dtype),
                None)


def targets(training, startup, memory):
    """Each target of the issue: the measured figure and whether it is met."""
    rows = []
    head = _config(training, 128, "float32")
    if head and "torch" in head["implementations"]:
        nb = head["implementations"]["numba"]
        rows.append(("numba >= 1.5x PyTorch, batch 128 float32",
                     f"{nb['ratio_to_torch']:.2f}x", nb["ratio_to_torch"] >= 1.5))
        rows.append(("numba step >= 60% of the matmul FLOP rate (batch 128 float32)",
                     f"{100 * nb['flop_fraction']:.0f}%", nb["flop_fraction"] >= 0.6))
    small = _config(training, 32, "float32")
    if small and "torch" in small["implementations"]:
        r = small["implementations"]["numba"]["ratio_to_torch"]
        rows.append(("numba ahead of PyTorch at batch 32", f"{r:.2f}x", r > 1.0))
    if head:
        ref = head["implementations"]["numpy"]["samples_per_s"]
        plain = head["implementations"]["plain numpy"]["samples_per_s"]
        rows.append(("numpy backend >= plain NumPy (batch 128 float32)",
                     f"{ref / plain:.2f}x", ref >= plain))
    if startup:
        t = startup["cached_median"]["launch_to_first_step_s"]
        rows.append(("cached start: first step within 2 s of launch", f"{t:.2f} s", t <= 2.0))
    if memory and "torch" in memory["runs"]:
        nb, pt = memory["runs"]["numba"]["peak_rss_mib"], memory["runs"]["torch"]["peak_rss_mib"]
        rows.append(("peak memory of a training run below PyTorch's",
                     f"{nb:.0f} vs {pt:.0f} MiB", nb < pt))
    return rows


def summary_markdown(training, kernels, startup, memory):
    configs = [(128, "float32"), (32, "float32"), (512, "float32"), (128, "float64")]
    configs = [c for c in configs if _config(training, *c)]
    m = training["machine"]
    lines = [
        f"Measured on {m['cpu']}, {m['threads']} threads for every library "
        f"(NumPy {m['numpy']}, Numba {m['numba']}, PyTorch {m.get('torch') or 'absent'}), "
        f"data: {training['data']}. Samples per second (median of interleaved rounds); "
        f"in brackets the ratio to PyTorch.",
        "",
        "| implementation | " + " | ".join(f"batch {b}, {d}" for b, d in configs) + " |",
        "|---|" + "---:|" * len(configs),
    ]
    labels = {"numba": "numpyvae, numba backend", "numpy": "numpyvae, numpy backend",
              "plain numpy": "plain NumPy (same step)", "torch": "PyTorch (eager)",
              "numba, tiled matmul": "numpyvae, numba backend, hand-written tiled matmul"}
    for name in labels:
        cells = []
        for b, d in configs:
            r = _config(training, b, d)["implementations"].get(name)
            if r is None:
                cells.append("")
            elif r["ratio_to_torch"]:
                cells.append(f"{r['samples_per_s']:,.0f} ({r['ratio_to_torch']:.2f}x)")
            else:
                cells.append(f"{r['samples_per_s']:,.0f}")
        if any(cells):
            lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    fractions = []
    for b, d in configs:
        c = _config(training, b, d)
        fractions.append(f"{100 * c['implementations']['numba']['flop_fraction']:.0f}% "
                         f"of {c['matmul_peak_flops'] / 1e9:.0f} GFLOP/s")
    lines.append("| numba step, share of the measured matmul rate | " + " | ".join(fractions)
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
    if memory:
        runs = memory["runs"]
        lines.append("Peak memory of one epoch (" + ", ".join(
            f"{name} {r['peak_rss_mib']:.0f} MiB (+{r['during_training_mib']:.0f} in training)"
            for name, r in runs.items()) + ").")
    if memory and memory.get("allocations"):
        lines.append("Allocated during 20 training steps (tracemalloc peak): " + ", ".join(
            f"{name} {a['peak_bytes']:,} bytes" for name, a in memory["allocations"].items())
            + ".")
    if kernels and kernels.get("matmul"):
        rows = [r for r in kernels["matmul"] if r["dtype"] == "float32"]
        by_method = {}
        for r in rows:
            by_method.setdefault(r["method"], []).append(r["gflops"])
        lines.append("Matmul at the step's three big products, float32 (GFLOP/s, mean): "
                     + ", ".join(f"{m} {sum(v) / len(v):.0f}" for m, v in by_method.items())
            + "; a whole training step (batch 128) with each: " + ", ".join(
            f"{m} {t:.2f} ms" for m, t in kernels["step_by_matmul_ms"].items()) + ".")
    if kernels and kernels.get("breakdown", {}).get("128"):
        b = kernels["breakdown"]["128"]
        lines.append(f"Where a numba step goes (batch 128, float32, {b['total_ms']:.2f} ms): "
                     + "; ".join(f"{k} {v:.2f} ms" for k, v in b["parts_ms"].items()) + ".")
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for what, figure, met in targets(training, startup, memory):
        lines.append(f"| {what} | {figure} | {'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n"


def chart(training, kernels, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = training["configs"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    names = [n for n in ORDER if any(n in c["implementations"] for c in configs)]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(configs))]
        ys = [c["implementations"].get(name, {}).get("samples_per_s", 0) for c in configs]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(configs)))
    ax.set_xticklabels([f"batch {c['batch']}\n{c['dtype']}" for c in configs])
    ax.set_ylabel("training samples / s (higher is better)")
    ax.set_title("VAE 784-400-20 training throughput")
    ax.legend()
    ax = axes[1]
    b = (kernels or {}).get("breakdown", {}).get("128")
    if b:
        parts = b["parts_ms"]
        left = 0.0
        for k, v in parts.items():
            ax.barh([0], [v], left=left, label=k)
            left += v
        ax.set_yticks([])
        ax.set_xlabel("ms per training step (numba backend, batch 128, float32)")
        ax.set_title("where a step goes")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    common.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST (or MNIST) IDX files")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every benchmark")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    print("== training throughput")
    training = bench_training.run(args.data_dir, args.quick)
    common.save_json("training", training)
    print("== kernels")
    kernels = bench_kernels.run(args.quick)
    common.save_json("kernels", kernels)
    print("== start-up")
    startup = bench_startup.run(args.data_dir, args.quick)
    common.save_json("startup", startup)
    print("== peak memory")
    memory = bench_memory.run(args.data_dir, args.quick)
    common.save_json("memory", memory)
    text = summary_markdown(training, kernels, startup, memory)
    common.atomic_write_text(common.RESULTS / "summary.md", text)
    chart(training, kernels, common.RESULTS / "benchmarks.png")
    print("\n" + text)
    print(f"results in {common.RESULTS} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
