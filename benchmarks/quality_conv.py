"""Quality on Fashion-MNIST: the conv VAE against the MLP VAE and PyTorch's conv VAE.

The recipe, the same for all three: Fashion-MNIST statically binarized once
(pixel ~ Bernoulli(intensity), one fixed draw for the training set and one
for the test set), latent 20, Bernoulli likelihood, Adam lr 1e-3, batch 128,
``--epochs`` epochs over shuffled mini-batches; the score is the test
−ELBO (nats per image, one draw of z per image). Per seed:

* ``conv``: numpyvae's conv VAE (:func:`numpyvae.convnet.conv_vae`), numba backend;
* ``mlp``: numpyvae's default MLP VAE (784-400-20);
* ``torch conv``: :mod:`torch_conv_vae`, the same architecture in PyTorch.

Each run uses one thread (the machine is shared). The summary gives the mean
and standard deviation over seeds of each and the conv VAE's gap to PyTorch's
in percent.

Run:  python benchmarks/quality_conv.py --data-dir DIR [--epochs 10] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("NUMPYVAE_BENCH_THREADS", "1")
import common  # noqa: E402, I001

N_THREADS = common.set_threads()


def load(data_dir):
    import numpy as np

    from numpyvae.app.data.datasets import binarize, load_dataset

    folder = Path(data_dir)
    if (folder / "fashion-mnist").is_dir():
        folder = folder / "fashion-mnist"
    ds = load_dataset("fashion-mnist", folder, download=False)
    train = binarize(ds.x_train.astype("float32"), "static", np.random.default_rng(1))
    test = binarize(ds.x_test.astype("float32"), "static", np.random.default_rng(2))
    return train.astype("float32"), test.astype("float32")


def numpyvae_run(kind, train, test, epochs, seed, log, batch=128):
    import numpy as np

    import numpyvae
    from numpyvae.convnet import conv_vae
    from numpyvae.evaluate import elbo

    if kind == "conv":
        model = conv_vae((28, 28), 20, seed=seed, backend="numba")
        shape = (1, 28, 28)
    else:
        model = numpyvae.VAE(784, hidden_dims=(400,), latent_dim=20, seed=seed, backend="numba")
        shape = (784,)
    optimizer = numpyvae.Adam(model.params, lr=1e-3, backend="numba")
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(train))
        for i in range(0, len(train) - batch + 1, batch):
            xb = np.ascontiguousarray(train[order[i:i + batch]]).reshape(batch, *shape)
            model.loss_and_grads(xb)
            optimizer.step(model.grads)
        score = -elbo(model, test.reshape(len(test), *shape), batch_size=500,
                      rng=np.random.default_rng(0)).elbo
        history.append(score)
        log(f"{kind} seed {seed} epoch {epoch + 1}: test -ELBO {score:.3f}")
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding fashion-mnist/")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["conv", "mlp", "torch conv"])
    parser.add_argument("--out", default="quality_conv")
    args = parser.parse_args(argv)
    from torch_conv_vae import train_and_evaluate

    train, test = load(args.data_dir)
    runs = {m: {} for m in args.models}
    seconds = {m: [] for m in args.models}
    for seed in args.seeds:
        for m in args.models:
            t0 = time.perf_counter()
            if m == "torch conv":
                history = train_and_evaluate(train, test, epochs=args.epochs, seed=seed,
                                             threads=N_THREADS)
            else:
                history = numpyvae_run(m, train, test, args.epochs, seed, print)
            seconds[m].append(time.perf_counter() - t0)
            runs[m][seed] = history
            common.save_json(args.out, {"recipe": __doc__.split("\n\n")[1], "epochs": args.epochs,
                                        "seeds": args.seeds, "runs": runs, "seconds": seconds,
                                        "machine": common.machine()})
    summary = {}
    for m, by_seed in runs.items():
        finals = [h[-1] for h in by_seed.values()]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        summary[m] = {"mean": statistics.mean(finals), "sd": sd, "n": len(finals),
                      "min": min(finals), "max": max(finals)}
        print(f"{m:<11} test -ELBO {summary[m]['mean']:.2f} ± {sd:.2f} (n={len(finals)}, "
              f"range {min(finals):.2f}-{max(finals):.2f})")
    if "conv" in summary and "torch conv" in summary:
        gap = 100 * (summary["conv"]["mean"] / summary["torch conv"]["mean"] - 1)
        summary["conv_vs_torch_percent"] = gap
        print(f"conv vs torch conv: {gap:+.2f}%")
    path = common.save_json(args.out, {"recipe": __doc__.split("\n\n")[1], "epochs": args.epochs,
                                       "seeds": args.seeds, "runs": runs, "seconds": seconds,
                                       "summary": summary, "machine": common.machine()})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
