"""An independent PyTorch implementation of the default VAE and its training step (the peer).

Same model (784-400-20 with ReLU, the encoder's last layer of width 40 split
into ``mu`` and ``logvar``), same loss (Bernoulli NLL with logits summed over
pixels plus the KL to N(0, I), averaged over the batch), same optimizer
(Adam, lr 1e-3, PyTorch's defaults), same initialisation (``nn.Linear``'s).
Written the way a PyTorch user would write it, eager mode, autograd.

``adam`` picks PyTorch's Adam implementation: ``"default"`` (what
``torch.optim.Adam`` chooses on CPU), ``"foreach"`` or ``"fused"``. The
training benchmark measures them all and compares with the fastest, so the
peer is PyTorch at its best in eager mode.
"""

from __future__ import annotations

import numpy as np


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class TorchVAE:
    """Model, optimizer and one training step; ``step(x)`` takes a NumPy batch (no copy)."""

    def __init__(self, sizes=(784, 400, 20), dtype="float32", seed=0, threads=None,
                 adam="default", lr=1e-3):
        import torch
        from torch import nn

        if threads is not None:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        d, hidden, latent = sizes
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d))
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        for p in params:
            p.data = p.data.to(self.dtype)
        options = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[adam]
        self.optimizer = torch.optim.Adam(params, lr=lr, **options)
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, x):
        torch = self.torch
        B = x.shape[0]
        h = self.encoder(x)
        mu, logvar = h[:, :self.latent], h[:, self.latent:]
        eps = torch.randn(mu.shape, generator=self.generator, dtype=self.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder(z)
        recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * torch.sum(mu * mu + torch.exp(logvar) - 1 - logvar)
        return (recon + kl) / B

    def step(self, x: np.ndarray) -> float:
        x = self.torch.from_numpy(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x)
        loss.backward()
        self.optimizer.step()
        return float(loss)  # as numpyvae returns the loss
