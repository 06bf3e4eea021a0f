"""Training throughput: numpyvae's numba and numpy backends, plain NumPy and PyTorch, interleaved.

The default recipe (784-400-20, Bernoulli, Adam, float32) at batch 128, and
also batch 32 and 512, and float64 at batch 128. For each configuration all
implementations train on the same data (Fashion-MNIST with ``--data-dir``,
else random binary data of the same size), with the same thread count. After
a warm-up (which includes Numba's compilation or cache load), each
implementation runs a block of steps in turn, round after round, so that
noise from other processes falls on all of them alike; the result is the
median over rounds.

Reported per implementation: samples per second, the ratio to PyTorch, and
the fraction of the machine's measured matmul FLOP rate that the whole
training step reaches (matmul FLOPs of the step times steps per second,
over the best rate of a large square matmul; :func:`common.matmul_peak`).

Run:  python benchmarks/bench_training.py [--data-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: I001  (sets sys.path so numpyvae imports from the checkout)

N_THREADS = common.set_threads()

#: (batch, dtype) configurations; the first is the headline.
CONFIGS = [(128, "float32"), (32, "float32"), (512, "float32"), (128, "float64")]
QUICK_CONFIGS = [(128, "float32")]


class NumpyvaeRunner:
    """numpyvae's public API: ``model.loss_and_grads`` then ``optimizer.step``."""

    def __init__(self, backend, dtype, matmul=None, seed=0):
        import numpyvae

        self.model = numpyvae.VAE(common.INPUT, (common.HIDDEN,), common.LATENT,
                                  dtype=dtype, backend=backend, seed=seed)
        self.optimizer = numpyvae.Adam(self.model.params, lr=1e-3, backend=backend)
        self.matmul = matmul
        self.ops = self.model.backend

    def step(self, x):
        if self.matmul is None:
            result = self.model.loss_and_grads(x)
            self.optimizer.step(self.model.grads)
            return result.loss
        old = self.ops.set_matmul(self.matmul)
        try:
            result = self.model.loss_and_grads(x)
            self.optimizer.step(self.model.grads)
        finally:
            self.ops.set_matmul(old)
        return result.loss


def make_runners(dtype, torch_adam, extra=False):
    from plain_numpy import PlainNumpyVAE
    from torch_vae import TorchVAE, available

    runners = {
        "numba": NumpyvaeRunner("numba", dtype),
        "numpy": NumpyvaeRunner("numpy", dtype),
        "plain numpy": PlainNumpyVAE(dtype=dtype),
    }
    if extra:
        runners["numba, tiled matmul"] = NumpyvaeRunner("numba", dtype, matmul="tiled")
    if available():
        runners["torch"] = TorchVAE(dtype=dtype, threads=N_THREADS, adam=torch_adam)
    return runners


def interleaved(runners, data, batch, rounds, block_seconds, warmup_steps, pause=0.15):
    """Samples/s of each runner: warm-up, then ``rounds`` rounds of one timed block each."""
    streams = {name: common.batches(data, batch) for name in runners}
    steps = {}
    first_step = {}
    for name, runner in runners.items():
        t0 = time.perf_counter()
        runner.step(next(streams[name]))
        first_step[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(warmup_steps):
            runner.step(next(streams[name]))
        per_step = (time.perf_counter() - t0) / max(warmup_steps, 1)
        steps[name] = max(3, int(block_seconds / max(per_step, 1e-6)))
    rates = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            time.sleep(pause)  # let other libraries' spinning threads go to sleep
            stream, step = streams[name], runners[name].step
            t0 = time.perf_counter()
            for _ in range(steps[name]):
                step(next(stream))
            rates[name].append(steps[name] * batch / (time.perf_counter() - t0))
    return {name: {"samples_per_s": statistics.median(r), "rounds": r,
                   "steps_per_block": steps[name], "first_step_s": first_step[name]}
            for name, r in rates.items()}


def _torch():
    from torch_vae import available

    return available()


def choose_torch_adam(data, dtype, rounds, block_seconds):
    """PyTorch's fastest Adam implementation on this machine (default, foreach or fused)."""
    from torch_vae import TorchVAE, available

    if not available():
        return None, {}
    runners = {adam: TorchVAE(dtype=dtype, threads=N_THREADS, adam=adam)
               for adam in ("default", "foreach", "fused")}
    rates = interleaved(runners, data, 128, rounds, block_seconds, warmup_steps=10)
    best = max(rates, key=lambda a: rates[a]["samples_per_s"])
    return best, {a: r["samples_per_s"] for a, r in rates.items()}


def run(data_dir=None, quick=False, verbose=True):
    configs = QUICK_CONFIGS if quick else CONFIGS
    rounds = 3 if quick else 9
    block = 0.05 if quick else 0.4
    warmup = 3 if quick else 20
    n = 4096 if quick else common.N_EXAMPLES
    say = print if verbose else (lambda *a, **k: None)

    data = {}
    source = None
    for dtype in sorted({d for _, d in configs}):
        x, source = common.load_data(data_dir, dtype, n=n)
        data[dtype] = common.shuffled(x)
    say(f"data: {source}; threads: {N_THREADS}")

    peaks = {}
    for dtype in sorted(data):
        sizes = (256, 512) if quick else (512, 1024, 2048)
        peaks[dtype] = common.matmul_peak(dtype, sizes=sizes, repeats=3 if quick else 7)
        say(f"measured {dtype} matmul rate: {peaks[dtype] / 1e9:.1f} GFLOP/s")

    if quick:  # no time to choose: PyTorch's own default
        torch_adam, torch_adam_rates = ("default", {}) if _torch() else (None, {})
    else:
        torch_adam, torch_adam_rates = choose_torch_adam(data["float32"], "float32", 5, block)
    if torch_adam_rates:
        say(f"PyTorch Adam: {torch_adam} fastest "
            f"({', '.join(f'{a} {r:.0f}' for a, r in torch_adam_rates.items())} samples/s)")

    results = []
    for batch, dtype in configs:
        runners = make_runners(dtype, torch_adam or "default",
                               extra=(batch, dtype) == configs[0])
        rates = interleaved(runners, data[dtype], batch, rounds, block, warmup)
        flops = common.step_flops(batch)
        torch_rate = rates.get("torch", {}).get("samples_per_s")
        for r in rates.values():
            steps_per_s = r["samples_per_s"] / batch
            r["step_ms"] = 1e3 / steps_per_s
            r["flop_fraction"] = flops * steps_per_s / peaks[dtype]
            r["ratio_to_torch"] = r["samples_per_s"] / torch_rate if torch_rate else None
        results.append({"batch": batch, "dtype": dtype, "step_flops": flops,
                        "matmul_peak_flops": peaks[dtype], "implementations": rates})
        say(format_config(results[-1]))

    payload = {"benchmark": "training throughput", "machine": common.machine(),
               "data": source, "quick": quick, "rounds": rounds, "block_seconds": block,
               "torch_adam": torch_adam, "torch_adam_samples_per_s": torch_adam_rates,
               "matmul_peak_flops": peaks, "configs": results}
    return payload


def format_config(config):
    lines = [f"batch {config['batch']}, {config['dtype']} "
             f"({config['step_flops'] / 1e6:.0f} MFLOP per step, "
             f"machine {config['matmul_peak_flops'] / 1e9:.0f} GFLOP/s)"]
    for name, r in config["implementations"].items():
        ratio = f"{r['ratio_to_torch']:.2f}x torch" if r["ratio_to_torch"] else ""
        lines.append(f"  {name:<22}{r['samples_per_s']:>10.0f} samples/s  {r['step_ms']:7.2f} ms"
                     f"  {100 * r['flop_fraction']:5.1f}% of matmul peak  {ratio}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with train-images-idx3-ubyte(.gz)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--out", default="training", help="results file name (without .json)")
    args = parser.parse_args(argv)
    payload = run(args.data_dir, args.quick)
    print(f"saved {common.save_json(args.out, payload)}")


if __name__ == "__main__":
    main()
