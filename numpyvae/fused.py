"""One training step, ``loss_and_grads`` then ``optimizer.step``, on the fastest thread count.

:func:`train_step` is what a training loop calls. By default it is
exactly::

    with step_threads(model):   # numpyvae.threads: 1 or all usable threads, by timing
        result = model.loss_and_grads(x, eps=eps, beta=beta, rng=rng)
        if math.isfinite(result.loss):
            optimizer.step(result.grads)

(a batch whose loss overflowed is not stepped on: the caller sees the loss
and decides), which is the path to read: every layer's forward and backward,
one backend op at a time.

**The whole-step kernel** (``train_step(..., fused=True)``). When the
backend offers one (the Numba backend's
:func:`~numpyvae.backend.numba_ops.mlp_step`) and the model is one it
covers — a :class:`~numpyvae.model.VAE` or
:class:`~numpyvae.model.Autoencoder` whose networks are made of
:class:`~numpyvae.layers.Linear` layers, without free bits — the same step
runs as two kernel calls: the forward and backward of the whole network,
data-parallel over chunks of the batch (each thread runs its rows through
every layer with single-threaded BLAS), then the sum of the chunks'
gradients fused with the optimizer's update. Two thread barriers per step
instead of twenty-odd. Same loss, same gradients (to rounding: the batch's
gradient is summed in two halves), same noise drawn from the same
generator; the tests hold the two paths to each other and to the NumPy
reference.

It is not the default because it measured slower (``benchmarks/bench_peers.py``,
its threading table in ``benchmarks/results/summary.md``: two cores, default
VAE, TBB threading layer): idle, 34,600 samples/s against the per-op path's
38,600 at batch 128 and 14,300 against 18,900 at batch 32; with one
competing process, 19,600 against 23,000 at batch 128. Each thread's
products on half the batch run BLAS less efficiently than the whole batch
split by columns, and once the threading layer's threads sleep instead of
spinning (TBB), the barriers it saves cost little. It stays for the
benchmarks and for reading: the data-parallel design, measured.

This module only describes a model to the kernel (a table of layers and
offsets into the flat parameter buffer) and keeps the work buffers; the
arithmetic is in :mod:`numpyvae.backend.numba_step`.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from .distributions import Bernoulli, DiagonalGaussian, Gaussian, GaussianLearnedVariance
from .layers import Linear, Sequential
from .model import VAE, Autoencoder, LossResult
from .threads import ThreadChooser, step_threads


def train_step(model, optimizer, x, *, eps=None, beta=1.0, rng=None,
               fused=False) -> LossResult:
    """One optimizer step on batch ``x``: the loss before the step, and the gradients.

    Parameters are as :meth:`numpyvae.VAE.loss_and_grads`'s; ``optimizer``
    was built on ``model.params``. Returns the :class:`~numpyvae.model.LossResult`
    of the batch (``grads`` are the model's gradient arrays, as there). When
    the loss is not finite the parameters are left as they were.

    The step runs on the thread count that :func:`numpyvae.threads.step_threads`
    measures to be fastest. ``fused=True`` runs the whole-step kernel when the
    model is one it covers (see the module docstring; measured slower than
    the per-op path on this library's machines, so not the default).
    """
    plan = _plan_for(model, optimizer) if fused else None
    xc = None if plan is None else plan.batch(model, x)
    if xc is None:
        with step_threads(model):
            result = model.loss_and_grads(x, eps=eps, beta=beta, rng=rng)
            if math.isfinite(result.loss):
                optimizer.step(result.grads)
        return result
    return plan.step(model, optimizer, xc, eps, beta, rng)


# --------------------------------------------------------------------------
# Describing a model to the kernel
# --------------------------------------------------------------------------

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan_for(model, optimizer):
    """The model's fused-step plan, or None when the per-op path must run."""
    backend = getattr(model, "backend", None)
    if backend is None or not hasattr(backend, "mlp_step"):
        return None
    if getattr(optimizer, "backend", None) is not backend:
        return None
    if getattr(model, "free_bits", 0.0) != 0.0:  # may be set at any time: asked every step
        return None
    try:
        plan = _PLANS.get(model)
    except TypeError:  # not weak-referenceable: not a model this module knows
        return None
    if plan is None or plan.backend is not backend:
        plan = _describe(model, backend)
        _PLANS[model] = plan if plan is not None else _Unfusable(backend)
    return None if isinstance(plan, _Unfusable) else plan


@dataclass
class _Unfusable:
    backend: object


def _offset(a, flat):
    """Where ``a`` (a C-contiguous view) starts in the 1-D ``flat``, in elements, or None."""
    if not isinstance(a, np.ndarray) or a.dtype != flat.dtype or not a.flags.c_contiguous:
        return None
    start = a.__array_interface__["data"][0] - flat.__array_interface__["data"][0]
    if start < 0 or start % a.itemsize or start + a.nbytes > flat.nbytes:
        return None
    return start // a.itemsize


def _linear_layers(network):
    """The network's Linear layers in order, or None if it holds any other kind of layer."""
    leaves = [layer for layer in network.layers() if not isinstance(layer, Sequential)]
    if not leaves or any(type(layer) is not Linear for layer in leaves):
        return None
    return leaves


def _likelihood(model, dtype):
    """``(code, logvar (1,) or (D,), (learned logvar, its gradient) or None)``, or None."""
    lik = model.likelihood
    kind = type(lik)  # exactly these classes: a subclass may change the math
    if kind is Bernoulli:
        return "bernoulli", np.zeros(1, dtype), None
    if kind is Gaussian:
        return "gaussian", np.full(1, lik.logvar(), dtype), None
    if kind is GaussianLearnedVariance:
        learned = lik.params["logvar"]
        return "gaussian", learned.reshape(-1), (learned, lik.grads["logvar"])
    return None


def _describe(model, backend):
    """A :class:`_Plan` for ``model``, or None if the fused kernel does not cover it."""
    if type(model) not in (VAE, Autoencoder):  # exactly these: a subclass may change the step
        return None
    kind = model.kind
    if getattr(model, "free_bits", 0.0) != 0.0:
        return None
    if kind == "vae" and type(getattr(model, "posterior", None)) is not DiagonalGaussian:
        return None
    flat, flat_grads = model.flat_params, model.flat_grads
    if flat.dtype not in (np.float32, np.float64):
        return None
    encoder, decoder = _linear_layers(model.encoder), _linear_layers(model.decoder)
    if encoder is None or decoder is None:
        return None
    lik = _likelihood(model, flat.dtype)
    if lik is None:
        return None
    lik_name, logvar, learned = lik
    rows, alphas = [], []
    for layer in (*encoder, *decoder):
        W, b = layer.params["W"], layer.params["b"]
        offsets = (_offset(W, flat), _offset(b, flat), _offset(layer.grads["W"], flat_grads),
                   _offset(layer.grads["b"], flat_grads))
        if None in offsets or offsets[:2] != offsets[2:]:
            return None
        rows.append([offsets[0], offsets[1], layer.in_features, layer.out_features,
                     backend.activation_code(layer.activation), 0])
        alphas.append(layer.alpha)
    logvar_off = -1
    if learned is not None:
        param, grad = learned
        logvar_off = _offset(param, flat)
        if logvar_off is None or _offset(grad, flat_grads) != logvar_off:
            return None
    return _Plan(backend=backend, layers=np.array(rows, dtype=np.int64),
                 alphas=np.array(alphas, dtype=flat.dtype), n_enc=len(encoder),
                 vae=kind == "vae", likelihood=backend.STEP_LIKELIHOODS[lik_name],
                 logvar=logvar, logvar_off=logvar_off, input_dim=encoder[0].in_features,
                 latent_dim=model.latent_dim, n_params=flat.size, dtype=flat.dtype)


@dataclass
class _Plan:
    """A model as the fused kernel sees it, and its work buffers by batch size."""

    backend: object
    layers: np.ndarray  # (n_layers, 6); column Y_OFF is filled per batch size
    alphas: np.ndarray
    n_enc: int
    vae: bool
    likelihood: int
    logvar: np.ndarray
    logvar_off: int
    input_dim: int
    latent_dim: int
    n_params: int
    dtype: np.dtype
    _buffers: dict = field(default_factory=dict)

    def batch(self, model, x):
        """``x`` as the kernel takes it (C-ordered, the model's dtype), or None to fall back."""
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.input_dim:
            return None  # the per-op path raises the error that explains it
        if x.shape[0] == 0 or not (np.issubdtype(x.dtype, np.floating)
                                   or np.issubdtype(x.dtype, np.integer)):
            return None
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _work(self, B, tasks):
        """Buffers for a batch of ``B`` cut into ``tasks`` chunks, made once and kept."""
        key = (B, tasks)
        buffers = self._buffers.get(key)
        if buffers is not None:
            return buffers
        R = -(-B // tasks)  # the most rows any chunk holds
        L, dt = self.latent_dim, self.dtype
        layers = self.layers.copy()
        offset = 0
        for row in layers:  # each layer's output: R x O
            row[5] = offset
            offset += R * int(row[3])
        z_off = offset
        offset += R * L if self.vae else 0
        wide = max(int(layers[:, 2].max()), int(layers[:, 3].max()), 2 * L)
        pingpong = np.array([offset, offset + R * wide], dtype=np.int64)
        offset += 2 * R * wide
        buffers = {
            "layers": layers, "z_off": z_off, "pingpong": pingpong,
            "work": np.empty((tasks, offset), dt),
            "parts": np.empty((tasks, self.n_params), dt),
            "nll": np.empty(B, dt), "kl": np.zeros(B, dt), "dkl": np.empty(B, dt),
            "eps": np.zeros((B, L), dt), "inv_var": np.empty(self.logvar.shape, dt),
            "threads": ThreadChooser(tasks),
        }
        self._buffers = {key: buffers}  # keep one batch size: the last one asked for
        return buffers

    def step(self, model, optimizer, x, eps, beta, rng):
        """The fused step on a checked batch ``x``; see :func:`train_step`."""
        B = x.shape[0]
        buf = self._work(B, max(1, min(self.backend.max_threads(), B)))
        if self.vae:
            if eps is None:
                rng = model.rng if rng is None else rng
                eps = rng.standard_normal(out=buf["eps"], dtype=self.dtype)
            else:
                eps = np.ascontiguousarray(eps, dtype=self.dtype)
                if eps.shape != (B, self.latent_dim):
                    raise ValueError(f"VAE: expected eps of shape ({B}, {self.latent_dim}), "
                                     f"got {eps.shape}")
            buf["dkl"].fill(beta / B)
        else:
            eps = buf["eps"]
        nll, kl = buf["nll"], buf["kl"]
        chooser = buf["threads"]
        k = chooser.pick()
        t0 = time.perf_counter()
        with self.backend.threads(k):
            self.backend.mlp_step(model.flat_params, buf["parts"], buf["layers"], self.alphas,
                                  self.n_enc, self.vae, x, eps, buf["dkl"], self.likelihood,
                                  self.logvar, buf["inv_var"], self.logvar_off, 1.0 / B, nll,
                                  kl, buf["work"], buf["pingpong"], buf["z_off"])
            recon = float(nll.mean())
            kl_value = float(kl.mean()) if self.vae else 0.0
            loss = recon + beta * kl_value
            if math.isfinite(loss):
                optimizer.step_summed(buf["parts"], model.flat_grads, model.grads)
            else:  # leave the parameters; the gradients are the batch's, as on the per-op path
                self.backend.sum_parts(buf["parts"], model.flat_grads)
        chooser.record(k, time.perf_counter() - t0)
        return LossResult(loss, recon, kl_value, model.grads)
