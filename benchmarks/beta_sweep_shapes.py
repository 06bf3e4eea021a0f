"""A β sweep on ``shapes``: disentanglement (MIG), reconstruction and active units against β.

The recipe, per β and seed: ``numpyvae train --dataset shapes --latent-dim 10
--beta B --seed S`` with every other option at its default (MLP 784-400-10,
ReLU, Bernoulli decoder on gray-level pixels, Adam lr 1e-3, batch 128, no KL
warm-up, 30 epochs), then ``numpyvae evaluate RUN --disentanglement`` on the
2,000 test images: the test −ELBO with its reconstruction and KL terms (nats
per image, one draw of z), the active units (Var(E_q[z_d]) > 0.01) and the
Mutual Information Gap (Chen et al., 2018) of the posterior means against
the five generating factors, with each factor's own gap.

Why 10 latent dimensions: twice the five factors, the size the β-VAE and MIG
papers use on dSprites (Higgins et al., 2017; Chen et al., 2018), so a
disentangled code has one dimension per factor and spare ones to switch off.
(The command's default, 20, is the MNIST recipe's.)

The script calls the library as the command does (:func:`numpyvae.app.run.train_run`,
:func:`numpyvae.app.run.evaluate_run`), one run at a time in one process, so the
Numba kernels compile once; one thread by default (the machine is shared).
Run folders are kept under ``--runs-dir``; a complete one is evaluated again
rather than retrained, and an interrupted one is resumed, so a stopped sweep
picks up where it left off.

Writes ``beta_sweep_shapes.json`` (every run, and mean ± sd over seeds per β)
to ``benchmarks/results/`` (or ``$NUMPYVAE_BENCH_RESULTS``), the three-panel
figure ``beta_sweep_shapes.png``, and the traversals of seed 0 at the lowest
β and at the higher β of highest mean MIG, to ``docs/figures/``. ``--quick``
is a smoke run (1 epoch, two β, one seed, hidden width 16, batches of 1000,
the NumPy backend, throwaway run folders) whose JSON and figures go to the results
folder under ``*_quick`` names.

Run:  python benchmarks/beta_sweep_shapes.py [--betas 0.5 1 2 4 8 16 32] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMPYVAE_BENCH_THREADS", "1")
import common  # noqa: E402, I001

N_THREADS = common.set_threads()

FIGURES = common.ROOT.parent / "docs" / "figures"
RUNS = common.ROOT.parent / "runs" / "beta-sweep-shapes"
BETAS = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
SEEDS = [0, 1, 2]
LATENT = 10
#: What each run records, averaged over seeds per β.
METRICS = ("neg_elbo", "recon", "kl", "active_units", "mig")


def run_name(beta, seed) -> str:
    return f"beta{beta:g}-seed{seed}"


def train_and_evaluate(run_dir, beta, seed, epochs, options, log) -> dict:
    """Train one run (or finish or reuse it) and return its test metrics."""
    from numpyvae.app.run import evaluate_run, read_metrics, train_run

    run_dir = Path(run_dir)
    done = len(read_metrics(run_dir)) if (run_dir / "config.json").is_file() else None
    if done is not None:
        _check_recipe(run_dir, beta, seed, epochs, options, done)
    if done is None:
        train_run(run_dir, dataset="shapes", beta=beta, seed=seed, epochs=epochs,
                  latent_dim=LATENT, progress=False, figures=False, **options)
    elif done < epochs:
        log(f"{run_dir.name}: resuming after epoch {done}")
        train_run(run_dir, resume=True, epochs=epochs, progress=False, figures=False)
    else:
        log(f"{run_dir.name}: already trained, evaluating only")
    history = read_metrics(run_dir)
    r = evaluate_run(run_dir, disentanglement=True, backend=options.get("backend"))
    return {"beta": beta, "seed": seed, "run": run_dir.name, "epochs": r["epochs"],
            "n_test": r["n_test"], "neg_elbo": r["loss"], "recon": r["recon"], "kl": r["kl"],
            "active_units": r["active_units"], "latent_dim": r["latent_dim"], "mig": r["mig"],
            "mig_per_factor": r["mig_per_factor"], "mig_top_dim": r["mig_top_dim"],
            "kl_per_dim": history[-1].get("kl_per_dim"),
            # as the run folder recorded it: the same for a run trained earlier and reused
            "train_seconds": sum(h["seconds"] + (h.get("eval_seconds") or 0) for h in history)}


#: The settings a kept run folder must share with the sweep to be reused.
RECIPE_KEYS = ("dataset", "beta", "seed", "latent_dim", "hidden", "batch_size", "lr",
               "optimizer", "kl_warmup", "likelihood", "binarize", "dtype", "model",
               "activation", "arch")


def _check_recipe(run_dir, beta, seed, epochs, options, done):
    """Refuse to reuse a kept run trained with another recipe, or for more epochs."""
    from numpyvae.app.options import TRAIN_DEFAULTS, options_from_config
    from numpyvae.app.runfolder import read_config

    wanted = {**TRAIN_DEFAULTS, "dataset": "shapes", "beta": beta, "seed": seed,
              "latent_dim": LATENT, **{k: v for k, v in options.items() if k != "backend"}}
    saved = options_from_config(read_config(run_dir))
    differ = [f"{k} {saved.get(k)!r} (not {wanted[k]!r})" for k in RECIPE_KEYS
              if saved.get(k) != wanted[k]]
    if done > epochs:
        differ.append(f"{done} epochs (not {epochs})")
    if differ:
        raise SystemExit(f"{run_dir}: kept from another sweep, with {', '.join(differ)}; "
                         f"remove it or choose another --runs-dir")


def summarise(runs, betas) -> dict:
    """Mean, sample standard deviation and n over seeds of each metric, per β."""
    summary = {}
    for beta in betas:
        rows = [r for r in runs if r["beta"] == beta]
        if not rows:
            continue
        entry = {"n": len(rows)}
        for key in METRICS:
            entry[key] = _mean_sd([r[key] for r in rows])
        entry["mig_per_factor"] = {f: _mean_sd([r["mig_per_factor"][f] for r in rows])
                                   for f in rows[0]["mig_per_factor"]}
        summary[f"{beta:g}"] = entry
    return summary


def _mean_sd(values) -> dict:
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "sd": sd, "values": values}


def figure(summary, runs, path, latent_dim=LATENT, epochs=None):
    """MIG, reconstruction and active units against β (log axis): mean ± sd, and each seed."""
    from matplotlib.figure import Figure

    panels = [("mig", "MIG (0 to 1, higher: more disentangled)"),
              ("recon", "reconstruction −log p(x|z), nats"),
              ("active_units", f"active units (of {latent_dim})")]
    betas = [float(b) for b in summary]
    fig = Figure(figsize=(10.5, 3.2))
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.plot([r["beta"] for r in runs], [r[key] for r in runs], "o", color="0.7",
                markersize=3, label="each seed")
        ax.errorbar(betas, [s[key]["mean"] for s in summary.values()],
                    yerr=[s[key]["sd"] for s in summary.values()], fmt="-o", markersize=4,
                    capsize=3, color="C0", label="mean ± sd over seeds")
        ax.set_xscale("log")
        ax.set_xticks(betas)
        ax.set_xticklabels([f"{b:g}" for b in betas])
        ax.minorticks_off()
        ax.set_xlabel("β")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    n = max(s["n"] for s in summary.values())
    fig.suptitle(f"β-VAE on shapes, latent {latent_dim}, {epochs} epochs: test set, "
                 f"{n} seed{'s' if n > 1 else ''} per β", fontsize=10)
    fig.tight_layout()
    common.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    return path


def copy_traversal(run_dir, path, backend=None):
    """Draw a run's traversal (as ``numpyvae train`` does at its end) and copy it to ``path``."""
    from numpyvae.app.figures import write_latent_figures
    from numpyvae.app.run import load_run, run_dataset

    run = load_run(run_dir, backend)
    dataset = run_dataset(run.config, run_dir=run_dir)
    write_latent_figures(run.model, dataset, run.options["binarize"] or "none", run_dir)
    shutil.copyfile(Path(run_dir) / "figures" / "traversal.png", path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", type=float, nargs="+", default=None,
                        help="the KL weights to sweep (default: "
                             + " ".join(f"{b:g}" for b in BETAS) + ")")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="training seeds per β (default: 0 1 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: 30)")
    parser.add_argument("--runs-dir", default=None,
                        help="where the run folders are kept (default: runs/beta-sweep-shapes in "
                             "the checkout)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 epoch, β 1 and 8, seed 0, hidden 16, batch 1000, "
                             "NumPy backend")
    args = parser.parse_args(argv)
    if args.quick:
        betas, seeds, epochs = args.betas or [1.0, 8.0], args.seeds or [0], args.epochs or 1
        options = {"hidden": [16], "batch_size": 1000, "backend": "numpy"}
        name, figures = "beta_sweep_shapes_quick", common.RESULTS
    else:
        betas, seeds, epochs = args.betas or BETAS, args.seeds or SEEDS, args.epochs or 30
        options = {}
        name, figures = "beta_sweep_shapes", FIGURES
    betas = sorted(betas)
    scratch = None
    if args.runs_dir is not None:
        runs_dir = Path(args.runs_dir)
    elif args.quick:
        runs_dir = Path(scratch := tempfile.mkdtemp(prefix="beta-sweep-"))
    else:
        runs_dir = RUNS
    try:
        _sweep(betas, seeds, epochs, options, runs_dir, name, figures, args.quick)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _sweep(betas, seeds, epochs, options, runs_dir, name, figures, quick):
    command = ("python benchmarks/beta_sweep_shapes.py" + (" --quick" if quick else "")
               + " --betas " + " ".join(f"{b:g}" for b in betas)
               + " --seeds " + " ".join(map(str, seeds)) + f" --epochs {epochs}")
    payload = {"recipe": __doc__.split("\n\n")[1], "command": command, "quick": quick,
               "betas": betas, "seeds": seeds, "epochs": epochs, "latent_dim": LATENT,
               "options": options, "threads": N_THREADS,
               "timing": "train_seconds: each run's training and per-epoch evaluation time, "
                         "from its metrics.jsonl; wall_seconds: this invocation, which "
                         "evaluates runs kept from an earlier one instead of retraining them; "
                         "machine: where and when this invocation ran",
               "runs": []}
    t_start = time.perf_counter()
    # Seeds in the outer loop: a sweep stopped early still has every β for some seeds.
    for seed in seeds:
        for beta in betas:
            r = train_and_evaluate(runs_dir / run_name(beta, seed), beta, seed, epochs,
                                   options, print)
            payload["runs"].append(r)
            gaps = ", ".join(f"{f} {g:.2f}" for f, g in r["mig_per_factor"].items())
            print(f"beta {beta:<4g} seed {seed}: -ELBO {r['neg_elbo']:6.2f}  recon "
                  f"{r['recon']:6.2f}  KL {r['kl']:5.2f}  active {r['active_units']:2d}/"
                  f"{r['latent_dim']}  MIG {r['mig']:.3f} ({gaps})  "
                  f"({r['train_seconds']:.0f} s)", flush=True)
            payload["summary"] = summarise(payload["runs"], betas)
            payload["machine"] = common.machine()
            common.save_json(name, payload)
    payload["wall_seconds"] = time.perf_counter() - t_start
    payload["train_seconds_total"] = sum(r["train_seconds"] for r in payload["runs"])
    figures.mkdir(parents=True, exist_ok=True)
    payload["figure"] = figure(payload["summary"], payload["runs"], figures / f"{name}.png",
                               epochs=epochs).name
    stem = "traversal_shapes_quick" if quick else "traversal_shapes"
    payload["traversals"] = {
        f"{b:g}": copy_traversal(runs_dir / run_name(b, seeds[0]),
                                 figures / f"{stem}_beta{b:g}.png", options.get("backend")).name
        for b in (betas[0], *_best_beta(payload["summary"], betas[1:]))}
    path = common.save_json(name, payload)
    print()
    print("| β | MIG | reconstruction | KL | −ELBO | active units | seeds |")
    print("|---|---|---|---|---|---|---|")
    for beta, s in payload["summary"].items():
        print(f"| {beta} | {_pm(s['mig'], 3)} | {_pm(s['recon'])} | {_pm(s['kl'])} | "
              f"{_pm(s['neg_elbo'])} | {_pm(s['active_units'], 1)} of {LATENT} | {s['n']} |")
    print(f"\nsaved {path} and {figures / payload['figure']} in {payload['wall_seconds']:.0f} s "
          f"(training: {payload['train_seconds_total']:.0f} s)")


def _best_beta(summary, betas) -> list:
    """Of ``betas``, the one of highest mean MIG, as a list (empty if there are none)."""
    return [max(betas, key=lambda b: summary[f"{b:g}"]["mig"]["mean"])] if betas else []


def _pm(stat, digits=2) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


if __name__ == "__main__":
    main()
