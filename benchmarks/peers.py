"""The training step of the default VAE in each framework, as its users would write it fastest.

Every implementation trains the same model (784-400-20, ReLU, Bernoulli
likelihood with logits, KL to N(0, I), loss averaged over the batch) with
the same optimizer (Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-8), from the
same initial weights (``init``: numpyvae's parameter names and layout, W as
(in, out)). Each is an object with

* ``step(i)``: one training step on batch ``i`` of the data (batches are
  contiguous slices, taken in place, with no copy), noise drawn by the
  framework's own generator; returns the loss (as the framework holds it:
  JAX's stays on the device until :meth:`sync`);
* ``step_with(x, eps)``: one step on given data and noise, returning the
  loss as a float (for validation);
* ``sync()``: wait until every dispatched step has finished.

The peers:

* ``torch``: PyTorch eager, ``nn.Linear`` layers, autograd,
  ``torch.optim.Adam(fused=True)``, gradients set to None between steps;
* ``torch.compile``: the same model; the loss (forward and backward, through
  AOTAutograd) and the optimizer step each compiled by Inductor;
* ``jax``: the whole step (loss, gradient, optax Adam update) one
  ``jax.jit`` program, parameters and optimizer state donated, the data set
  on the device once and each batch sliced inside the program.

numpyvae runs through its public API: ``numpyvae.train_step`` (as
``numpyvae train`` does: the forward and backward pass in one kernel call)
or ``loss_and_grads`` + ``optimizer.step`` (the per-op path on every
thread).
"""

from __future__ import annotations

import numpy as np

LR = 1e-3


def numpyvae_init(seed=0, sizes=(784, 400, 20)):
    """The initial weights every implementation starts from: numpyvae's own initialisation."""
    import numpyvae

    d, h, latent = sizes
    model = numpyvae.VAE(d, (h,), latent, dtype="float64", backend="numpy", seed=seed)
    return {name: p.copy() for name, p in model.params.items()}


class NumpyvaeStep:
    """numpyvae's public API, one of three ways (``how``).

    ``"train_step"``: :func:`numpyvae.train_step`, what ``numpyvae train``
    runs (forward and backward in one kernel call, on the thread count it
    measures to be fastest); ``"per-op"``: ``loss_and_grads`` +
    ``optimizer.step`` on every thread.
    A numpyvae without ``train_step`` (an older commit) runs the per-op path.
    """

    def __init__(self, data, batch, init, backend="numba", dtype="float32", how="train_step",
                 seed=0):
        import numpyvae

        d, h = init["encoder.0.W"].shape
        latent = init["decoder.0.W"].shape[0]
        self.model = numpyvae.VAE(d, (h,), latent, dtype=dtype, backend=backend, seed=seed)
        self.model.load_weights(init)
        self.optimizer = numpyvae.Adam(self.model.params, lr=LR, backend=backend)
        self.data, self.batch = data, batch
        self.n_batches = len(data) // batch
        train_step = getattr(numpyvae, "train_step", None)
        self.use_train_step = how != "per-op" and train_step is not None
        self._train_step = train_step

    def step_with(self, x, eps):
        if self.use_train_step:
            return self._train_step(self.model, self.optimizer, x, eps=eps).loss
        result = self.model.loss_and_grads(x, eps=eps)
        self.optimizer.step(result.grads)
        return result.loss

    def step(self, i):
        k = i % self.n_batches
        x = self.data[k * self.batch:(k + 1) * self.batch]
        if self.use_train_step:
            return self._train_step(self.model, self.optimizer, x).loss
        result = self.model.loss_and_grads(x)
        self.optimizer.step(result.grads)
        return result.loss

    def sync(self):
        pass


class TorchStep:
    """PyTorch, eager or with ``torch.compile`` (``compiled=True``)."""

    def __init__(self, data, batch, init, dtype="float32", threads=None, compiled=False, seed=0):
        import torch
        from torch import nn

        if threads is not None:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch = torch
        tdtype = getattr(torch, dtype)
        d, h = init["encoder.0.W"].shape
        latent = init["decoder.0.W"].shape[0]
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, h), nn.ReLU(), nn.Linear(h, d))
        with torch.no_grad():
            for net, prefix in ((self.encoder, "encoder"), (self.decoder, "decoder")):
                for i, layer in ((0, net[0]), (1, net[2])):
                    layer.weight.data = torch.from_numpy(init[f"{prefix}.{i}.W"].T.copy())
                    layer.bias.data = torch.from_numpy(init[f"{prefix}.{i}.b"].copy())
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        for p in params:
            p.data = p.data.to(tdtype).contiguous()
        self.optimizer = torch.optim.Adam(params, lr=LR, fused=True)
        self.data = torch.from_numpy(data)
        self.batch, self.n_batches = batch, len(data) // batch
        self.dtype = tdtype
        self.generator = torch.Generator().manual_seed(seed)
        loss = self._loss
        opt_step = self.optimizer.step
        if compiled:
            loss = torch.compile(loss)
            opt_step = torch.compile(opt_step)
        self.loss_fn, self.opt_step = loss, opt_step

    def _loss(self, x, eps):
        torch = self.torch
        h = self.encoder(x)
        mu, logvar = h[:, :self.latent], h[:, self.latent:]
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder(z)
        recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * torch.sum(mu * mu + torch.exp(logvar) - 1 - logvar)
        return (recon + kl) / x.shape[0]

    def _step(self, x, eps):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(x, eps)
        loss.backward()
        self.opt_step()
        return loss.detach()

    def step_with(self, x, eps):
        return float(self._step(self.torch.from_numpy(x), self.torch.from_numpy(eps)))

    def step(self, i):
        k = i % self.n_batches
        x = self.data[k * self.batch:(k + 1) * self.batch]
        eps = self.torch.randn((self.batch, self.latent), generator=self.generator,
                               dtype=self.dtype)
        return self._step(x, eps)

    def sync(self):
        pass


class JaxStep:
    """JAX: the whole step one jitted program, with optax's Adam and donated buffers."""

    def __init__(self, data, batch, init, dtype="float32", seed=0):
        import jax
        import jax.numpy as jnp
        import optax

        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.jax, self.jnp = jax, jnp
        self.latent = init["decoder.0.W"].shape[0]
        params = {k.replace(".", "_"): jnp.asarray(v, dtype=dtype) for k, v in init.items()}
        tx = optax.adam(LR, b1=0.9, b2=0.999, eps=1e-8)
        self.params, self.opt_state = params, tx.init(params)
        self.data = jax.device_put(jnp.asarray(data))
        self.batch, self.n_batches = batch, len(data) // batch
        self.key = jax.random.PRNGKey(seed)
        L = self.latent

        def loss_fn(p, x, eps):
            h = jax.nn.relu(x @ p["encoder_0_W"] + p["encoder_0_b"])
            h = h @ p["encoder_1_W"] + p["encoder_1_b"]
            mu, logvar = h[:, :L], h[:, L:]
            z = mu + jnp.exp(0.5 * logvar) * eps
            g = jax.nn.relu(z @ p["decoder_0_W"] + p["decoder_0_b"])
            logits = g @ p["decoder_1_W"] + p["decoder_1_b"]
            recon = jnp.sum(jnp.maximum(logits, 0) - x * logits
                            + jnp.log1p(jnp.exp(-jnp.abs(logits))))
            kl = 0.5 * jnp.sum(mu * mu + jnp.exp(logvar) - 1 - logvar)
            return (recon + kl) / x.shape[0]

        def update(p, state, x, eps):
            loss, grads = jax.value_and_grad(loss_fn)(p, x, eps)
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state, loss

        def step(p, state, data, i, key):
            x = jax.lax.dynamic_slice_in_dim(data, i * batch, batch)
            eps = jax.random.normal(jax.random.fold_in(key, i), (batch, L), dtype=x.dtype)
            return update(p, state, x, eps)

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self._step_with = jax.jit(update, donate_argnums=(0, 1))
        self._last = None

    def step_with(self, x, eps):
        self.params, self.opt_state, loss = self._step_with(self.params, self.opt_state, x, eps)
        return float(loss)

    def step(self, i):
        self.params, self.opt_state, self._last = self._step(
            self.params, self.opt_state, self.data, i % self.n_batches, self.key)
        return self._last

    def sync(self):
        if self._last is not None:
            self._last.block_until_ready()


def make(name, data, batch, init, dtype="float32", threads=None):
    """An implementation by name: numba, numba per-op, numpy, torch, torch.compile, jax."""
    if name == "numba":
        return NumpyvaeStep(data, batch, init, "numba", dtype)
    if name == "numba per-op":
        return NumpyvaeStep(data, batch, init, "numba", dtype, how="per-op")
    if name == "numpy":
        return NumpyvaeStep(data, batch, init, "numpy", dtype)
    if name == "torch":
        return TorchStep(data, batch, init, dtype, threads)
    if name == "torch.compile":
        return TorchStep(data, batch, init, dtype, threads, compiled=True)
    if name == "jax":
        return JaxStep(data, batch, init, dtype)
    raise ValueError(f"unknown implementation {name!r}")


def validation_noise(batch, steps=20, latent=20, seed=1, dtype="float32"):
    """The fixed noise of the validation run: (steps, batch, latent)."""
    return np.random.default_rng(seed).standard_normal((steps, batch, latent)).astype(dtype)
