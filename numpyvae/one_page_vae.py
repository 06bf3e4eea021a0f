"""A whole variational autoencoder on one page of NumPy: forward, backward, Adam and the loop.

This is the model ``numpyvae.VAE(D, hidden_dims=(H,), latent_dim=L)`` builds
by default, written out top to bottom with nothing but NumPy: a ReLU MLP
encoder ``D -> H -> 2L`` whose output is ``[mu | logvar]``, a diagonal
Gaussian posterior, a ReLU MLP decoder ``L -> H -> D`` whose output are
Bernoulli logits, every gradient derived by hand beside the line it
differentiates, Adam, and a loop over minibatches. It imports nothing from
the package, so it can be read (and copied) on its own; the tests hold its
loss and every gradient equal to :meth:`numpyvae.model.VAE.loss_and_grads`
on the same weights and noise, in float64, to 1e-12.

One convention everywhere: ``logvar = log sigma^2`` and
``sigma = exp(logvar / 2)``. The loss is in nats per example: each example's
reconstruction NLL plus ``beta`` times its KL, summed over its pixels and
latent dimensions, averaged over the batch.

The library's version of each piece, in the order they appear here:

* the weights and their names: :func:`numpyvae.layers.mlp`, :mod:`numpyvae.init`
  (``pytorch_default``);
* a linear layer and its backward: :func:`numpyvae.ops.linear_forward`,
  :func:`numpyvae.ops.linear_backward`, :class:`numpyvae.layers.Linear`;
* the sample and the KL: :func:`numpyvae.ops.reparameterize`,
  :func:`numpyvae.ops.gaussian_kl` and their backwards,
  :class:`numpyvae.distributions.DiagonalGaussian`;
* the likelihood: :func:`numpyvae.ops.bernoulli_nll`,
  :class:`numpyvae.distributions.Bernoulli`;
* the wiring: :meth:`numpyvae.model.VAE.loss_and_grads`;
* the optimizer: :class:`numpyvae.optim.Adam`, :func:`numpyvae.ops.adam_update`;
* the loop: :class:`numpyvae.app.train.Trainer` (run folders, checkpoints,
  evaluation) and :func:`numpyvae.fast.step.train_step` (the one-call step).

What does not live here: other architectures, likelihoods and optimizers,
free bits, float32 speed (the library runs the same arithmetic in fused
kernels), saving. ``python -m numpyvae.one_page_vae`` trains it on a small set
of binary images it draws itself and prints the loss falling.
"""

from __future__ import annotations

import numpy as np


def init_params(rng, sizes=(784, 400, 20)):
    """Weights for ``sizes = (D, H, L)``, named as the library names them.

    Each layer ``x @ W + b`` (``W`` of shape (in, out)) starts at PyTorch's
    default, ``W, b ~ U(-1/sqrt(in), 1/sqrt(in))``, drawn in the library's
    order: ``VAE(D, (H,), L, dtype="float64", seed=s)`` starts from
    ``init_params(np.random.default_rng(s), (D, H, L))``.
    """
    D, H, L = sizes
    params = {}
    for W, b, n_in, n_out in [("encoder.0.W", "encoder.0.b", D, H),
                              ("encoder.1.W", "encoder.1.b", H, 2 * L),
                              ("decoder.0.W", "decoder.0.b", L, H),
                              ("decoder.1.W", "decoder.1.b", H, D)]:
        bound = 1.0 / np.sqrt(n_in)
        params[W] = rng.uniform(-bound, bound, size=(n_in, n_out))
        params[b] = rng.uniform(-bound, bound, size=n_out)
    return params


def loss_and_grads(params, x, eps, beta=1.0):
    """The loss of a batch and its gradient for every parameter.

    Parameters
    ----------
    params : dict
        Name -> array, as from :func:`init_params`.
    x : ndarray, shape (B, D)
        The data, values in [0, 1].
    eps : ndarray, shape (B, L)
        Standard-normal noise, passed in so that it can be held fixed.
    beta : float
        The weight of the KL term.

    Returns
    -------
    loss : float
        ``mean(recon) + beta * mean(kl)``, nats per example.
    grads : dict
        Name -> the gradient of ``loss``: the same names and shapes as ``params``.
    """
    W1, b1, W2, b2 = (params[k] for k in ("encoder.0.W", "encoder.0.b",
                                          "encoder.1.W", "encoder.1.b"))
    W3, b3, W4, b4 = (params[k] for k in ("decoder.0.W", "decoder.0.b",
                                          "decoder.1.W", "decoder.1.b"))
    B, L = eps.shape

    # ---- forward -------------------------------------------------------------------
    a1 = x @ W1 + b1                        # (B, H) encoder pre-activation
    h1 = np.maximum(a1, 0)                  # ReLU
    h = h1 @ W2 + b2                        # (B, 2L) = [mu | logvar]
    mu, logvar = h[:, :L], h[:, L:]
    sigma = np.exp(0.5 * logvar)            # logvar = log sigma^2
    z = mu + sigma * eps                    # reparameterization: z ~ N(mu, sigma^2)
    a3 = z @ W3 + b3                        # (B, H) decoder pre-activation
    h3 = np.maximum(a3, 0)
    logits = h3 @ W4 + b4                   # (B, D) Bernoulli logits l
    # -log p(x|l) = log(1 + e^l) - x l, written max(l, 0) - x l + log(1 + e^-|l|) so that
    # exp never overflows; summed over the pixels of each example.
    e = np.exp(-np.abs(logits))
    recon = np.sum(np.maximum(logits, 0) - x * logits + np.log1p(e), axis=1)      # (B,)
    # KL(N(mu, sigma^2) || N(0, 1)) = (mu^2 + sigma^2 - 1 - log sigma^2) / 2 per dimension.
    kl = np.sum(0.5 * (mu * mu + np.exp(logvar) - 1 - logvar), axis=1)          # (B,)
    loss = recon.mean() + beta * kl.mean()

    # ---- backward: d loss / d every intermediate, last to first ---------------------
    # d/dl [log(1 + e^l) - x l] = e^l / (1 + e^l) - x = sigmoid(l) - x, and the mean over
    # the batch puts 1/B on each example. sigmoid(l) = 1/(1 + e^-|l|) for l >= 0 and
    # e^-|l|/(1 + e^-|l|) for l < 0, from the same e as the loss.
    dlogits = (np.where(logits >= 0, 1, e) / (1 + e) - x) / B                    # (B, D)
    # logits = h3 W4 + b4: logits_nj = sum_i h3_ni W4_ij + b4_j, so dW4 = h3^T dlogits,
    # db4 = sum over the batch of dlogits, dh3 = dlogits W4^T.
    dW4, db4 = h3.T @ dlogits, dlogits.sum(axis=0)
    # h3 = max(a3, 0): its derivative is 1 where a3 > 0, else 0.
    da3 = (dlogits @ W4.T) * (a3 > 0)
    dW3, db3 = z.T @ da3, da3.sum(axis=0)
    dz = da3 @ W3.T                                                              # (B, L)
    # mu and logvar reach the loss twice: through z and through beta * mean(kl).
    # z = mu + exp(logvar / 2) eps: dz/dmu = 1, dz/dlogvar = sigma eps / 2.
    # kl = (mu^2 + e^logvar - 1 - logvar) / 2: dkl/dmu = mu, dkl/dlogvar = (e^logvar - 1) / 2.
    # The KL's upstream gradient is beta / B per example (the batch mean, weighted by beta).
    dmu = dz + (beta / B) * mu
    dlogvar = 0.5 * dz * eps * sigma + (beta / B) * 0.5 * np.expm1(logvar)
    dh = np.concatenate([dmu, dlogvar], axis=1)                                  # (B, 2L)
    dW2, db2 = h1.T @ dh, dh.sum(axis=0)
    da1 = (dh @ W2.T) * (a1 > 0)
    dW1, db1 = x.T @ da1, da1.sum(axis=0)   # nothing upstream of the data needs dx

    grads = {"encoder.0.W": dW1, "encoder.0.b": db1, "encoder.1.W": dW2, "encoder.1.b": db2,
             "decoder.0.W": dW3, "decoder.0.b": db3, "decoder.1.W": dW4, "decoder.1.b": db4}
    return float(loss), grads


def adam_init(params):
    """Adam's state: the step count and two moments per parameter, keyed by its name."""
    return {"step": 0,
            "m": {name: np.zeros_like(p) for name, p in params.items()},
            "v": {name: np.zeros_like(p) for name, p in params.items()}}


def adam_step(params, grads, state, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step (Kingma & Ba, 2015), PyTorch's form, updating ``params`` in place.

    With ``g`` the gradient and ``t`` the step number (from 1),
    ``m = beta1 m + (1 - beta1) g`` and ``v = beta2 v + (1 - beta2) g^2`` are running
    means of ``g`` and ``g^2``, biased toward their start at 0 by the factors
    ``1 - beta1^t`` and ``1 - beta2^t``; dividing those out, the step is
    ``p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)``.
    """
    state["step"] += 1
    t = state["step"]
    # Python floats, which take the parameters' dtype: float32 weights stay float32.
    c1, sqrt_c2 = 1 - beta1**t, float(np.sqrt(1 - beta2**t))
    for name, p in params.items():
        g, m, v = grads[name], state["m"][name], state["v"][name]
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * (g * g)
        # The step above, with its divisions in the order the library's update makes them.
        p -= m * (lr / c1) / (np.sqrt(v) / sqrt_c2 + eps)


def train(x, sizes=None, epochs=10, batch_size=128, lr=1e-3, beta=1.0, seed=0):
    """Train a VAE on ``x`` (N, D) with Adam; returns ``(params, losses)``.

    ``sizes`` is ``(D, H, L)`` (default ``(D, 400, 20)``, the library's default
    model). One generator, seeded by ``seed``, draws the initial weights, then
    each epoch's order of the examples and each step's noise. ``losses`` holds
    each epoch's mean loss over its minibatches, nats per example.
    """
    rng = np.random.default_rng(seed)
    sizes = (x.shape[1], 400, 20) if sizes is None else sizes
    params = init_params(rng, sizes)
    state = adam_init(params)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = x[order[start:start + batch_size]]
            eps = rng.standard_normal((len(batch), sizes[2]))
            loss, grads = loss_and_grads(params, batch, eps, beta)
            adam_step(params, grads, state, lr)
            total += loss * len(batch)
        losses.append(total / len(x))
    return params, losses


def bars(n, size=8, rng=None):
    """``n`` binary images (n, size * size): random rows, or random columns, switched on."""
    rng = np.random.default_rng(0) if rng is None else rng
    on = rng.random((n, size)) < 0.3                         # which rows (or columns) are lit
    images = np.repeat(on[:, :, None], size, axis=2)         # rows lit
    vertical = rng.random(n) < 0.5
    images[vertical] = images[vertical].transpose(0, 2, 1)   # columns lit instead
    return images.reshape(n, size * size).astype(np.float64)


if __name__ == "__main__":
    data = bars(2000)
    _, history = train(data, sizes=(64, 64, 4), epochs=15, batch_size=64, lr=3e-3)
    for epoch, value in enumerate(history, 1):
        print(f"epoch {epoch:2d}  loss {value:7.3f} nats per image")
