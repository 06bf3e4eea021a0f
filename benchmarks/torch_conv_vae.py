"""An independent PyTorch implementation of the convolutional VAE and its training step (the peer).

The architecture of ``numpyvae train --arch conv``, written from its
description: encoder Conv(1->C1, k4, s2, p1) ReLU -> Conv(C1->C2, k4, s2, p1)
ReLU -> Flatten -> Linear(C2 (H/4) (W/4) -> 2L); decoder Linear(L -> C2 (H/4)
(W/4)) ReLU -> Reshape(C2, H/4, W/4) -> ConvTranspose(C2->C1, k4, s2, p1) ReLU
-> ConvTranspose(C1->1, k4, s2, p1) giving logits. The same loss (Bernoulli
NLL with logits summed over pixels plus the KL to N(0, I), averaged over the
batch) and optimizer (Adam, lr 1e-3), PyTorch's default initialisation.
Eager mode, autograd, as a PyTorch user would write it.

``step(x)`` takes a NumPy batch of shape ``(B, H W)`` or ``(B, 1, H, W)``
(no copy). :func:`train_and_evaluate` is the same recipe as the
Fashion-MNIST quality comparison (``benchmarks/quality_conv.py``).
"""

from __future__ import annotations

import math

import numpy as np


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class TorchConvVAE:
    """Model, optimizer and one training step of the convolutional VAE."""

    def __init__(self, image_shape=(28, 28), latent=20, channels=(32, 64), dtype="float32",
                 seed=0, threads=None, lr=1e-3):
        import torch
        from torch import nn

        if threads is not None:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        H, W = image_shape
        c1, c2 = channels
        self.image_shape, self.latent = (1, H, W), latent
        flat = c2 * (H // 4) * (W // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(flat, 2 * latent))
        self.decoder = nn.Sequential(
            nn.Linear(latent, flat), nn.ReLU(), nn.Unflatten(1, (c2, H // 4, W // 4)),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(c1, 1, 4, 2, 1))
        self.encoder.to(self.dtype)
        self.decoder.to(self.dtype)
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.generator = torch.Generator().manual_seed(seed)

    def _images(self, x):
        x = self.torch.from_numpy(x)
        return x.reshape(x.shape[0], *self.image_shape)

    def loss(self, x, eps=None):
        """Mean over the batch of the negative ELBO (one sample of z)."""
        torch = self.torch
        h = self.encoder(x)
        mu, logvar = h[:, :self.latent], h[:, self.latent:]
        if eps is None:
            eps = torch.randn(mu.shape, generator=self.generator, dtype=self.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder(z)
        recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * torch.sum(mu * mu + torch.exp(logvar) - 1 - logvar)
        return (recon + kl) / x.shape[0]

    def step(self, x: np.ndarray) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self._images(x))
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def test_elbo(self, x: np.ndarray, batch=500, seed=0) -> float:
        """Mean negative ELBO over ``x``, one sample of z per example (as numpyvae evaluates)."""
        torch = self.torch
        gen = torch.Generator().manual_seed(seed)
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(x), batch):
                xb = self._images(np.ascontiguousarray(x[i:i + batch]))
                eps = torch.randn((xb.shape[0], self.latent), generator=gen, dtype=self.dtype)
                total += float(self.loss(xb, eps)) * xb.shape[0]
        return total / len(x)


def train_and_evaluate(train, test, *, epochs, batch=128, latent=20, seed=0, threads=1,
                       channels=(32, 64), log=print):
    """Train on shuffled mini-batches for ``epochs``; return the test −ELBO per epoch."""
    side = int(math.isqrt(train.shape[1]))
    model = TorchConvVAE((side, side), latent, channels, seed=seed, threads=threads)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(train))
        for i in range(0, len(train) - batch + 1, batch):
            model.step(np.ascontiguousarray(train[order[i:i + batch]]))
        history.append(model.test_elbo(test))
        log(f"torch conv seed {seed} epoch {epoch + 1}: test -ELBO {history[-1]:.3f}")
    return history
