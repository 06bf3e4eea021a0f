"""The Numba backend: every operation of :mod:`numpyvae.ops`, as fused kernels.

Same names and semantics as the reference (parameter gradients are
accumulated, results are returned the same way); the tests hold the two to
1e-12 (float64) and 1e-5 (float32) on arbitrary shapes and memory layouts.
Every op takes the reference's arguments, and may take more: optional
output arrays (``out=``, ``dx=``, ``z=``/``kl=``, ...) that the op writes
into and returns instead of allocating. The core (layers, distributions,
models) calls the reference's form only; the outputs are there for code of
the fast path, and benchmarks, that keep arrays of their own. This module only checks
and prepares arguments; the arithmetic is in
:mod:`numpyvae.fast.numba_kernels`, one plain Python function per kernel
(with the scalar math they share in :mod:`numpyvae.fast.numba_math` and
BLAS in :mod:`numpyvae.fast.numba_blas`).

What is fused (per training step of the default VAE, in kernel calls):

* ``linear_forward``: the matmul (BLAS ``sgemm``/``dgemm`` called from
  jitted code), then bias and activation in one pass over each thread's
  block of the output while it is in cache;
* ``linear_backward``: ``da = dy * f'(y)`` and ``db += sum da`` in one pass,
  ``dW += x.T @ da`` accumulated by BLAS in place (``beta = 1``, the
  transpose a flag) and ``dx = da @ W.T``;
* ``latent_forward``/``latent_backward``: sampling, KL and both gradients;
* ``bernoulli_nll_and_grad``/``gaussian_nll_and_grad``: loss and gradient;
* ``adam_update``: one pass over the flat buffer of all parameters.

Without output arrays an op allocates its results, once per call, as the
reference does (freed arrays are reused by the allocator: a training step of
the conv VAE runs as fast either way). The temporaries a fused kernel needs
(``da`` in ``linear_backward`` for a non-identity activation,
``exp(-logvar)`` in the Gaussian loss, a convolution's im2col matrices) are
work buffers kept here per thread, by shape and dtype
(:mod:`numpyvae.fast.buffers`).

:func:`set_matmul` chooses how matrices are multiplied: ``"blas"`` (the
default, fastest here), ``"tiled"`` (the hand-written cache-blocked kernel)
or ``"loops"`` (the readable one); ``benchmarks/`` compares them.

Threads: every kernel runs on Numba's threads (``numba.set_num_threads``);
BLAS runs single-threaded inside them (see "BLAS, and threads" below;
:data:`BLAS` says which BLAS library was found).

Ops that are not on the training path and would gain nothing from a kernel
are the reference's own functions, imported by name below.
"""

from __future__ import annotations

import os

from ..backend import usable_cpus
from .tbb import load_tbb

# Numba starts one thread per CPU of the machine unless told: tell it how many
# this process may use (affinity, cgroup quota) before it is imported. And its
# threading layer, the first of these that loads:
#
# * TBB (the ``tbb`` package, a dependency where its wheels exist): its idle
#   threads sleep, it survives ``fork()``, and the per-op step is as fast on it
#   as on OpenMP on an idle machine and several times faster with a competing
#   process on the machine (two threads);
# * OpenMP: as fast when idle, but GNU OpenMP's threads spin while they wait,
#   which on a busy machine takes the time slice the working thread needs, and
#   a child process forked after a parallel kernel ran cannot run one;
# * workqueue: always loads, but launches each parallel kernel slowly (about
#   half the speed, idle).
#
# Measured by benchmarks/bench_peers.py, its threading table (each layer, idle
# and with one competing process). Environment variables that the user
# set win. How many of the threads a training step uses is chosen by timing
# (numpyvae.fast.threads).
THREADING_LAYER_PRIORITY = ("tbb", "omp", "workqueue")
os.environ.setdefault("NUMBA_NUM_THREADS", str(usable_cpus()))
_layer_chosen_by_user = ("NUMBA_THREADING_LAYER" in os.environ
                         or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ)
os.environ.setdefault("NUMBA_THREADING_LAYER_PRIORITY", " ".join(THREADING_LAYER_PRIORITY))
load_tbb()  # pip's libtbb is on no loader path: without this, Numba silently runs OpenMP

import numba  # noqa: E402
import numpy as np  # noqa: E402

from .. import ops as reference  # noqa: E402
from ..ops import gaussian_nll_backward, sum_of_squares  # noqa: E402 (not on the hot path)
from . import numba_blas as NB  # noqa: E402
from . import numba_kernels as K  # noqa: E402
from . import numba_step as S  # noqa: E402
from .buffers import ThreadLocalBuffers, out_or_empty  # noqa: E402
from .whole_products import step_on_one_thread  # noqa: E402

if numba.get_num_threads() > usable_cpus():  # Numba was imported (and sized) before us
    numba.set_num_threads(usable_cpus())
if not _layer_chosen_by_user:  # Numba was imported before us: read when the first kernel runs
    numba.config.THREADING_LAYER_PRIORITY = list(THREADING_LAYER_PRIORITY)

NAME = "numba"
ACTIVATIONS = reference.ACTIVATIONS

_ACTIVATION_CODES = {
    "identity": K.IDENTITY, "relu": K.RELU, "leaky_relu": K.LEAKY_RELU,
    "tanh": K.TANH, "sigmoid": K.SIGMOID, "softplus": K.SOFTPLUS,
}
assert tuple(_ACTIVATION_CODES) == ACTIVATIONS

#: The matmul kernels, by name (see :func:`set_matmul`).
MATMUL_METHODS = ("blas", "tiled", "loops")

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_matmul = "blas"


def set_matmul(method: str) -> str:
    """Choose how every op multiplies matrices: ``"blas"``, ``"tiled"`` or ``"loops"``.

    Returns the previous choice. ``"blas"`` is the default and the fastest;
    the other two are the hand-written kernels, kept for teaching and for
    the benchmarks.
    """
    global _matmul
    if method not in MATMUL_METHODS:
        raise ValueError(f"unknown matmul {method!r}; expected one of {MATMUL_METHODS}")
    old, _matmul = _matmul, method
    return old


def get_matmul() -> str:
    """The current matmul method (see :func:`set_matmul`)."""
    return _matmul


_blas_layout = getattr(NB.blas_layout, "py_func", NB.blas_layout)  # plain Python: no dispatch


def _blas_takes(a):
    """Whether BLAS can read ``a`` in place (any non-empty C- or Fortran-ordered array can)."""
    flags = a.flags
    if flags.c_contiguous or flags.f_contiguous:
        return a.size > 0
    return _blas_layout(a)[0] != 0


def _use_blas(*arrays):
    """Whether BLAS is chosen and can take every array as it lies in memory."""
    return _matmul == "blas" and all(_blas_takes(a) for a in arrays)


def _hand_matmul(alpha, a, b, beta, c):
    """``c = alpha a b + beta c`` with the hand-written kernel chosen (the tiled one for "blas")."""
    kernel = K.matmul_loops if _matmul == "loops" else K.matmul_tiled
    kernel(alpha, a, b, beta, c)


# --------------------------------------------------------------------------
# BLAS, and threads: one pool for everything
# --------------------------------------------------------------------------
#
# The kernels call ``sgemm``/``dgemm`` by address: NumPy's OpenBLAS, else
# SciPy's (:mod:`numpyvae.fast.numba_blas` finds them).
#
# OpenBLAS keeps its own threads, which spin for a while after each call;
# Numba's threads do the same after each parallel loop. With both pools
# active, two cores carry four busy threads and every hand-over waits for a
# time slice (steps ran dozens of times slower on a loaded machine). So the kernels cut
# each matrix product into one block per Numba thread and call BLAS
# single-threaded on each block: OpenBLAS is switched to one thread for the
# duration of each call into a kernel that uses it, and back after. Where
# that switch cannot be found (another BLAS), BLAS keeps its threads and the
# kernels run as one task.


_GEMM, _BLAS_THREADS = NB.GEMM, NB.THREAD_SWITCH
#: Which BLAS library the kernels call (a description).
BLAS = NB.BLAS
#: Whether the one-call step may take its forward pass with each thread on its own
#: block of examples (:data:`numba_step.FORWARD_ROWS`): with MKL it measured faster
#: than sharing each product between the threads, with OpenBLAS no faster or slower
#: (``benchmarks/bench_forward_rows.py``, on an Intel CPU; the other vendors' CPUs
#: run OpenBLAS, see :mod:`numpyvae.fast.numba_blas`).
FORWARD_BY_ROWS = BLAS.startswith("Intel MKL")


def _tasks():
    """How many blocks a kernel cuts its work into: one per thread of Numba's pool.

    Not the threads running now (:class:`threads` may run fewer, and a
    training step is timed on one and on all): the blocks are the same
    whatever the thread count, so every BLAS call and every sum is the same
    and the results do not change by a bit (``tests/test_threads.py``).
    Fewer threads take several blocks each; the one-call step on one thread
    runs its products whole instead, where a check of its first such step
    found the same bits (:mod:`numpyvae.fast.whole_products`).
    """
    return numba.config.NUMBA_NUM_THREADS


def _with_blas(kernel, *args, tasks=None):
    """Call a kernel that uses BLAS, BLAS single-threaded, with ``tasks`` parallel tasks.

    ``tasks`` defaults to :func:`_tasks`; without a way to switch BLAS's own
    threads off, the kernel runs as one task. Returns what the kernel returns.
    """
    if _BLAS_THREADS is None:
        return kernel(*args, 1)
    get, set_ = _BLAS_THREADS
    n = get()
    set_(1)
    try:
        return kernel(*args, _tasks() if tasks is None else tasks)
    finally:
        set_(n)


# --------------------------------------------------------------------------
# Argument helpers
# --------------------------------------------------------------------------

# Work buffers (numpyvae.fast.buffers): per thread, reused while shape and
# dtype match; ``out=None`` allocates, as the reference does.
_WORK = ThreadLocalBuffers()
_work = _WORK.get
_empty = out_or_empty


def _given(*outs):
    """The output arrays the caller passed (those that are not None)."""
    return [a for a in outs if a is not None]


def _written(out, result):
    """A reference op's ``result``, or ``out`` holding it when the caller passed one."""
    if out is None:
        return result
    out[...] = result
    return out


def _code(activation):
    try:
        return _ACTIVATION_CODES[activation]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {ACTIVATIONS}"
        ) from None


def _same_float(*arrays):
    """True when every array is float32, or every one float64 (what the kernels take)."""
    dtype = arrays[0].dtype
    return dtype in _FLOATS and all(a.dtype == dtype for a in arrays)


# --------------------------------------------------------------------------
# Activations and the linear layer
# --------------------------------------------------------------------------


def activation_forward(x, activation, alpha=0.01, out=None):
    """Elementwise activation; see :func:`numpyvae.ops.activation_forward`."""
    code = _code(activation)
    if x.ndim != 2 or not _same_float(x, *_given(out)):
        return _written(out, reference.activation_forward(x, activation, alpha))
    out = _empty(out, x.shape, x.dtype)
    K.activation_forward(x, code, alpha, out)
    return out


def activation_backward(dy, y, activation, alpha=0.01, dx=None):
    """``dx = dy * f'``; see :func:`numpyvae.ops.activation_backward`."""
    code = _code(activation)
    if y.ndim != 2 or not _same_float(dy, y, *_given(dx)):
        return _written(dx, reference.activation_backward(dy, y, activation, alpha))
    dx = _empty(dx, y.shape, y.dtype)
    K.activation_backward(dy, y, code, alpha, dx)
    return dx


def linear_forward(x, W, b, activation="identity", alpha=0.01, out=None):
    """``y = f(x @ W + b)``, fused; see :func:`numpyvae.ops.linear_forward`."""
    code = _code(activation)
    if not _same_float(x, W, b, *_given(out)) or x.ndim != 2 or W.ndim != 2:
        return _written(out, reference.linear_forward(x, W, b, activation, alpha))
    out = _empty(out, (x.shape[0], W.shape[1]), W.dtype)
    if _use_blas(x, W, out):
        _with_blas(K.linear_forward, x, W, b, code, alpha, out, _GEMM[W.dtype])
    else:
        T = W.dtype.type
        _hand_matmul(T(1), x, W, T(0), out)
        K.bias_activation(out, b, code, alpha, _tasks())
    return out


def linear_backward(dy, x, W, y, dW, db, activation="identity", alpha=0.01, need_dx=True,
                    dx=None):
    """Backward of :func:`linear_forward`, fused; see :func:`reference.linear_backward`."""
    code = _code(activation)
    if not _same_float(dy, x, W, y, dW, db) or (dx is not None and dx.dtype != W.dtype):
        result = reference.linear_backward(dy, x, W, y, dW, db, activation, alpha,
                                           need_dx=need_dx)
        return _written(dx, result) if need_dx else None
    da = dy if code == K.IDENTITY else _work("da", dy.shape, dy.dtype)
    dx = _empty(dx, x.shape, W.dtype) if need_dx else da  # da stands in when dx is unused
    if _use_blas(dy, x, W, dW, dx):
        _with_blas(K.linear_backward, dy, x, W, y, dW, db, code, alpha, da, dx, need_dx,
                   _GEMM[W.dtype])
    else:
        T = W.dtype.type
        K.bias_gradient(dy, y, code, alpha, da, db, _tasks())
        _hand_matmul(T(1), x.T, da, T(1), dW)
        if need_dx:
            _hand_matmul(T(1), da, W.T, T(0), dx)
    return dx if need_dx else None


def matmul(a, b, out=None):
    """``a @ b`` for 2-D arrays; see :func:`numpyvae.ops.matmul`."""
    if not _same_float(a, b, *_given(out)) or a.ndim != 2 or b.ndim != 2:
        return _written(out, reference.matmul(a, b))
    out = _empty(out, (a.shape[0], b.shape[1]), a.dtype)
    T = out.dtype.type
    if _use_blas(a, b, out):
        _with_blas(K.gemm_parallel, T(1), a, b, T(0), out, _GEMM[out.dtype])
    else:
        _hand_matmul(T(1), a, b, T(0), out)
    return out


# --------------------------------------------------------------------------
# The Gaussian latent layer
# --------------------------------------------------------------------------


def reparameterize(mu, logvar, eps, out=None):
    """``z = mu + exp(logvar / 2) * eps``; see :func:`numpyvae.ops.reparameterize`."""
    if mu.ndim != 2 or not _same_float(mu, logvar, eps, *_given(out)):
        return _written(out, reference.reparameterize(mu, logvar, eps))
    out = _empty(out, mu.shape, mu.dtype)
    K.reparameterize(mu, logvar, eps, out)
    return out


def reparameterize_backward(dz, logvar, eps, dmu=None, dlogvar=None):
    """See :func:`numpyvae.ops.reparameterize_backward`."""
    if dz.ndim != 2 or not _same_float(dz, logvar, eps, *_given(dmu, dlogvar)):
        ref_dmu, ref_dlogvar = reference.reparameterize_backward(dz, logvar, eps)
        return _written(dmu, ref_dmu), _written(dlogvar, ref_dlogvar)
    dmu = _empty(dmu, dz.shape, dz.dtype)
    dlogvar = _empty(dlogvar, dz.shape, dz.dtype)
    K.reparameterize_backward(dz, logvar, eps, dmu, dlogvar)
    return dmu, dlogvar


def gaussian_kl(mu, logvar, out=None):
    """Per-example KL to N(0, I); see :func:`numpyvae.ops.gaussian_kl`."""
    if mu.ndim != 2 or not _same_float(mu, logvar, *_given(out)):
        return _written(out, reference.gaussian_kl(mu, logvar))
    out = _empty(out, mu.shape[:1], mu.dtype)
    K.gaussian_kl(mu, logvar, out)
    return out


def gaussian_kl_backward(dkl, mu, logvar, dmu=None, dlogvar=None):
    """See :func:`numpyvae.ops.gaussian_kl_backward`."""
    if mu.ndim != 2 or not _same_float(dkl, mu, logvar, *_given(dmu, dlogvar)):
        ref_dmu, ref_dlogvar = reference.gaussian_kl_backward(dkl, mu, logvar)
        return _written(dmu, ref_dmu), _written(dlogvar, ref_dlogvar)
    dmu = _empty(dmu, mu.shape, mu.dtype)
    dlogvar = _empty(dlogvar, mu.shape, mu.dtype)
    K.gaussian_kl_backward(dkl, mu, logvar, dmu, dlogvar)
    return dmu, dlogvar


def latent_forward(h, eps, z=None, kl=None):
    """Split, sample and KL in one kernel; see :func:`numpyvae.ops.latent_forward`."""
    B, L = eps.shape
    if not _same_float(h, eps, *_given(z, kl)):
        ref_z, ref_kl = reference.latent_forward(h, eps)
        return _written(z, ref_z), _written(kl, ref_kl)
    z = _empty(z, (B, L), h.dtype)
    kl = _empty(kl, (B,), h.dtype)
    K.latent_forward(h, eps, z, kl)
    return z, kl


def latent_backward(dz, h, eps, dkl, free_bits=0.0, dh=None):
    """Both gradient paths in one kernel; see :func:`numpyvae.ops.latent_backward`."""
    if not _same_float(dz, h, eps, dkl, *_given(dh)):
        return _written(dh, reference.latent_backward(dz, h, eps, dkl, free_bits))
    dh = _empty(dh, h.shape, h.dtype)
    K.latent_backward(dz, h, eps, dkl, free_bits, dh)
    return dh


def kl_per_dimension(mu, logvar):
    """Batch-mean KL of each latent dimension, shape (L,)."""
    out = np.empty(mu.shape[1:], dtype=mu.dtype)
    if mu.ndim != 2 or not _same_float(mu, logvar):
        return reference.kl_per_dimension(mu, logvar)
    K.kl_per_dimension(mu, logvar, out)
    return out


# --------------------------------------------------------------------------
# Reconstruction terms
# --------------------------------------------------------------------------


def _like(x, a):
    """``x`` in ``a``'s dtype (a copy only if it differs, e.g. integer pixel data)."""
    return x if x.dtype == a.dtype else x.astype(a.dtype)


def bernoulli_nll(logits, x, out=None):
    """Binary cross-entropy with logits per example; see :func:`reference.bernoulli_nll`."""
    if logits.ndim != 2 or not _same_float(logits, *_given(out)):
        return _written(out, reference.bernoulli_nll(logits, x))
    out = _empty(out, logits.shape[:1], logits.dtype)
    K.bernoulli_nll(logits, _like(x, logits), out)
    return out


def bernoulli_nll_backward(dnll, logits, x, dlogits=None):
    """``dnll * (sigmoid(logits) - x)``; see :func:`reference.bernoulli_nll_backward`."""
    if logits.ndim != 2 or not _same_float(logits, dnll, *_given(dlogits)):
        return _written(dlogits, reference.bernoulli_nll_backward(dnll, logits, x))
    dlogits = _empty(dlogits, logits.shape, logits.dtype)
    K.bernoulli_nll_backward(dnll, logits, _like(x, logits), dlogits)
    return dlogits


def bernoulli_nll_and_grad(logits, x, scale, nll=None, dlogits=None):
    """NLL and ``scale`` times its gradient in one pass (reference: ``bernoulli_nll_and_grad``)."""
    if logits.ndim != 2 or not _same_float(logits, *_given(nll, dlogits)):
        ref_nll, ref_dlogits = reference.bernoulli_nll_and_grad(logits, x, scale)
        return _written(nll, ref_nll), _written(dlogits, ref_dlogits)
    nll = _empty(nll, logits.shape[:1], logits.dtype)
    dlogits = _empty(dlogits, logits.shape, logits.dtype)
    if np.may_share_memory(logits, dlogits):  # the kernel writes dlogits before it is done
        logits = logits.copy()                # reading logits
    K.bernoulli_nll_and_grad(logits, _like(x, logits), scale, nll, dlogits)
    return nll, dlogits


def _logvar_vector(logvar, mean):
    """``logvar`` as a 1-D array the kernels index: (D,) as is, a scalar as a (1,) work buffer."""
    if np.ndim(logvar) == 0:
        vec = _work("logvar", (1,), mean.dtype)
        vec[0] = logvar
        return vec
    return _like(np.asarray(logvar), mean).reshape(-1)


def gaussian_nll(mean, logvar, x, out=None):
    """Gaussian NLL per example; see :func:`numpyvae.ops.gaussian_nll`."""
    if (mean.ndim != 2 or not _same_float(mean, *_given(out))
            or np.size(logvar) not in (1, mean.shape[1]) or np.ndim(logvar) > 1):
        return _written(out, reference.gaussian_nll(mean, logvar, x))
    out = _empty(out, mean.shape[:1], mean.dtype)
    K.gaussian_nll(mean, _logvar_vector(logvar, mean), _like(x, mean), out)
    return out


def gaussian_nll_and_grad(mean, logvar, x, scale, dlogvar, nll=None, dmean=None):
    """NLL and ``scale`` times its gradients, fused (reference: ``gaussian_nll_and_grad``)."""
    D = mean.shape[1] if mean.ndim == 2 else -1
    learned = dlogvar is not None
    if (mean.ndim != 2 or not _same_float(mean, *_given(nll, dmean)) or np.ndim(logvar) > 1
            or np.size(logvar) not in (1, D)
            or (learned and (np.shape(logvar) != (D,) or dlogvar.shape != (D,)
                             or dlogvar.dtype != mean.dtype))):
        ref_nll, ref_dmean = reference.gaussian_nll_and_grad(mean, logvar, x, scale, dlogvar)
        return _written(nll, ref_nll), _written(dmean, ref_dmean)
    nll = _empty(nll, mean.shape[:1], mean.dtype)
    dmean = _empty(dmean, mean.shape, mean.dtype)
    lv = _logvar_vector(logvar, mean)
    inv_var = _work("inv_var", lv.shape, mean.dtype)
    K.gaussian_nll_and_grad(mean, lv, _like(x, mean), scale, inv_var,
                            dlogvar if learned else inv_var, learned, nll, dmean)
    return nll, dmean


# --------------------------------------------------------------------------
# Optimizer updates
# --------------------------------------------------------------------------


def _flat_views(*arrays):
    """1-D views of same-shaped, C-contiguous, same-float arrays, or None if impossible."""
    if not _same_float(*arrays) or any(a.shape != arrays[0].shape for a in arrays):
        return None
    if arrays[0].ndim == 1:
        return arrays
    if not all(a.flags.c_contiguous for a in arrays):
        return None
    return tuple(a.reshape(-1) for a in arrays)


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step in place, fused; see :func:`numpyvae.ops.sgd_update`.

    Unlike the reference, the velocity is set to zero where it falls below
    the normal range of its dtype (see :func:`adam_update`).
    """
    flat = _flat_views(param, grad, velocity)
    if flat is None:
        return reference.sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay)
    K.sgd_update(*flat, float(lr), float(momentum), bool(nesterov), float(weight_decay))


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """One Adam/AdamW step in place, in one pass; see :func:`numpyvae.ops.adam_update`.

    The same arithmetic in the same order as the reference, one element at a
    time, with one difference that is only about speed: ``m`` and ``v`` are
    set to zero where they fall below the normal range of their dtype
    (``np.finfo(dtype).tiny``, 1.2e-38 in float32). A parameter whose
    gradient stays zero (a pixel blank in every image, a ReLU unit that never
    fires) has its ``m`` shrink by ``beta1`` a step, into subnormal numbers
    after about 800 steps in float32, and x86 CPUs do arithmetic on those
    dozens of times slower (``benchmarks/bench_sustained.py``). Zero is
    within one subnormal of the value, so the flush changes nothing
    measurable: where it acts, the step it removes is at most about
    ``lr * tiny / eps`` (1e-33 with the defaults), far below the rounding of
    a parameter of ordinary size. The reference, which is read rather than
    run for hours, does not flush.

    Parameters that are not one flat buffer (or not C-contiguous) fall back
    to the reference, unflushed.
    """
    flat = _flat_views(param, grad, m, v)
    if flat is None:
        return reference.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay,
                                     step, decoupled)
    # The step-dependent scalars, in float64, as the reference computes them.
    shrink = 1 - lr * weight_decay
    step_size = lr / (1 - beta1**step)
    sqrt_bias2 = float(np.sqrt(1 - beta2**step))
    K.adam_update(*flat, float(beta1), float(beta2), float(eps), float(weight_decay),
                  bool(decoupled), float(shrink), float(step_size), sqrt_bias2)


# --------------------------------------------------------------------------
# The forward and backward pass in one kernel call (used by numpyvae.fast.step)
# --------------------------------------------------------------------------
#
# Not operations of OPS (the reference has no such thing: it is the sum of
# the ops above, which is what the tests hold it to). numpyvae.fast.step
# describes an MLP VAE to these as plain arrays; numba_step has the kernels.

#: Likelihood codes of :func:`mlp_step`.
STEP_LIKELIHOODS = {"bernoulli": S.BERNOULLI, "gaussian": S.GAUSSIAN}
activation_code = _code


def max_threads() -> int:
    """The most threads a kernel can run on: Numba's pool (see :func:`usable_cpus`)."""
    return numba.config.NUMBA_NUM_THREADS


class threads:
    """``with threads(k):`` runs the kernels called inside on ``k`` of Numba's threads."""

    def __init__(self, k: int):
        self.k = max(1, min(int(k), numba.config.NUMBA_NUM_THREADS))

    def __enter__(self):
        self.before = numba.get_num_threads()
        if self.before != self.k:  # setting it takes time: only when it changes
            numba.set_num_threads(self.k)

    def __exit__(self, *exc):
        if self.before != self.k:
            numba.set_num_threads(self.before)


_NO_ADAM = np.zeros(0)


def mlp_step(params, grads, layers, alphas, n_enc, vae, x, eps, dkl, likelihood, logvar,
             inv_var, logvar_off, scale, nll, kl, sums, work, pingpong, z_off, adam=None):
    """Loss terms and gradients of a batch in one call; see :func:`numba_step.mlp_step`.

    Each product is cut into one block per thread of Numba's pool, shared
    out between the threads that :class:`threads` allows; BLAS runs
    single-threaded inside. ``adam``: None, or ``(m, v, lr, beta1, beta2,
    eps, weight_decay, step, decoupled)`` (as :func:`adam_update` takes them)
    for Adam's step inside the same call. Returns whether that step was taken.

    A batch of at least :data:`numba_step.DATA_PARALLEL_ROWS` examples per
    thread of the pool runs data-parallel instead
    (:func:`numba_step.mlp_step_rows`): each thread its block of examples
    through the whole step, the blocks' gradients summed before Adam; with
    MKL (:data:`FORWARD_BY_ROWS`), one of at least
    :data:`numba_step.FORWARD_ROWS` per thread runs its forward pass and
    likelihood that way (:func:`numba_step.forward_region`). On one thread
    the step runs every product whole where that gives the blocked step's
    bits (:func:`~numpyvae.fast.whole_products.step_on_one_thread`).
    """
    if adam is None:
        m = v = params[:0]
        scalars = _NO_ADAM
    else:
        m, v, lr, beta1, beta2, eps_, weight_decay, step, decoupled = adam
        scalars = _work("adam scalars", (8,), np.float64)  # the step-dependent ones in float64,
        scalars[:] = (beta1, beta2, eps_, weight_decay, float(bool(decoupled)),  # as adam_update
                      1 - lr * weight_decay, lr / (1 - beta1**step), np.sqrt(1 - beta2**step))
    spans = _work("adam spans", (2 * layers.shape[0] + 1, 2), np.int64)
    tasks = _tasks() if _BLAS_THREADS is not None else 1
    args = (layers, alphas, n_enc, vae, x, eps, dkl, likelihood, logvar, inv_var, logvar_off,
            float(scale), nll, kl, sums, work, pingpong, z_off, m, v, scalars, spans)
    B = x.shape[0]

    def path(tasks):
        """Which way the step goes with its work in ``tasks`` blocks."""
        if tasks > 1 and B >= S.DATA_PARALLEL_ROWS * tasks:
            return "data-parallel"
        if FORWARD_BY_ROWS and tasks > 1 and B >= S.FORWARD_ROWS * tasks:
            return "forward by rows"
        return "shared products"

    def run(tasks):
        if path(tasks) == "data-parallel":
            partials = _work("partial gradients", ((tasks - 1) * params.shape[0],),
                             params.dtype)
            return bool(_with_blas(S.mlp_step_rows, params, grads, partials, *args,
                                   _GEMM[params.dtype], tasks=tasks))
        return bool(_with_blas(S.mlp_step, params, grads, *args,
                               path(tasks) == "forward by rows", _GEMM[params.dtype],
                               tasks=tasks))

    if tasks > 1 and numba.get_num_threads() == 1:  # whole products, where the bits agree
        shape = (path(tasks), x.shape, params.dtype.str, layers.tobytes(), alphas.tobytes(),
                 n_enc, vae, likelihood, logvar.shape, logvar_off, adam is None)
        outputs = [params, grads, nll, kl, sums] + ([] if adam is None else [m, v])
        return step_on_one_thread(run, outputs, shape, tasks)
    return run(tasks)


__all__ = [
    "NAME", "ACTIVATIONS", "BLAS", "MATMUL_METHODS", "set_matmul", "get_matmul",
    "activation_forward", "activation_backward", "linear_forward", "linear_backward", "matmul",
    "reparameterize", "reparameterize_backward", "gaussian_kl", "gaussian_kl_backward",
    "latent_forward", "latent_backward", "kl_per_dimension",
    "bernoulli_nll", "bernoulli_nll_backward", "gaussian_nll", "gaussian_nll_backward",
    "bernoulli_nll_and_grad", "gaussian_nll_and_grad",
    "sgd_update", "adam_update", "sum_of_squares",
]


# --------------------------------------------------------------------------
# Convolutions (kernels in numba_conv.py)
# --------------------------------------------------------------------------
#
# Each op checks that the arrays are ones the kernels take (one float dtype,
# outputs and weights C-contiguous) and otherwise runs the reference; it
# keeps its temporaries (the per-thread im2col matrices, the per-thread
# weight-gradient parts, da) in work buffers keyed by shape, so a training
# step allocates nothing.

_conv_kernels = None


def _conv():
    """The convolution kernels, imported (and compiled or loaded) on first use."""
    global _conv_kernels
    if _conv_kernels is None:
        from . import numba_conv

        _conv_kernels = numba_conv
    return _conv_kernels


def _conv_work(name, shape, dtype):
    return _work(f"{name}{shape}", shape, dtype)


#: About how many columns (windows, over a group of examples) a convolution's
#: products take at once. Each thread multiplies ``G = GROUP_COLUMNS //
#: windows`` examples side by side (at least one, at most its share of the
#: batch) instead of one at a time. On the conv VAE's middle layer (Conv
#: 32->64, 49 windows, batch 128, two threads) 8 examples a product (392
#: columns) ran forward and backward faster than one, and 16 (784 columns)
#: ran the backward slower than 8 (the layers' kernels are timed by
#: ``benchmarks/bench_conv.py``).
GROUP_COLUMNS = 512


def _group(B, windows, tasks):
    """How many examples one of a convolution's products takes (see :data:`GROUP_COLUMNS`)."""
    return max(1, min(-(-B // tasks), GROUP_COLUMNS // max(windows, 1)))


def _contiguous(*arrays):
    return all(a.flags.c_contiguous for a in arrays)


def conv2d_forward(x, W, b, stride=1, padding=0, activation="identity", alpha=0.01, out=None):
    """Convolution by im2col + BLAS, bias and activation fused; see ``reference.conv2d_forward``."""
    code = _code(activation)
    O, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = reference.pair(stride), reference.pair(padding)
    B = x.shape[0]
    Ho, Wo = reference.conv2d_output_size(x.shape[2:], (kh, kw), (sh, sw), (ph, pw))
    if not (_same_float(x, W, b, *_given(out)) and _contiguous(W, *_given(out))):
        return _written(out, reference.conv2d_forward(x, W, b, stride, padding, activation,
                                                      alpha))
    out = _empty(out, (B, O, Ho, Wo), W.dtype)
    tasks = _tasks()
    wide = _group(B, Ho * Wo, tasks) * Ho * Wo
    cols = _conv_work("conv.cols", (tasks, C * kh * kw, wide), W.dtype)
    wide_out = _conv_work("conv.wide_out", (tasks, O, wide), W.dtype)
    canvas = _conv_work("conv.canvas", (tasks, C, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw),
                        W.dtype)
    offs = _conv_work("conv.offsets", (Ho * Wo,), np.int64)
    _with_blas(_conv().conv2d_forward, x, W.reshape(O, -1), b, kh, kw, sh, sw, ph, pw, Ho, Wo,
               code, alpha, out.reshape(B, O, Ho * Wo), cols, wide_out, canvas, offs,
               _GEMM[W.dtype], tasks=tasks)
    return out


def conv2d_backward(dy, x, W, y, dW, db, stride=1, padding=0, activation="identity",
                    alpha=0.01, need_dx=True, dx=None):
    """Backward of :func:`conv2d_forward`; see ``reference.conv2d_backward``."""
    code = _code(activation)
    O, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = reference.pair(stride), reference.pair(padding)
    B, _, Ho, Wo = y.shape
    if not (_same_float(dy, x, W, y, dW, db) and _contiguous(W, dW)
            and (dx is None or not need_dx or (dx.dtype == W.dtype and dx.flags.c_contiguous))):
        result = reference.conv2d_backward(dy, x, W, y, dW, db, stride, padding, activation,
                                           alpha, need_dx=need_dx)
        return _written(dx, result) if need_dx else None
    if need_dx:
        dx = _empty(dx, x.shape, W.dtype)
    K = _conv()
    da = _conv_da(K, dy, y, code, alpha).reshape(B, O, Ho * Wo)
    K.bias_grad(da, db)
    tasks = _tasks()
    wide = _group(B, Ho * Wo, tasks) * Ho * Wo
    cols = _conv_work("conv.cols", (tasks, C * kh * kw, wide), W.dtype)
    dcols = _conv_work("conv.dcols", (tasks, C * kh * kw, wide), W.dtype)
    wide_da = _conv_work("conv.wide_da", (tasks, O, wide), W.dtype)
    parts = _conv_work("conv.dW", (tasks, O, C * kh * kw), W.dtype)
    padded = (tasks, C, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw)
    canvas = _conv_work("conv.canvas", padded, W.dtype)
    dcanvas = _conv_work("conv.dcanvas", padded, W.dtype)
    offs = _conv_work("conv.offsets", (Ho * Wo,), np.int64)
    _with_blas(K.conv2d_backward, x, W.reshape(O, -1), da, dW.reshape(O, -1), parts, kh, kw,
               sh, sw, ph, pw, Ho, Wo, dx if need_dx else x, need_dx, cols, dcols, wide_da,
               canvas, dcanvas, offs, _GEMM[W.dtype], tasks=tasks)
    return dx if need_dx else None


def _conv_da(K, dy, y, code, alpha):
    """``dy * f'(y)`` as a C-contiguous array: ``dy`` itself for the identity when it is one."""
    if code == K.IDENTITY and dy.flags.c_contiguous:
        return dy
    da = _conv_work("conv.da", y.shape, y.dtype)
    B, O = y.shape[:2]
    K.activation_grad(dy.reshape(B, O, -1), y.reshape(B, O, -1), code, alpha,
                      da.reshape(B, O, -1))
    return da


def conv_transpose2d_forward(x, W, b, stride=1, padding=0, output_padding=0,
                             activation="identity", alpha=0.01, out=None):
    """Transposed convolution by BLAS + col2im, fused; see ``reference.conv_transpose2d_*``."""
    code = _code(activation)
    C, O, kh, kw = W.shape
    (sh, sw), (ph, pw) = reference.pair(stride), reference.pair(padding)
    B, _, H, Wd = x.shape
    Ho, Wo = reference.conv_transpose2d_output_size((H, Wd), (kh, kw), (sh, sw), (ph, pw),
                                                    output_padding)
    if not (_same_float(x, W, b, *_given(out)) and _contiguous(W, *_given(out))):
        return _written(out, reference.conv_transpose2d_forward(
            x, W, b, stride, padding, output_padding, activation, alpha))
    out = _empty(out, (B, O, Ho, Wo), W.dtype)
    x = np.ascontiguousarray(x)  # BLAS reads each example as a (C, H W) matrix
    tasks = _tasks()
    wide = _group(B, H * Wd, tasks) * H * Wd
    cols = _conv_work("conv.cols", (tasks, O * kh * kw, wide), W.dtype)
    wide_x = _conv_work("conv.wide_x", (tasks, C, wide), W.dtype)
    canvas = _conv_work("conv.canvas", _transpose_canvas(tasks, O, (H, Wd), (Ho, Wo), (kh, kw),
                                                         (sh, sw), (ph, pw)), W.dtype)
    offs = _conv_work("conv.offsets", (H * Wd,), np.int64)
    _with_blas(_conv().conv_transpose2d_forward, x.reshape(B, C, H * Wd), W.reshape(C, -1), b,
               kh, kw, sh, sw, ph, pw, H, Wd, code, alpha, out, cols, wide_x, canvas, offs,
               _GEMM[W.dtype], tasks=tasks)
    return out


def _transpose_canvas(tasks, O, size, out_size, kernel, stride, padding):
    """The canvas shape of a transposed convolution: where every window lands, and the output.

    Window ``i`` of kernel row ``p`` lands on canvas row ``i sh + p``, so the
    canvas needs ``(H - 1) sh + kh`` rows; the output is its rows ``ph`` to
    ``ph + Ho`` (more than the windows reach when ``output_padding`` adds
    some). Likewise for columns.
    """
    (H, W), (Ho, Wo), (kh, kw), (sh, sw), (ph, pw) = size, out_size, kernel, stride, padding
    return (tasks, O, max((H - 1) * sh + kh, Ho + ph), max((W - 1) * sw + kw, Wo + pw))


def conv_transpose2d_backward(dy, x, W, y, dW, db, stride=1, padding=0,
                              activation="identity", alpha=0.01, need_dx=True, dx=None):
    """Backward of :func:`conv_transpose2d_forward`; see ``reference.conv_transpose2d_backward``."""
    code = _code(activation)
    C, O, kh, kw = W.shape
    (sh, sw), (ph, pw) = reference.pair(stride), reference.pair(padding)
    B, _, H, Wd = x.shape
    if not (_same_float(dy, x, W, y, dW, db) and _contiguous(W, dW)
            and (dx is None or not need_dx or (dx.dtype == W.dtype and dx.flags.c_contiguous))):
        result = reference.conv_transpose2d_backward(dy, x, W, y, dW, db, stride, padding,
                                                     activation, alpha, need_dx=need_dx)
        return _written(dx, result) if need_dx else None
    if need_dx:
        dx = _empty(dx, x.shape, W.dtype)
    K = _conv()
    da = _conv_da(K, dy, y, code, alpha)
    K.bias_grad(da.reshape(B, O, -1), db)
    x = np.ascontiguousarray(x)
    tasks = _tasks()
    wide = _group(B, H * Wd, tasks) * H * Wd
    cols = _conv_work("conv.cols", (tasks, O * kh * kw, wide), W.dtype)
    wide_x = _conv_work("conv.wide_x", (tasks, C, wide), W.dtype)
    wide_dx = _conv_work("conv.wide_dx", (tasks, C, wide), W.dtype)
    parts = _conv_work("conv.dW", (tasks, C, O * kh * kw), W.dtype)
    canvas = _conv_work("conv.canvas", _transpose_canvas(tasks, O, (H, Wd), y.shape[2:], (kh, kw),
                                                         (sh, sw), (ph, pw)), W.dtype)
    offs = _conv_work("conv.offsets", (H * Wd,), np.int64)
    dx_arg = dx.reshape(B, C, H * Wd) if need_dx else x.reshape(B, C, H * Wd)
    _with_blas(K.conv_transpose2d_backward, x.reshape(B, C, H * Wd), W.reshape(C, -1), da,
               dW.reshape(C, -1), parts, kh, kw, sh, sw, ph, pw, H, Wd, dx_arg, need_dx, cols,
               wide_x, wide_dx, canvas, offs, _GEMM[W.dtype], tasks=tasks)
    return dx if need_dx else None


#: This backend's training step (:func:`numpyvae.step.step_of` finds it):
#: :func:`numpyvae.fast.step.train_step`, the one-call step on the fastest thread count.
from .step import train_step  # noqa: E402, F401  (offered to the training loop)
