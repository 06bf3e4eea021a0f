"""The VAE training step written straightforwardly in NumPy: the yardstick for the reference.

What a competent NumPy programmer writes in one sitting: expressions with
temporaries, ``@`` for the products, one Adam update per parameter. That is
the package's one-page VAE (:mod:`numpyvae.one_page_vae`, tested equal to
``VAE.loss_and_grads``); this file runs it as the benchmarks' other
implementations run, one ``step(x)`` at a time, in float32 by default. The
target is that numpyvae's readable reference backend is at least as fast as
this, despite its layers, buffers and backend indirection.
"""

from __future__ import annotations

import numpy as np

from numpyvae import one_page_vae as page


class PlainNumpyVAE:
    """784-400-20 ReLU VAE, Bernoulli likelihood, Adam; ``step(x)`` returns the loss."""

    def __init__(self, sizes=(784, 400, 20), dtype="float32", seed=0, lr=1e-3):
        self.rng = np.random.default_rng(seed)  # the initial weights, then each step's noise
        self.dtype = np.dtype(dtype)
        self.latent = sizes[2]
        self.lr = lr
        self.params = {name: p.astype(self.dtype)  # PyTorch's nn.Linear initialisation
                       for name, p in page.init_params(self.rng, sizes).items()}
        self.state = page.adam_init(self.params)

    def step(self, x):
        eps = self.rng.standard_normal((len(x), self.latent), dtype=self.dtype)
        loss, grads = page.loss_and_grads(self.params, x, eps)
        page.adam_step(self.params, grads, self.state, self.lr)
        return loss
