"""The layer kernels behind :mod:`numpyvae.fast.numba_ops`, as plain Python functions.

Every kernel here is an ordinary Python function over NumPy arrays, written
with explicit loops, jitted in one place at the bottom of this file
(:func:`numpyvae.fast.numba_jit.jit_kernels`), so that with
``NUMBA_DISABLE_JIT=1`` the very same code runs as plain Python and can be
stepped through in a debugger (slowly). The derivations are not repeated
here: each kernel names the function of :mod:`numpyvae.ops` it
computes, and that docstring derives it.

The kernels are split by job over four modules:

* this one: the matmul kernels, the linear layer, activations, the latent
  layer, the likelihoods and the optimizers;
* :mod:`numpyvae.fast.numba_math`: the scalar math they share (exp,
  log1p, the stable sigmoid, the KL term, log 2 pi), written once;
* :mod:`numpyvae.fast.numba_blas`: BLAS called from jitted code, and the
  LLVM that takes;
* :mod:`numpyvae.fast.numba_jit`: how every kernel is compiled.

Conventions
-----------
* Every kernel opens with a shape comment. ``B`` batch, ``I``/``O`` a
  layer's input/output features, ``L`` latent, ``D`` data dimension.
* Kernels write into the arrays they are given and allocate nothing.
* Dtype-generic: ``T = x.dtype.type`` and every constant is ``T(...)``, so a
  float32 kernel never meets a float64 number (which would upcast it).
* Arrays may have any strides (sliced or transposed views), except in
  :func:`~numpyvae.fast.numba_blas.gemm_blas` and the kernels that use it,
  which need what BLAS takes (:func:`~numpyvae.fast.numba_blas.blas_layout`);
  the backend checks before it calls them.
* No ``fastmath``, except the two flags of
  :func:`~numpyvae.fast.numba_math.reassoc_add` (``reassoc`` and ``nsz``),
  used for row sums, which let the compiler keep several partial sums in a
  vector register (as NumPy's pairwise sum does) instead of one sequential
  chain; and ``contract`` (fused multiply-adds) in the polynomials of
  :mod:`~numpyvae.fast.numba_math` (``exp_neg``, ``exp_any``, ``expm1_given_exp``,
  ``log1p_small``).

The matmul
----------
``c = alpha * a @ b + beta * c`` is computed in one of three ways, all
benchmarked in ``benchmarks/bench_kernels.py``:

* :func:`~numpyvae.fast.numba_blas.gemm_blas` (the default) calls
  OpenBLAS's ``sgemm``/``dgemm`` straight from jitted code, with ``alpha``,
  ``beta`` and transpose flags, so that ``dW += x.T @ da`` accumulates in
  place with no temporary and no copy of the transpose. The fused
  linear-layer kernels use it, one block of the output per thread
  (:func:`gemm_parallel`).
* :func:`matmul_tiled`, a cache-blocked, parallel kernel;
* :func:`matmul_loops`, the readable triple loop, for teaching.

The last two take any strides; BLAS needs one unit stride per matrix, and
the backend falls back to the tiled kernel when a view has none. BLAS
measured faster than the tiled kernel here (``benchmarks/bench_kernels.py``,
the matmul three ways), so it is the one the backend uses.

Threads
-------
Kernels that call BLAS take ``tasks``, the number of Numba threads: each
thread takes one block of the output (:func:`block`) and multiplies it with
a *single-threaded* BLAS call (in the forward pass it then adds the bias
and applies the activation to the same block, while it is in its cache).
The backend runs BLAS single-threaded for the duration of these
calls, so one pool of threads does all the work; see
:mod:`numpyvae.fast.numba_ops` for why.

What does not live here: argument checking, buffer management and choosing
between kernels (:mod:`numpyvae.fast.numba_ops`).
"""

from __future__ import annotations

import math

from numba import prange

from .numba_blas import blas_layout, gemm_blas  # noqa: F401 (re-exported for the backend)
from .numba_jit import jit_kernels
from .numba_math import (  # noqa: F401 (the activation codes are re-exported)
    IDENTITY,
    LEAKY_RELU,
    RELU,
    SIGMOID,
    SOFTPLUS,
    TANH,
    activate,
    activation_slope,
    bernoulli_nll_term,
    exp_any,
    exp_neg,
    flush_subnormal,
    gaussian_nll_term,
    kl_grad_logvar,
    kl_term,
    log1p_small,
    reassoc_add,
    sigmoid_given_exp,
)

#: Rows of ``c`` per parallel task and inner-dimension block of the tiled matmul.
TILE_ROWS = 8
TILE_K = 128
#: Columns per parallel task in the Gaussian likelihood's batch sum.
COLUMN_BLOCK = 64
#: Elements per parallel task of Adam's step (a multiple of 16: 64-byte lines of float32).
ADAM_CHUNK = 16384


# --------------------------------------------------------------------------
# Matrix multiplication: c = alpha * a @ b + beta * c
# --------------------------------------------------------------------------


def matmul_loops(alpha, a, b, beta, c):
    """The readable matmul. a: (M, K), b: (K, N), c: (M, N); ``c = alpha a b + beta c``.

    The loops run in the order i, k, j rather than the textbook i, j, k: the
    innermost loop then walks along a row of ``b`` and a row of ``c``, both
    contiguous, and is a vectorisable ``c[i, :] += a[i, k] * b[k, :]``. Rows
    of ``c`` are shared out between threads.
    """
    M, K = a.shape
    N = b.shape[1]
    T = c.dtype.type
    for i in prange(M):
        for j in range(N):
            c[i, j] = T(0) if beta == T(0) else beta * c[i, j]
        for k in range(K):
            aik = alpha * a[i, k]
            for j in range(N):
                c[i, j] += aik * b[k, j]


def matmul_tiled(alpha, a, b, beta, c):
    """The cache-blocked matmul. a: (M, K), b: (K, N), c: (M, N); ``c = alpha a b + beta c``.

    :func:`matmul_loops` with two levels of blocking: each thread takes
    ``TILE_ROWS`` rows of ``c`` (a few KiB, which stay in L1), and walks
    ``k`` in blocks of ``TILE_K`` so that the block of ``b`` it streams
    (``TILE_K x N``) stays in L2 while every one of its rows uses it.
    """
    M, K = a.shape
    N = b.shape[1]
    T = c.dtype.type
    for tile in prange((M + TILE_ROWS - 1) // TILE_ROWS):
        i0 = tile * TILE_ROWS
        i1 = min(i0 + TILE_ROWS, M)
        for i in range(i0, i1):
            for j in range(N):
                c[i, j] = T(0) if beta == T(0) else beta * c[i, j]
        for k0 in range(0, K, TILE_K):
            k1 = min(k0 + TILE_K, K)
            for i in range(i0, i1):
                for k in range(k0, k1):
                    aik = alpha * a[i, k]
                    for j in range(N):
                        c[i, j] += aik * b[k, j]


# --------------------------------------------------------------------------
# Activations and the linear layer
# --------------------------------------------------------------------------


def activation_forward(x, act, alpha, out):
    """x, out: (B, O); ``out = f(x)`` (reference: ``activation_forward``)."""
    B, O = x.shape
    T = out.dtype.type
    alpha = T(alpha)
    for n in prange(B):
        for j in range(O):
            out[n, j] = activate(x[n, j], act, alpha, T)


def activation_backward(dy, y, act, alpha, dx):
    """dy, y, dx: (B, O); ``dx = dy * f'`` (reference: ``activation_backward``)."""
    B, O = y.shape
    T = dx.dtype.type
    alpha = T(alpha)
    for n in prange(B):
        for j in range(O):
            dx[n, j] = dy[n, j] * activation_slope(y[n, j], act, alpha, T)


def block(n, tasks, t):
    """The ``t``-th of ``tasks`` blocks of ``range(n)``: ``(start, stop)``, possibly empty.

    Blocks start at multiples of 16 elements (64 bytes of float32), so each
    thread's part of a row begins on a cache line.
    """
    size = (n + tasks - 1) // tasks
    size = (size + 15) // 16 * 16
    start = min(t * size, n)
    return start, min(start + size, n)


def bias_activation_block(out, b, act, alpha, j0, j1):
    """Columns ``j0:j1`` of out: (B, O), b: (O,); ``out = f(out + b)`` in place.

    The identity and ReLU, the activations of the default model, get loops
    of their own: a loop that decides the activation for every element is
    not vectorised, and runs several times slower. (So are loops whose index
    starts at a run-time offset, hence the slices, indexed from 0.)
    """
    T = out.dtype.type
    alpha = T(alpha)
    bias = b[j0:j1]
    for n in range(out.shape[0]):
        row = out[n, j0:j1]
        if act == IDENTITY:
            for j in range(row.shape[0]):
                row[j] += bias[j]
        elif act == RELU:
            for j in range(row.shape[0]):
                row[j] = max(row[j] + bias[j], T(0))
        else:
            for j in range(row.shape[0]):
                row[j] = activate(row[j] + bias[j], act, alpha, T)


def bias_gradient_block(da, y, act, alpha, db, j0, j1):
    """Columns ``j0:j1`` of da, y: (B, O), db: (O,); ``da = dy f'(y)`` in place, ``db += sum da``.

    ``da`` holds ``dy`` when called and ``da`` when done: one array, read
    and written. Handed two views of one array (``dy`` and ``da``), the
    compiler's check that two arrays do not overlap fails at run time and
    the loop runs its one-element-at-a-time version: four times slower at
    the default model's shapes. For the identity ``da`` is ``dy`` and only
    its sum is taken. ReLU has a loop of its own, as in
    :func:`bias_activation_block`. Each row is two loops, ``da`` first and
    then its sum into ``db``: one loop doing both measured slower at batch
    512.
    """
    T = db.dtype.type
    alpha = T(alpha)
    grad = db[j0:j1]
    for n in range(da.shape[0]):
        row, y_row = da[n, j0:j1], y[n, j0:j1]
        if act == RELU:
            for j in range(grad.shape[0]):
                row[j] = row[j] * (T(1) if y_row[j] > T(0) else T(0))
        elif act != IDENTITY:
            for j in range(grad.shape[0]):
                row[j] = row[j] * activation_slope(y_row[j], act, alpha, T)
        for j in range(grad.shape[0]):
            grad[j] += row[j]


def bias_activation(out, b, act, alpha, tasks):
    """out: (B, O), b: (O,); ``out = f(out + b)`` in place, the epilogue of a linear layer."""
    for t in prange(tasks):
        j0, j1 = block(out.shape[1], tasks, t)
        bias_activation_block(out, b, act, alpha, j0, j1)


def bias_gradient(dy, y, act, alpha, da, db, tasks):
    """dy, y, da: (B, O), db: (O,); ``da = dy * f'(y)`` and ``db += sum_n da[n]`` in one pass.

    Each thread takes a block of columns, so it owns its part of ``db``: the
    reduction needs no locks and no per-thread copies. ``da`` may be ``dy``
    itself (the identity must pass it so); otherwise the thread copies its
    columns of ``dy`` into ``da`` first, and :func:`bias_gradient_block`
    works on ``da`` alone.
    """
    B, O = dy.shape
    for t in prange(tasks):
        j0, j1 = block(O, tasks, t)
        if act != IDENTITY:
            for n in range(B):
                da_row, dy_row = da[n, j0:j1], dy[n, j0:j1]
                for j in range(j1 - j0):
                    da_row[j] = dy_row[j]
        bias_gradient_block(dy if act == IDENTITY else da, y, act, alpha, db, j0, j1)


def split_rows(M, N, tasks):
    """Whether a (M, N) product is cut between ``tasks`` threads by rows (else by columns).

    By rows when every thread gets at least 128 of them, or the rows are
    the longer side. Measured on the default VAE's products, two threads:
    a weight gradient (400 x 784 from 32 examples) is faster cut by rows; a
    forward product of 32 or 128 examples is faster by columns, one of 512
    by rows (the products at the step's shapes: ``benchmarks/bench_kernels.py``).
    """
    return M >= 128 * tasks or M > N


def gemm_parallel(alpha, a, b, beta, c, blas, tasks):
    """``c = alpha a @ b + beta c`` by BLAS, one block of ``c`` per thread. a: (M, K), b: (K, N).

    ``c`` is cut into ``tasks`` blocks of rows (rows of ``a``) or of columns
    (columns of ``b``), as :func:`split_rows` says, and each thread
    multiplies its block with a single-threaded BLAS call. The backend runs
    BLAS single-threaded while it calls these kernels, so that one pool of
    threads (Numba's) does all the work and none waits for another.
    """
    M, N = c.shape
    rows = split_rows(M, N, tasks)
    for t in prange(tasks):
        if not rows:
            j0, j1 = block(N, tasks, t)
            if j1 > j0:
                gemm_blas(alpha, a, b[:, j0:j1], beta, c[:, j0:j1], blas)
        else:
            i0, i1 = block(M, tasks, t)
            if i1 > i0:
                gemm_blas(alpha, a[i0:i1], b, beta, c[i0:i1], blas)


def linear_forward(x, W, b, act, alpha, out, blas, tasks):
    """x: (B, I), W: (I, O), b: (O,), out: (B, O); ``out = f(x W + b)``, BLAS for the product.

    Each thread takes a block of the output, of features (columns) or of
    examples (rows), as :func:`split_rows` says: it multiplies its block
    with BLAS, then adds the bias and applies the activation there, while
    the block is still in its cache.
    """
    B, O = out.shape
    T = out.dtype.type
    rows = split_rows(B, O, tasks)
    for t in prange(tasks):
        if not rows:
            j0, j1 = block(O, tasks, t)
            if j1 > j0:
                gemm_blas(T(1), x, W[:, j0:j1], T(0), out[:, j0:j1], blas)
                bias_activation_block(out, b, act, alpha, j0, j1)
        else:
            i0, i1 = block(B, tasks, t)
            if i1 > i0:
                gemm_blas(T(1), x[i0:i1], W, T(0), out[i0:i1], blas)
                bias_activation_block(out[i0:i1], b, act, alpha, 0, O)


def linear_backward(dy, x, W, y, dW, db, act, alpha, da, dx, need_dx, blas, tasks):
    """Backward of :func:`linear_forward` (reference: ``linear_backward``).

    dy, y, da: (B, O); x: (B, I); W, dW: (I, O); db: (O,); dx: (B, I).

    Three parallel passes: ``da = dy f'(y)`` and ``db += sum da`` together
    (:func:`bias_gradient`); ``dW += x.T @ da`` (BLAS with ``beta = 1``:
    accumulated in place, the transpose a flag, no temporary); and, if
    ``need_dx``, ``dx = da @ W.T``. For the identity, pass ``da = dy``.
    """
    T = dW.dtype.type
    bias_gradient(dy, y, act, alpha, da, db, tasks)
    gemm_parallel(T(1), x.T, da, T(1), dW, blas, tasks)
    if need_dx:
        gemm_parallel(T(1), da, W.T, T(0), dx, blas, tasks)


# --------------------------------------------------------------------------
# The Gaussian latent layer
# --------------------------------------------------------------------------


def reparameterize(mu, logvar, eps, z):
    """mu, logvar, eps, z: (B, L); ``z = mu + exp(logvar / 2) * eps``."""
    B, L = mu.shape
    T = z.dtype.type
    for n in range(B):
        for j in range(L):
            z[n, j] = mu[n, j] + exp_any(T(0.5) * logvar[n, j], T) * eps[n, j]


def reparameterize_backward(dz, logvar, eps, dmu, dlogvar):
    """dz, logvar, eps, dmu, dlogvar: (B, L); ``dmu = dz``, ``dlogvar = dz eps sigma / 2``."""
    B, L = dz.shape
    T = dmu.dtype.type
    for n in range(B):
        for j in range(L):
            dmu[n, j] = dz[n, j]
            dlogvar[n, j] = T(0.5) * dz[n, j] * eps[n, j] * exp_any(T(0.5) * logvar[n, j], T)


def gaussian_kl(mu, logvar, kl):
    """mu, logvar: (B, L), kl: (B,); ``kl[n] = sum_j (mu^2 + e^logvar - 1 - logvar) / 2``."""
    B, L = mu.shape
    T = kl.dtype.type
    for n in range(B):
        s = T(0)
        for j in range(L):
            m, lv = mu[n, j], logvar[n, j]
            s += kl_term(m, lv, exp_any(lv, T), T)
        kl[n] = s


def gaussian_kl_backward(dkl, mu, logvar, dmu, dlogvar):
    """dkl: (B,); mu, logvar, dmu, dlogvar: (B, L).

    ``dmu = dkl mu``, ``dlogvar = dkl (e^logvar - 1) / 2``.
    """
    B, L = mu.shape
    T = dmu.dtype.type
    for n in range(B):
        for j in range(L):
            dmu[n, j] = dkl[n] * mu[n, j]
            lv = logvar[n, j]
            dlogvar[n, j] = dkl[n] * kl_grad_logvar(lv, exp_any(lv, T), T)


def latent_forward(h, eps, z, kl):
    """h: (B, 2L), eps, z: (B, L), kl: (B,). Sample and KL in one pass over ``h``.

    ``mu = h[:, :L]``, ``logvar = h[:, L:]``; ``sigma = exp(logvar / 2)`` is
    computed once and serves both: ``z = mu + sigma eps`` and, in the KL,
    ``exp(logvar) = sigma**2``. The KL's sum over dimensions is a row sum
    (:func:`~numpyvae.fast.numba_math.reassoc_add`), so the loop vectorises.
    """
    B, L = eps.shape
    T = z.dtype.type
    for n in range(B):
        s = T(0)
        for j in range(L):
            mu, lv = h[n, j], h[n, L + j]
            sigma = exp_any(T(0.5) * lv, T)
            z[n, j] = mu + sigma * eps[n, j]
            s = reassoc_add(s, kl_term(mu, lv, sigma * sigma, T))
        kl[n] = s


def latent_backward(dz, h, eps, dkl, free_bits, dh):
    """dz, eps: (B, L), h, dh: (B, 2L), dkl: (B,). Both paths into ``mu`` and ``logvar``.

    Reference: ``latent_backward``. Row by row, every dimension with its KL
    gradient (``sigma = exp(logvar / 2)`` serves both paths, as in
    :func:`latent_forward`). Then, with free bits, each latent dimension
    whose batch-mean KL is not above them is written again without it.
    """
    B, L = eps.shape
    T = dh.dtype.type
    for n in range(B):
        for j in range(L):
            mu, lv = h[n, j], h[n, L + j]
            sigma = exp_any(T(0.5) * lv, T)
            dh[n, j] = dz[n, j] + dkl[n] * mu
            through_z = T(0.5) * dz[n, j] * eps[n, j] * sigma
            dh[n, L + j] = through_z + dkl[n] * kl_grad_logvar(lv, sigma * sigma, T)
    free_bits = T(free_bits)
    if free_bits > T(0):
        for j in range(L):
            s = T(0)
            for n in range(B):
                mu, lv = h[n, j], h[n, L + j]
                s += kl_term(mu, lv, exp_any(lv, T), T)
            if not s / T(B) > free_bits:  # the KL gradient of this dimension is dropped
                for n in range(B):
                    dh[n, j] = dz[n, j]
                    dh[n, L + j] = T(0.5) * dz[n, j] * eps[n, j] * exp_any(T(0.5) * h[n, L + j], T)


def kl_per_dimension(mu, logvar, out):
    """mu, logvar: (B, L), out: (L,); the batch-mean KL of each latent dimension."""
    B, L = mu.shape
    T = out.dtype.type
    for j in range(L):
        out[j] = T(0)
    for n in range(B):
        for j in range(L):
            m, lv = mu[n, j], logvar[n, j]
            out[j] += kl_term(m, lv, exp_any(lv, T), T)
    for j in range(L):
        out[j] /= T(B)


# --------------------------------------------------------------------------
# Reconstruction terms
# --------------------------------------------------------------------------


def bernoulli_nll(logits, x, nll):
    """logits, x: (B, D), nll: (B,); ``nll[n] = sum_d max(l, 0) - x l + log(1 + e^-|l|)``."""
    B, D = logits.shape
    T = nll.dtype.type
    for n in prange(B):
        s = T(0)
        for d in range(D):
            v = logits[n, d]
            s = reassoc_add(s, bernoulli_nll_term(v, x[n, d], exp_neg(abs(v), T), T))
        nll[n] = s


def bernoulli_nll_backward(dnll, logits, x, dlogits):
    """dnll: (B,), logits, x, dlogits: (B, D); ``dlogits = dnll * (sigmoid(l) - x)``."""
    B, D = logits.shape
    T = dlogits.dtype.type
    for n in prange(B):
        for d in range(D):
            v = logits[n, d]
            p = sigmoid_given_exp(v, exp_neg(abs(v), T), T)
            dlogits[n, d] = dnll[n] * (p - x[n, d])


def bernoulli_nll_and_grad(logits, x, scale, nll, dlogits):
    """logits, x, dlogits: (B, D), nll: (B,). The NLL and ``scale`` times its gradient, one pass.

    One ``e = exp(-|l|)`` per pixel serves both: the loss needs
    ``log(1 + e)`` and the gradient ``sigmoid(l) - x`` with
    ``sigmoid(l) = 1/(1 + e)`` for ``l >= 0`` and ``e/(1 + e)`` below.
    """
    T = nll.dtype.type
    scale = T(scale)
    for n in prange(logits.shape[0]):
        nll[n] = bernoulli_nll_and_grad_row(logits[n], x[n], scale, dlogits[n])


def bernoulli_nll_and_grad_row(logits, x, scale, dlogits):
    """logits, x, dlogits: (D,). One example's NLL (returned) and ``dlogits``, as above.

    Two passes: ``e = exp(-|l|)`` into ``dlogits`` first, then the loss and
    the gradient from it (written over ``e``). The same arithmetic as one
    pass, to the bit, and faster measured: each loop is simpler for the
    compiler to vectorise.
    """
    T = dlogits.dtype.type
    for d in range(logits.shape[0]):
        dlogits[d] = exp_neg(abs(logits[d]), T)
    s = T(0)
    for d in range(logits.shape[0]):
        v = logits[d]
        xv = x[d]
        e = dlogits[d]
        s = reassoc_add(s, bernoulli_nll_term(v, xv, e, T))
        dlogits[d] = scale * (sigmoid_given_exp(v, e, T) - xv)
    return s


def gaussian_nll(mean, logvar, x, nll):
    """mean, x: (B, D), logvar: (D,) or (1,) broadcast, nll: (B,).

    ``nll[n] = sum_d (log 2 pi + logvar + (x - mean)**2 e^-logvar) / 2``.
    """
    B, D = mean.shape
    T = nll.dtype.type
    one_logvar = logvar.shape[0] == 1
    for n in prange(B):
        s = T(0)
        for d in range(D):
            lv = logvar[0] if one_logvar else logvar[d]
            r = x[n, d] - mean[n, d]
            s = reassoc_add(s, gaussian_nll_term(r, lv, math.exp(-lv), T))
        nll[n] = s


def gaussian_nll_and_grad(mean, logvar, x, scale, inv_var, dlogvar, want_dlogvar, nll, dmean):
    """mean, x, dmean: (B, D); logvar, inv_var: (D,) or (1,); dlogvar: like logvar; nll: (B,).

    The NLL, ``dmean = scale (mean - x) e^-logvar`` and, if ``want_dlogvar``
    (a learned logvar of shape (D,)),
    ``dlogvar += scale sum_n (1 - (x - mean)**2 e^-logvar) / 2``
    (reference: ``gaussian_nll_and_grad``). ``inv_var`` is a work buffer that
    receives ``e^-logvar``, so the exponential runs once per pixel, not once
    per pixel and example.
    """
    B, D = mean.shape
    T = nll.dtype.type
    scale = T(scale)
    P = logvar.shape[0]
    for d in range(P):
        inv_var[d] = math.exp(-logvar[d])
    for n in prange(B):
        nll[n] = gaussian_nll_and_grad_row(mean[n], logvar, inv_var, x[n], scale, dmean[n])
    if want_dlogvar:
        # Column blocks: each thread owns its columns of the batch sum.
        for block in prange((D + COLUMN_BLOCK - 1) // COLUMN_BLOCK):
            d0 = block * COLUMN_BLOCK
            d1 = min(d0 + COLUMN_BLOCK, D)
            gaussian_dlogvar_rows(mean[:, d0:d1], x[:, d0:d1], inv_var[d0:d1], scale,
                                  dlogvar[d0:d1])


def gaussian_nll_and_grad_row(mean, logvar, inv_var, x, scale, dmean):
    """mean, x, dmean: (D,); logvar, inv_var: (D,) or (1,). One example's NLL and ``dmean``."""
    T = dmean.dtype.type
    P = logvar.shape[0]
    s = T(0)
    for d in range(mean.shape[0]):
        k = 0 if P == 1 else d
        r = x[d] - mean[d]
        s = reassoc_add(s, gaussian_nll_term(r, logvar[k], inv_var[k], T))
        dmean[d] = scale * (-r * inv_var[k])
    return s


def gaussian_dlogvar_rows(mean, x, inv_var, scale, dlogvar):
    """mean, x: (B, D); inv_var, dlogvar: (D,). ``dlogvar += scale sum_n (1 - r^2 e^-lv) / 2``."""
    T = dlogvar.dtype.type
    for n in range(mean.shape[0]):
        x_row, mean_row = x[n], mean[n]
        for d in range(dlogvar.shape[0]):
            r = x_row[d] - mean_row[d]
            dlogvar[d] += scale * (T(0.5) * (T(1) - r * r * inv_var[d]))


# --------------------------------------------------------------------------
# Optimizer updates, fused over one flat buffer of all parameters
# --------------------------------------------------------------------------


def adam_update(param, grad, m, v, beta1, beta2, eps, weight_decay, decoupled, shrink, step,
                sqrt_bias2):
    """param, grad, m, v: (P,). One Adam/AdamW step in one pass (reference: ``adam_update``).

    The scalars that depend on the step number come in computed (in float64,
    then rounded to the parameters' dtype in :func:`adam_range`, exactly as
    the reference rounds them): ``shrink = 1 - lr * weight_decay`` (AdamW),
    ``step = lr / (1 - beta1**t)`` and ``sqrt_bias2 = sqrt(1 - beta2**t)``.
    Each element is read once and written once, where the NumPy expression
    takes a dozen passes over the buffers. The buffer is cut into chunks of
    :data:`ADAM_CHUNK` elements, shared out between the threads.
    """
    P = param.shape[0]
    for c in prange((P + ADAM_CHUNK - 1) // ADAM_CHUNK):
        i0 = c * ADAM_CHUNK
        i1 = min(i0 + ADAM_CHUNK, P)
        adam_range(param[i0:i1], grad[i0:i1], m[i0:i1], v[i0:i1], beta1, beta2, eps,
                   weight_decay, decoupled, shrink, step, sqrt_bias2)


def adam_range(param, grad, m, v, beta1, beta2, eps, weight_decay, decoupled, shrink, step,
               sqrt_bias2):
    """param, grad, m, v: (P,). :func:`adam_update` on one thread: the loop every Adam step runs."""
    T = param.dtype.type
    b1, c1 = T(beta1), T(1 - beta1)
    b2, c2 = T(beta2), T(1 - beta2)
    eps, wd, shrink, step = T(eps), T(weight_decay), T(shrink), T(step)
    inv_sqrt_bias2 = T(1 / sqrt_bias2)
    for i in range(param.shape[0]):
        param[i], m[i], v[i] = adam_element(param[i], grad[i], m[i], v[i], b1, c1, b2, c2, eps,
                                            wd, decoupled, shrink, step, inv_sqrt_bias2, T)


def adam_element(p, g, m, v, b1, c1, b2, c2, eps, wd, decoupled, shrink, step, inv_sqrt_bias2,
                 T):
    """One parameter's Adam/AdamW step: ``(p, m, v)`` after it (every scalar of type ``T``).

    ``m`` and ``v`` are flushed to zero once they fall below the normal
    range (see ``reference.adam_update``). The reference divides ``sqrt(v)``
    by ``sqrt(1 - beta2**t)``; here it is multiplied by the inverse, found
    once: the loop is bound by the divider, which a square root and two
    divisions per element kept busy (the Adam step ran 15-20% faster with
    one division, alone at the default model's shapes). The result may
    differ from the reference's in the last bit.
    """
    if decoupled:
        p = p * shrink
    elif wd != 0:
        g = g + wd * p
    m = flush_subnormal(b1 * m + c1 * g, T)
    v = flush_subnormal(b2 * v + c2 * (g * g), T)
    return p - step * m / (math.sqrt(v) * inv_sqrt_bias2 + eps), m, v


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """param, grad, velocity: (P,). One SGD step (reference: ``sgd_update``)."""
    T = param.dtype.type
    lr, mom, wd = T(lr), T(momentum), T(weight_decay)
    for i in prange(param.shape[0]):
        g = grad[i] + wd * param[i] if wd != T(0) else grad[i]
        if mom != T(0):
            vi = flush_subnormal(mom * velocity[i] + g, T)
            velocity[i] = vi
            g = g + mom * vi if nesterov else vi
        param[i] -= lr * g


# --------------------------------------------------------------------------
# Jitting, in one place
# --------------------------------------------------------------------------

#: The kernels, and whether each runs its outer loop on several threads.
KERNELS = {
    "matmul_loops": True, "matmul_tiled": True,
    "activation_forward": True, "activation_backward": True, "block": False,
    "bias_activation_block": False, "bias_gradient_block": False, "bias_activation": True,
    "split_rows": False, "gemm_parallel": True, "linear_forward": True,
    "bias_gradient": True, "linear_backward": False,
    "reparameterize": False, "reparameterize_backward": False, "gaussian_kl": False,
    "gaussian_kl_backward": False, "latent_forward": False, "latent_backward": False,
    "kl_per_dimension": False,
    "bernoulli_nll": True, "bernoulli_nll_backward": True, "bernoulli_nll_and_grad": True,
    "bernoulli_nll_and_grad_row": False,
    "gaussian_nll": True, "gaussian_nll_and_grad": True, "gaussian_nll_and_grad_row": False,
    "gaussian_dlogvar_rows": False,
    "adam_update": True, "adam_range": False, "adam_element": False, "sgd_update": True,
}

jit_kernels(globals(), KERNELS)
