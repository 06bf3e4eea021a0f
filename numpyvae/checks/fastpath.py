"""The fast path against the reference, at the shapes training runs (``--backend numba``).

The Numba backend splits its work: examples into groups side by side in
one product (the convolutions), blocks of rows or columns per thread,
chunks of the flat parameter buffer (the optimizers). A bug in how the
pieces are put back together (a partial sum overwritten instead of added,
a last group or block dropped) shows only when each of those loops runs
several times, which the tiny models of a gradient check never make happen.
So here every op is run on both backends in float64 at training shapes
(batch 128, the default MLP's 784-400-20, the conv VAE's layers, a flat
buffer of 60,000 parameters), on one thread and on all, and then one whole
``loss_and_grads`` of the default MLP VAE (batch 128) and of the conv VAE
(batch 64). Every result must agree with the reference's to within
:data:`TOLERANCE` relative: the same sums in another order.

The Numba backend is reached by name (:func:`numpyvae.backend.get_backend`).
"""

from __future__ import annotations

import numpy as np

from ..backend import get_backend
from .compare import Comparison, compare

#: Relative agreement of the fast path with the reference in float64 (summation order only).
TOLERANCE = 1e-10
BATCH = 128
CONV_BATCH = 64


def _pairs(name, fast, ref):
    """Rows comparing two results of one op (an array or a tuple of arrays)."""
    if not isinstance(fast, tuple):
        fast, ref = (fast,), (ref,)
    return [compare(f"{name}[{i}]" if len(fast) > 1 else name, f, r, TOLERANCE)
            for i, (f, r) in enumerate(zip(fast, ref, strict=True)) if f is not None]


def _thread_counts(fast):
    most = fast.max_threads() if hasattr(fast, "max_threads") else 1
    return sorted({1, most})


def op_checks(fast, ref, seed=0) -> list:
    """Each op of ``fast`` against ``ref`` at training shapes, on one thread and on all."""
    rng = np.random.default_rng(seed)
    B, D, H, L = BATCH, 784, 400, 20
    x = rng.random((B, D))
    W, b = rng.standard_normal((D, H)) * 0.05, rng.standard_normal(H) * 0.1
    dy = rng.standard_normal((B, H))
    h = rng.standard_normal((B, 2 * L))
    eps, dz, dkl = rng.standard_normal((B, L)), rng.standard_normal((B, L)), rng.random(B)
    logits, dnll = rng.normal(0, 2, (B, D)), rng.random(B)
    logvar = rng.uniform(-1, 0.5, D)
    P = 60_000
    reports = []
    for k in _thread_counts(fast):
        report = Comparison(f"numba against numpy, training shapes (batch {B}), {k} thread(s)",
                            labels=("numba", "numpy"))
        with fast.threads(k):
            for act in fast.ACTIVATIONS:
                outs = [be.linear_forward(x, W, b, act) for be in (fast, ref)]
                report += _pairs(f"linear_forward {act}", *outs)
                grads = []
                for be, y in zip((fast, ref), outs, strict=True):
                    dW, db = np.zeros_like(W), np.zeros_like(b)
                    dx = be.linear_backward(dy, x, W, y, dW, db, act)
                    grads.append((dx, dW, db))
                report += _pairs(f"linear_backward {act} (dx, dW, db)", *grads)
            report += _pairs("latent_forward (z, kl)",
                             *[be.latent_forward(h, eps) for be in (fast, ref)])
            for fb in (0.0, 0.8):  # 0.8 nats: about half the dimensions under it
                report += _pairs(f"latent_backward, free bits {fb}",
                                 *[be.latent_backward(dz, h, eps, dkl, fb) for be in (fast, ref)])
            mu, lv = h[:, :L], h[:, L:]
            for name, args in (("reparameterize_backward", (dz, lv, eps)),
                               ("gaussian_kl_backward", (dkl, mu, lv)),
                               ("bernoulli_nll", (logits, x)),
                               ("bernoulli_nll_backward", (dnll, logits, x)),
                               ("bernoulli_nll_and_grad", (logits, x, 1 / B)),
                               ("gaussian_nll", (logits, logvar, x)),
                               ("gaussian_nll_backward", (dnll, logits, logvar, x))):
                report += _pairs(name, *[getattr(be, name)(*args) for be in (fast, ref)])
            res = []
            for be in (fast, ref):
                dlv = np.zeros(D)
                res.append((*be.gaussian_nll_and_grad(logits, logvar, x, 1 / B, dlv), dlv))
            report += _pairs("gaussian_nll_and_grad (nll, dmean, dlogvar)", *res)
            report += optimizer_op_rows(fast, ref, rng, P)
        reports.append(report)
    reports.append(Comparison(f"numba against numpy, the conv VAE's layers (batch {B})",
                              conv_rows(fast, ref, rng, B, threads=_thread_counts(fast)),
                              labels=("numba", "numpy")))
    return reports


def optimizer_op_rows(fast, ref, rng, P) -> list:
    """Three steps of each update rule on a flat buffer of ``P`` parameters, both backends."""
    rows = []
    start, grads = rng.standard_normal(P), rng.standard_normal((3, P))
    for name, decoupled, wd in (("adam_update", False, 0.0), ("adam_update L2", False, 0.1),
                                ("adam_update decoupled", True, 0.1)):
        ends = []
        for be in (fast, ref):
            p, m, v = start.copy(), np.zeros(P), np.zeros(P)
            for step in range(1, 4):
                be.adam_update(p, grads[step - 1], m, v, 1e-3, 0.9, 0.999, 1e-8, wd, step,
                               decoupled)
            ends.append((p - start, m, v))
        rows += _pairs(f"{name} (change, m, v)", *ends)
    for name, momentum, nesterov in (("sgd_update", 0.0, False),
                                     ("sgd_update momentum", 0.9, False),
                                     ("sgd_update Nesterov", 0.9, True)):
        ends = []
        for be in (fast, ref):
            p, vel = start.copy(), np.zeros(P)
            for step in range(3):
                be.sgd_update(p, grads[step], vel, 0.01, momentum, nesterov, 0.01)
            ends.append((p - start, vel))
        rows += _pairs(f"{name} (change, velocity)", *ends)
    return rows


def conv_rows(fast, ref, rng, B, threads=None) -> list:
    """Every convolution of the conv VAE (28 x 28, channels 32 64), at batch ``B``, both ways.

    Each layer's input shape is the one it sees in the model (found by running
    the reference model's networks on a batch). ``threads``: the thread
    counts to run ``fast`` on (each row then says which), or None to run it
    as it is; the reference runs once.
    """
    from ..conv import Conv2d, ConvTranspose2d
    from ..convnet import conv_vae

    model = conv_vae((28, 28), 20, dtype="float64", backend=ref)
    convs = []
    for net, inp in ((model.encoder, rng.random((B, 1, 28, 28))),
                     (model.decoder, rng.standard_normal((B, 20)))):
        for layer in net.children:
            if isinstance(layer, (Conv2d, ConvTranspose2d)):
                convs.append((layer, inp.shape))
            inp = layer.forward(inp)
    rows = []
    for layer, shape in convs:
        x = rng.standard_normal(shape)
        W, b = layer.params["W"], layer.params["b"]
        kw = dict(stride=layer.stride, padding=layer.padding, activation=layer.activation)
        name = "conv2d" if isinstance(layer, Conv2d) else "conv_transpose2d"
        forward = dict(kw, output_padding=layer.output_padding) if name != "conv2d" else kw
        y = getattr(ref, f"{name}_forward")(x, W, b, **forward)
        dy = rng.standard_normal(y.shape)
        expected = _conv_pass(ref, name, x, W, b, dy, forward, kw)
        title = f"{name} {shape[1:]} W {W.shape}"
        for k in threads or (None,):
            if k is None:
                got, where = _conv_pass(fast, name, x, W, b, dy, forward, kw), ""
            else:
                with fast.threads(k):
                    got = _conv_pass(fast, name, x, W, b, dy, forward, kw)
                where = f", {k} thread(s)"
            rows += _pairs(f"{title} forward{where}", got[0], expected[0])
            rows += _pairs(f"{title} backward (dx, dW, db){where}", got[1], expected[1])
    return rows


def _conv_pass(be, name, x, W, b, dy, forward, backward):
    """One convolution's forward and backward on ``be``: ``(y, (dx, dW, db))``."""
    y = getattr(be, f"{name}_forward")(x, W, b, **forward)
    dW, db = np.zeros_like(W), np.zeros_like(b)
    dx = getattr(be, f"{name}_backward")(dy, x, W, y, dW, db, **backward)
    return y, (dx, dW, db)


def model_checks(fast, ref, seed=0) -> list:
    """One ``loss_and_grads`` of the default MLP VAE (batch 128) and the conv VAE (batch 64)."""
    from ..convnet import conv_vae
    from ..model import VAE

    rng = np.random.default_rng(seed)
    cases = [
        (f"VAE(784, hidden 400, latent 20), batch {BATCH}",
         lambda be: VAE(784, hidden_dims=(400,), latent_dim=20, dtype="float64", seed=seed,
                        backend=be), (BATCH, 784)),
        (f"conv VAE (28 x 28, channels 32 64, latent 20), batch {CONV_BATCH}",
         lambda be: conv_vae((28, 28), 20, dtype="float64", seed=seed, backend=be),
         (CONV_BATCH, 1, 28, 28)),
    ]
    reports = []
    for title, make, shape in cases:
        x = (rng.random(shape) < 0.3).astype(np.float64)
        eps = rng.standard_normal((shape[0], 20))
        results = []
        for be in (fast, ref):
            model = make(be)
            r = model.loss_and_grads(x, eps=eps)
            results.append((r.loss, {k: np.array(g) for k, g in r.grads.items()}))
        rows = [compare("loss", results[0][0], results[1][0], TOLERANCE)]
        rows += [compare(k, g, results[1][1][k], TOLERANCE) for k, g in results[0][1].items()]
        reports.append(Comparison(f"{title}: numba against numpy, every gradient", rows,
                                  labels=("numba", "numpy")))
    return reports


def fast_path_checks(seed: int = 0) -> list:
    """:func:`op_checks` and :func:`model_checks` of the Numba backend against the reference."""
    fast, ref = get_backend("numba"), get_backend("numpy")
    return op_checks(fast, ref, seed) + model_checks(fast, ref, seed)


__all__ = ["fast_path_checks", "op_checks", "model_checks", "TOLERANCE", "BATCH", "CONV_BATCH"]
