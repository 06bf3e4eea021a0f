"""The Numba kernels at the shapes where every loop that splits their work runs several times.

A kernel that splits its work (examples into groups side by side in one
product, rows or columns into one block per thread, a flat buffer into
chunks) can put the pieces back together wrongly in a way that only shows
when a loop runs more than once: a per-thread partial sum overwritten
instead of added across groups, a last partial group or block dropped.
Each shape here is computed from the kernel's own constant (the group
width ``GROUP_COLUMNS``, ``COLUMN_BLOCK``, ``ADAM_CHUNK``,
``DATA_PARALLEL_ROWS``, ``REDUCE_CHUNK``, the 16-element block alignment)
and the size of Numba's pool, so that each thread takes several groups or
blocks, the last one partial, and each test runs on one thread and on all.
Then one training step of the default MLP VAE at batch 128 and of the conv
VAE at batch 64 is compared with the reference, every gradient within
1e-10 relative, in float64.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

pytest.importorskip("numba")

import numba  # noqa: E402

from numpyvae import ops as reference  # noqa: E402
from numpyvae.checks.fastpath import conv_rows  # noqa: E402
from numpyvae.convnet import conv_vae  # noqa: E402
from numpyvae.fast import numba_kernels as NK  # noqa: E402
from numpyvae.fast import numba_ops as nb  # noqa: E402
from numpyvae.fast import numba_step as NS  # noqa: E402
from numpyvae.fast.numba_conv import split  # noqa: E402
from numpyvae.fast.step import train_step  # noqa: E402
from numpyvae.gradcheck import rel_error  # noqa: E402
from numpyvae.model import VAE  # noqa: E402
from numpyvae.optim import Adam  # noqa: E402

TASKS = numba.config.NUMBA_NUM_THREADS  # the blocks: one per thread of the pool
TOL = 1e-10
#: The parameters' change after Adam's steps: Adam divides by the root of the squared
#: gradient's average, which scales a difference in a small gradient's last bits up.
CHANGE_TOL = 1e-8
THREADS = sorted({1, TASKS})


def close(fast, ref, what, tol=TOL):
    err = rel_error(fast, ref)
    assert err <= tol, f"{what}: relative error {err:.1e}"


def conv_batch(windows):
    """A batch where each thread takes two full groups of examples and a partial third."""
    group = max(1, nb.GROUP_COLUMNS // windows)
    return TASKS * (2 * group + max(1, group // 2)) - 1, group


def test_the_conv_batch_gives_every_thread_several_groups_and_a_partial_one():
    for windows in (64, 49):
        B, G = conv_batch(windows)
        for t in range(TASKS):
            n0, n1 = split(B, TASKS, t)
            groups = math.ceil((n1 - n0) / G)
            assert groups >= 3 and (n1 - n0) % G != 0


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("kind", ["conv2d", "conv_transpose2d"])
def test_conv_kernels_with_several_groups_per_thread(kind, threads):
    rng = np.random.default_rng(0)
    if kind == "conv2d":  # 16 x 16 -> 8 x 8: 64 windows an example
        B, _ = conv_batch(64)
        x, W = rng.standard_normal((B, 3, 16, 16)), rng.standard_normal((4, 3, 4, 4))
    else:  # 8 x 8 inputs: 64 columns an example
        B, _ = conv_batch(64)
        x, W = rng.standard_normal((B, 3, 8, 8)), rng.standard_normal((3, 4, 4, 4))
    b = rng.standard_normal(4)
    kw = dict(stride=2, padding=1, activation="tanh")
    results = []
    with nb.threads(threads):
        for be in (nb, reference):
            y = getattr(be, f"{kind}_forward")(x, W, b, **kw)
            dy = np.random.default_rng(1).standard_normal(y.shape)
            dW, db = np.zeros_like(W), np.zeros_like(b)
            dx = getattr(be, f"{kind}_backward")(dy, x, W, y, dW, db, **kw)
            results.append((y, dx, dW, db))
    for what, f, r in zip(("y", "dx", "dW", "db"), *results, strict=True):
        close(f, r, f"{kind} {what}, batch {B}, {threads} thread(s)")


@pytest.mark.parametrize("threads", THREADS)
def test_the_conv_vaes_layers_at_batch_128(threads):
    """The bug class of the issue: at batch 128 the middle conv's threads take ~7 groups each."""
    with nb.threads(threads):
        rows = conv_rows(nb, reference, np.random.default_rng(0), 128)
    assert len(rows) == 4 * 4  # four layers: forward, dx, dW, db
    assert all(r.passed for r in rows), [(r.name, r.rel_error) for r in rows if not r.passed]


def test_a_weight_gradient_that_overwrites_across_groups_is_caught():
    """Planted: each thread's partial dW keeps only its last group of examples."""
    real = nb.conv2d_backward

    def last_group_only(dy, x, W, y, dW, db, stride=1, padding=0, activation="identity",
                        alpha=0.01, dx=None, need_dx=True):
        dx = real(dy, x, W, y, np.zeros_like(dW), db, stride, padding, activation, alpha)
        B, windows = x.shape[0], dy.shape[2] * dy.shape[3]
        G = max(1, min(-(-B // TASKS), nb.GROUP_COLUMNS // windows))
        for t in range(TASKS):
            n0, n1 = split(B, TASKS, t)
            if n1 > n0:
                g = n0 + (n1 - n0 - 1) // G * G
                real(dy[g:n1], x[g:n1], W, y[g:n1], dW, np.zeros_like(db), stride, padding,
                     activation, alpha, need_dx=False)
        return dx

    fake = types.SimpleNamespace(conv2d_forward=nb.conv2d_forward,
                                 conv2d_backward=last_group_only,
                                 conv_transpose2d_forward=nb.conv_transpose2d_forward,
                                 conv_transpose2d_backward=nb.conv_transpose2d_backward)
    rows = conv_rows(fake, reference, np.random.default_rng(0), 128)
    wrong = {r.name for r in rows if not r.passed}
    assert wrong == {"conv2d (1, 28, 28) W (32, 1, 4, 4) backward (dx, dW, db)[1]",
                     "conv2d (32, 14, 14) W (64, 32, 4, 4) backward (dx, dW, db)[1]"}


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("rows_split", [True, False])
def test_linear_kernels_with_several_blocks(threads, rows_split):
    rng = np.random.default_rng(0)
    # rows: at least 128 a thread (numba_kernels.split_rows); columns: 16-aligned blocks,
    # the last one partial
    B = 128 * TASKS + 37 if rows_split else 37
    O = 16 * 2 * TASKS + 5
    assert NK.split_rows(B, O, TASKS) == rows_split
    x, W, b = rng.standard_normal((B, 50)), rng.standard_normal((50, O)), rng.standard_normal(O)
    dy = rng.standard_normal((B, O))
    with nb.threads(threads):
        for act in nb.ACTIVATIONS:
            ys = [be.linear_forward(x, W, b, act) for be in (nb, reference)]
            close(*ys, f"linear_forward {act}")
            grads = []
            for be, y in zip((nb, reference), ys, strict=True):
                dW, db = np.zeros_like(W), np.zeros_like(b)
                grads.append((be.linear_backward(dy, x, W, y, dW, db, act), dW, db))
            for what, f, r in zip(("dx", "dW", "db"), *grads, strict=True):
                close(f, r, f"linear_backward {act} {what}")


@pytest.mark.parametrize("threads", THREADS)
def test_the_gaussian_likelihood_with_several_column_blocks(threads):
    rng = np.random.default_rng(0)
    B, D = 2 * TASKS + 3, 3 * NK.COLUMN_BLOCK + 5
    mean, x, logvar = rng.standard_normal((B, D)), rng.random((B, D)), rng.uniform(-1, 1, D)
    with nb.threads(threads):
        out = []
        for be in (nb, reference):
            dlogvar = np.zeros(D)
            nll, dmean = be.gaussian_nll_and_grad(mean, logvar, x, 1 / B, dlogvar)
            out.append((nll, dmean, dlogvar))
    for what, f, r in zip(("nll", "dmean", "dlogvar"), *out, strict=True):
        close(f, r, f"gaussian_nll_and_grad {what}")


@pytest.mark.parametrize("threads", THREADS)
def test_the_optimizers_with_several_chunks(threads):
    rng = np.random.default_rng(0)
    P = 3 * NK.ADAM_CHUNK + 7
    start, grads = rng.standard_normal(P), rng.standard_normal((3, P))
    with nb.threads(threads):
        for decoupled, wd in ((False, 0.0), (False, 0.1), (True, 0.1)):
            ends = []
            for be in (nb, reference):
                p, m, v = start.copy(), np.zeros(P), np.zeros(P)
                for step in (1, 2, 3):
                    be.adam_update(p, grads[step - 1], m, v, 1e-3, 0.9, 0.999, 1e-8, wd, step,
                                   decoupled)
                ends.append((p - start, m, v))
            for what, f, r in zip(("change", "m", "v"), *ends, strict=True):
                close(f, r, f"adam_update {what} (decoupled {decoupled}, decay {wd})")
        for momentum, nesterov in ((0.0, False), (0.9, False), (0.9, True)):
            ends = []
            for be in (nb, reference):
                p, vel = start.copy(), np.zeros(P)
                for g in grads:
                    be.sgd_update(p, g, vel, 0.01, momentum, nesterov, 0.01)
                ends.append(p - start)
            close(*ends, f"sgd_update momentum {momentum} nesterov {nesterov}")


def _steps(make, x_batches, eps_batches, fused):
    """Train ``make()`` on each batch; the per-step (loss, grads) and the parameters' change."""
    model = make()
    optimizer = Adam(model.params, lr=1e-3, backend=model.backend)
    start = {k: p.copy() for k, p in model.params.items()}
    steps = []
    for x, eps in zip(x_batches, eps_batches, strict=True):
        r = train_step(model, optimizer, x, eps=eps, fused=fused)
        steps.append((r.loss, {k: np.array(g) for k, g in r.grads.items()}))
    return steps, {k: p - start[k] for k, p in model.params.items()}


def _compare_training(make, shape, latent, n_steps=1, seed=0):
    rng = np.random.default_rng(seed)
    xs = [(rng.random(shape) < 0.3).astype(np.float64) for _ in range(n_steps)]
    noise = [rng.standard_normal((shape[0], latent)) for _ in range(n_steps)]
    fast = _steps(lambda: make("numba"), xs, noise, fused=True)
    ref = _steps(lambda: make("numpy"), xs, noise, fused=False)
    for (f_loss, f_grads), (r_loss, r_grads) in zip(fast[0], ref[0], strict=True):
        assert f_loss == pytest.approx(r_loss, rel=TOL)
        for k in r_grads:
            close(f_grads[k], r_grads[k], f"gradient {k}")
    for k in ref[1]:
        close(fast[1][k], ref[1][k], f"change of {k}", CHANGE_TOL)


def test_one_training_step_of_the_default_mlp_vae_at_batch_128():
    _compare_training(lambda be: VAE(784, hidden_dims=(400,), latent_dim=20, dtype="float64",
                                     seed=0, backend=be), (128, 784), 20)


def test_one_training_step_of_the_conv_vae_at_batch_64():
    _compare_training(lambda be: conv_vae((28, 28), 20, dtype="float64", seed=0, backend=be),
                      (64, 1, 28, 28), 20)


def test_the_data_parallel_step_with_several_blocks_and_reduce_chunks():
    """Each thread its block of examples (the last one partial); gradients over several chunks."""
    B = NS.DATA_PARALLEL_ROWS * max(TASKS, 2) + 37

    def make(be):
        return VAE(100, hidden_dims=(60,), latent_dim=8, dtype="float64", seed=0, backend=be)

    assert make("numpy").num_params > 3 * NS.REDUCE_CHUNK
    _compare_training(make, (B, 100), 8, n_steps=2)
