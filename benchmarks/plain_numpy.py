"""The same VAE training step written straightforwardly in NumPy: the yardstick for the reference.

What a competent NumPy programmer writes in one sitting: expressions with
temporaries, ``@`` for the products, one Adam update per parameter. The
target is that numpyvae's readable reference backend is at least as fast as
this, despite its layers, buffers and backend indirection.
"""

from __future__ import annotations

import numpy as np


class PlainNumpyVAE:
    """784-400-20 ReLU VAE, Bernoulli likelihood, Adam; ``step(x)`` returns the loss."""

    def __init__(self, sizes=(784, 400, 20), dtype="float32", seed=0, lr=1e-3):
        rng = np.random.default_rng(seed)
        d, hidden, latent = sizes
        self.latent = latent
        self.rng = rng
        self.dtype = np.dtype(dtype)
        shapes = [(d, hidden), (hidden, 2 * latent), (latent, hidden), (hidden, d)]
        self.params = []
        for n_in, n_out in shapes:  # PyTorch's nn.Linear initialisation
            bound = 1 / np.sqrt(n_in)
            self.params.append(rng.uniform(-bound, bound, (n_in, n_out)).astype(dtype))
            self.params.append(rng.uniform(-bound, bound, n_out).astype(dtype))
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.lr, self.beta1, self.beta2, self.eps = lr, 0.9, 0.999, 1e-8

    def step(self, x):
        W1, b1, W2, b2, W3, b3, W4, b4 = self.params
        B, L = len(x), self.latent
        # forward
        a1 = x @ W1 + b1
        h1 = np.maximum(a1, 0)
        h = h1 @ W2 + b2
        mu, logvar = h[:, :L], h[:, L:]
        eps = self.rng.standard_normal(mu.shape, dtype=self.dtype)
        std = np.exp(0.5 * logvar)
        z = mu + std * eps
        a3 = z @ W3 + b3
        h3 = np.maximum(a3, 0)
        logits = h3 @ W4 + b4
        recon = np.sum(np.maximum(logits, 0) - x * logits + np.log1p(np.exp(-np.abs(logits))))
        kl = 0.5 * np.sum(mu * mu + std * std - 1 - logvar)
        loss = (recon + kl) / B
        # backward
        with np.errstate(over="ignore"):
            dlogits = (1 / (1 + np.exp(-logits)) - x) / B
        dW4, db4 = h3.T @ dlogits, dlogits.sum(0)
        da3 = (dlogits @ W4.T) * (a3 > 0)
        dW3, db3 = z.T @ da3, da3.sum(0)
        dz = da3 @ W3.T
        dmu = dz + mu / B
        dlogvar = 0.5 * dz * eps * std + 0.5 * (std * std - 1) / B
        dh = np.concatenate([dmu, dlogvar], axis=1)
        dW2, db2 = h1.T @ dh, dh.sum(0)
        da1 = (dh @ W2.T) * (a1 > 0)
        dW1, db1 = x.T @ da1, da1.sum(0)
        grads = [dW1, db1, dW2, db2, dW3, db3, dW4, db4]
        # Adam
        self.t += 1
        c1, c2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m[...] = self.beta1 * m + (1 - self.beta1) * g
            v[...] = self.beta2 * v + (1 - self.beta2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
        return float(loss)
