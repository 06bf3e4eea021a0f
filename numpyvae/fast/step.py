"""One training step, ``loss_and_grads`` then ``optimizer.step``, on the fastest thread count.

:func:`train_step` is what a training loop calls. What it computes is
exactly::

    with step_threads(model):   # numpyvae.fast.threads: 1 or all usable threads, by timing
        result = model.loss_and_grads(x, eps=eps, beta=beta, rng=rng)
        if math.isfinite(result.loss):
            optimizer.step(result.grads)

(a batch whose loss overflowed is not stepped on: the caller sees the loss
and decides), and with ``fused=False`` that is the code it runs: every
layer's forward and backward, one backend op at a time, the path to read
and to step through.

**The one-call forward and backward** (the default). When the backend
offers it (the Numba backend's :func:`~numpyvae.fast.numba_ops.mlp_step`)
and the model is one it covers — by the model's own account
(:meth:`~numpyvae.VAE.describe`), a VAE or autoencoder whose networks are
made of ``Linear`` layers, without free bits — the forward
and backward pass runs as one call into jitted code
(:mod:`numpyvae.fast.numba_step`), the same kernels in the same order,
without the Python between them; the optimizer's step follows. Same loss,
same gradients (to rounding), same noise drawn from the same generator;
the tests hold the two paths to each other and to the NumPy reference.
It is faster than the per-op path, most of all at small batches: the
Python between the kernels goes, and most of the parallel regions
(:mod:`numpyvae.fast.numba_step`); ``benchmarks/bench_peers.py`` measures
by how much (its threading table, the training step beside the per-op
path; ``benchmarks/results/peers.json``). A large batch (256 examples or
more per thread) runs data-parallel instead: each thread takes its block of
examples through the whole step, and the blocks' gradients are summed.
With Adam or AdamW on the model's flat buffer (as the optimizer's
:meth:`~numpyvae.optim.Optimizer.flat_state` says), the optimizer's step
is taken inside the same call, each layer's as soon as nothing reads its
weights any more; any other optimizer steps after it.

Any other model, backend or input takes the per-op path, which also
raises the errors that explain bad input.

This module only turns the model's description into the kernel's terms (a
table of layers and offsets into the flat parameter buffer) and keeps the
work buffers. It asks the model and the optimizer what they are and never
checks their classes: a model describes its layers and distributions by
name, so a subclass (which may change the math) is a name the kernel does
not know, and takes the per-op path.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import numpy as np

from ..model import LossResult
from ..step import ELBO, step
from .threads import step_threads


def train_step(model, optimizer, x, *, labels=None, objective=None, eps=None, beta=1.0,
               rng=None, fused=True) -> LossResult:
    """One optimizer step on batch ``x``: the loss before the step, and the gradients.

    The step of :func:`numpyvae.step.step` (the objective's loss and
    gradients, then ``optimizer.step`` if the loss is finite), for any model
    and objective: parameters are as there; ``optimizer`` was built on
    ``model.params``. When the loss is not finite the parameters are left as
    they were.

    The step runs on the thread count that :func:`numpyvae.fast.threads.step_threads`
    measures to be fastest. The forward and backward pass run as one kernel
    call when the model is one the kernel covers and the objective is the
    ELBO without labels; ``fused=False`` runs the per-op path, one layer op at
    a time (see the module docstring).
    """
    plain_elbo = labels is None and (objective is None or type(objective) is ELBO)
    plan = _plan_for(model, optimizer) if fused and plain_elbo else None
    xc = None if plan is None else plan.batch(model, x)
    if xc is None:
        with step_threads(model):
            return step(model, optimizer, x, labels=labels, objective=objective, eps=eps,
                        beta=beta, rng=rng)
    return plan.step(model, optimizer, xc, eps, beta, rng)


# --------------------------------------------------------------------------
# Describing a model to the kernel
# --------------------------------------------------------------------------

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# What the fused kernel covers, in the names that a model's describe() and an
# optimizer's flat_state() use; anything else takes the per-op path. Classes
# are named here, not imported: a subclass has a name of its own (it may
# change the math), so it is not covered.
FUSED_KINDS = ("vae", "autoencoder")  # the models whose loss the kernel computes
FUSED_POSTERIOR = "DiagonalGaussian"
FUSED_LAYERS = ("Linear",)
FUSED_LIKELIHOODS = {"Bernoulli": "bernoulli", "Gaussian": "gaussian",  # -> the kernel's name
                     "GaussianLearnedVariance": "gaussian"}
FUSED_OPTIMIZERS = ("Adam", "AdamW")  # whose step the kernel takes itself


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
        describe = getattr(model, "describe", None)
        plan = _plan(describe(), backend) if callable(describe) else None
        _PLANS[model] = plan if plan is not None else _Unfusable(backend)
    return None if isinstance(plan, _Unfusable) else plan


@dataclass
class _Unfusable:
    backend: object


def _likelihood(lik, dtype):
    """``(kernel code name, logvar (1,) or (D,), its offset or -1 if fixed)``, or None."""
    name = FUSED_LIKELIHOODS.get(lik["type"])
    if name is None:
        return None
    if lik["type"] == "GaussianLearnedVariance":
        offset = lik["offsets"].get("logvar")
        return None if offset is None else (name, lik["logvar"].reshape(-1), offset)
    if name == "gaussian":
        return name, np.full(1, lik["logvar"], dtype), -1
    return name, np.zeros(1, dtype), -1


def _plan(desc, backend):
    """A :class:`_Plan` from ``desc``, a model's :meth:`~numpyvae.VAE.describe`, or None.

    None when the fused kernel does not cover the model: another kind of
    model, free bits, another posterior or likelihood, a network with any
    layer but ``Linear``, or a parameter outside the flat buffer.
    """
    if desc["kind"] not in FUSED_KINDS or desc["free_bits"] != 0.0:
        return None
    vae = desc["kind"] == "vae"
    if vae and desc["posterior"] != FUSED_POSTERIOR:
        return None
    flat = desc["flat_params"]
    if flat.dtype not in (np.float32, np.float64):
        return None
    encoder, decoder = desc["encoder"], desc["decoder"]
    layers = [*encoder, *decoder]
    if not encoder or not decoder or any(layer["type"] not in FUSED_LAYERS for layer in layers):
        return None
    lik = _likelihood(desc["likelihood"], flat.dtype)
    if lik is None:
        return None
    lik_name, logvar, logvar_off = lik
    rows, alphas = [], []
    for layer in layers:
        W, b = layer["offsets"]["W"], layer["offsets"]["b"]
        if W is None or b is None:
            return None
        n_in, n_out = layer["params"]["W"].shape
        rows.append([W, b, n_in, n_out, backend.activation_code(layer["activation"]), 0])
        alphas.append(layer["alpha"])
    return _Plan(backend=backend, layers=np.array(rows, dtype=np.int64),
                 alphas=np.array(alphas, dtype=flat.dtype), n_enc=len(encoder),
                 vae=vae, likelihood=backend.STEP_LIKELIHOODS[lik_name],
                 logvar=logvar, logvar_off=logvar_off, input_dim=rows[0][2],
                 latent_dim=desc["latent_dim"], dtype=flat.dtype,
                 covers_all=_covers_all(rows, logvar_off, logvar.size, flat.size))


def _covers_all(rows, logvar_off, logvar_size, n_params):
    """Whether the layers' weights and biases (and a learned logvar) tile all ``n_params``."""
    spans = [(w, i * o) for w, _, i, o, _, _ in rows] + [(b, o) for _, b, _, o, _, _ in rows]
    if logvar_off >= 0:
        spans.append((logvar_off, logvar_size))
    covered = np.zeros(n_params, dtype=np.int64)
    for start, size in spans:
        covered[start:start + size] += 1
    return bool(np.all(covered == 1))


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
    dtype: np.dtype
    covers_all: bool  # the layers (and learned variance) are every parameter
    _buffers: dict = field(default_factory=dict)

    def batch(self, model, x):
        """``x`` as the kernel takes it (C-ordered, the model's dtype), or None to fall back."""
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.input_dim:
            return None  # the per-op path raises the error that explains it
        if x.shape[0] == 0 or not (np.issubdtype(x.dtype, np.floating)
                                   or np.issubdtype(x.dtype, np.integer)):
            return None
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _work(self, B):
        """Buffers for a batch of ``B``, made once and kept (for the last few batch sizes)."""
        buffers = self._buffers.get(B)
        if buffers is not None:
            return buffers
        L, dt = self.latent_dim, self.dtype
        layers = self.layers.copy()
        offset = 0
        for row in layers:  # each layer's output: B x O
            row[5] = offset
            offset += B * int(row[3])
        z_off = offset
        offset += B * L if self.vae else 0
        wide = max(int(layers[:, 2].max()), int(layers[:, 3].max()), 2 * L)
        pingpong = np.array([offset, offset + B * wide], dtype=np.int64)
        offset += 2 * B * wide
        buffers = {
            "layers": layers, "z_off": z_off, "pingpong": pingpong,
            "work": np.empty(offset, dt),
            "nll": np.empty(B, dt), "kl": np.zeros(B, dt), "dkl": np.empty(B, dt),
            "sums": np.zeros(2),
            "eps": np.zeros((B, L), dt), "inv_var": np.empty(self.logvar.shape, dt),
        }
        if len(self._buffers) >= 4:  # a few sizes: an epoch's full batches and its last one
            self._buffers.pop(next(iter(self._buffers)))
        self._buffers[B] = buffers
        return buffers

    def _adam(self, model, optimizer):
        """Adam's arguments for a step inside the kernel call, or None to step after it.

        Inside when the optimizer's :meth:`~numpyvae.optim.Optimizer.flat_state`
        says it is Adam or AdamW (:data:`FUSED_OPTIMIZERS`) on the model's flat
        parameter buffer, on this backend, and the kernel's layers (and
        learned variance) are all of its parameters. Same arithmetic as
        ``optimizer.step``, done layer by layer inside the kernel call.
        """
        flat_state = getattr(optimizer, "flat_state", None)
        state = flat_state() if callable(flat_state) else None
        if (state is None or state["type"] not in FUSED_OPTIMIZERS
                or optimizer.backend is not self.backend
                or state["params"] is not model.flat_params or not self.covers_all):
            return None
        b1, b2 = optimizer.betas
        return (state["m"], state["v"], optimizer.lr, b1, b2, optimizer.eps,
                optimizer.weight_decay, optimizer.step_count + 1, optimizer.decoupled)

    def step(self, model, optimizer, x, eps, beta, rng):
        """The fused step on a checked batch ``x``; see :func:`train_step`."""
        B = x.shape[0]
        buf = self._work(B)
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
        adam = self._adam(model, optimizer)
        with step_threads(model):
            stepped = self.backend.mlp_step(
                model.flat_params, model.flat_grads, buf["layers"], self.alphas, self.n_enc,
                self.vae, x, eps, buf["dkl"], self.likelihood, self.logvar, buf["inv_var"],
                self.logvar_off, 1.0 / B, nll, kl, buf["sums"], buf["work"], buf["pingpong"],
                buf["z_off"], adam)
            recon = float(buf["sums"][0]) / B
            kl_value = float(buf["sums"][1]) / B
            loss = recon + beta * kl_value
            if adam is not None:
                optimizer.step_count += stepped
            elif math.isfinite(loss):  # else leave the parameters, as the per-op path does
                optimizer.step(model.grads)
        return LossResult(loss, recon, kl_value, model.grads)
