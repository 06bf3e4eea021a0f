"""The Numba kernels of the convolutions, as plain Python functions jitted in one place.

The derivations are in :mod:`numpyvae.backend.reference` (the naive loops and
the im2col form); each kernel here names the reference function it computes.
The wrappers that check arguments and hold the work buffers are the
``conv2d_*`` / ``conv_transpose2d_*`` functions of
:mod:`numpyvae.backend.numba_ops`.

How the work is done
--------------------
One example at a time, one block of examples per Numba thread: each thread
gathers its example's windows into its own ``cols`` buffer (:func:`im2col`,
``(C kh kw, Ho Wo)``), multiplies with a single-threaded BLAS ``gemm``
called from jitted code, and, in the forward pass, adds the bias and applies
the activation to that example's output while it is in cache. Because the
weight is stored as PyTorch does (``(O, C, kh, kw)``), ``W`` read as an
``(O, C kh kw)`` matrix times ``cols`` *is* the example's ``(O, Ho, Wo)``
output: no transpose anywhere.

The weight gradient is a sum over examples; each thread accumulates its
examples into its own slice of ``dW_parts`` (BLAS with ``beta = 1``) and the
slices are added at the end, so no two threads write the same memory.

:func:`conv2d_forward_direct` is the alternative the issue asked to measure:
the convolution as six nested loops with no gathering. On the conv VAE's
shapes it is several times slower than im2col + BLAS
(``benchmarks/bench_conv.py``), so the backend uses im2col.

Conventions as in :mod:`numpyvae.backend.numba_kernels`: every kernel opens
with a shape comment, writes into the arrays it is given and allocates
nothing, and is dtype-generic (``T = out.dtype.type``).
"""

from __future__ import annotations

from numba import prange

from .numba_jit import jit_kernels
from .numba_kernels import IDENTITY, RELU, activate, activation_slope, gemm_blas


def split(n, tasks, t):
    """The ``t``-th of ``tasks`` near-equal blocks of ``range(n)``: ``(start, stop)``."""
    size = (n + tasks - 1) // tasks
    start = min(t * size, n)
    return start, min(start + size, n)


def im2col(x, kh, kw, sh, sw, ph, pw, cols):
    """x: (C, H, W) one example; cols: (C kh kw, Ho Wo). Reference: ``reference.im2col``.

    ``cols[(c kh + p) kw + q, i Wo + j] = x[c, i sh + p - ph, j sw + q - pw]``,
    zero where that position is padding.
    """
    C, H, W = x.shape
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    T = cols.dtype.type
    for c in range(C):
        for p in range(kh):
            for q in range(kw):
                row = cols[(c * kh + p) * kw + q]
                for i in range(Ho):
                    u = i * sh + p - ph
                    seg = row[i * Wo:(i + 1) * Wo]
                    if u < 0 or u >= H:
                        for j in range(Wo):
                            seg[j] = T(0)
                        continue
                    xrow = x[c, u]
                    for j in range(Wo):
                        v = j * sw + q - pw
                        seg[j] = xrow[v] if 0 <= v < W else T(0)


def col2im_add(cols, kh, kw, sh, sw, ph, pw, Ho, Wo, x):
    """cols: (C kh kw, Ho Wo); x: (C, H, W) one example. ``x += col2im(cols)``.

    The adjoint of :func:`im2col` (reference: ``reference.col2im``): every
    entry is added back into the pixel it was gathered from; entries that
    came from padding are dropped. ``x`` is not cleared first.
    """
    C, H, W = x.shape
    for c in range(C):
        for p in range(kh):
            for q in range(kw):
                row = cols[(c * kh + p) * kw + q]
                for i in range(Ho):
                    u = i * sh + p - ph
                    if u < 0 or u >= H:
                        continue
                    xrow = x[c, u]
                    seg = row[i * Wo:(i + 1) * Wo]
                    for j in range(Wo):
                        v = j * sw + q - pw
                        if 0 <= v < W:
                            xrow[v] += seg[j]


def bias_activation_rows(a, b, act, alpha):
    """a: (O, N) one example's output, b: (O,); ``a = f(a + b[:, None])`` in place."""
    T = a.dtype.type
    alpha = T(alpha)
    for o in range(a.shape[0]):
        row = a[o]
        bo = b[o]
        if act == IDENTITY:
            for j in range(row.shape[0]):
                row[j] += bo
        elif act == RELU:
            for j in range(row.shape[0]):
                row[j] = max(row[j] + bo, T(0))
        else:
            for j in range(row.shape[0]):
                row[j] = activate(row[j] + bo, act, alpha, T)


def activation_grad(dy, y, act, alpha, da):
    """dy, y, da: (B, O, N); ``da = dy * f'(y)`` (reference: ``activation_backward``)."""
    T = da.dtype.type
    alpha = T(alpha)
    B, O, N = y.shape
    for n in prange(B):
        for o in range(O):
            for j in range(N):
                da[n, o, j] = dy[n, o, j] * activation_slope(y[n, o, j], act, alpha, T)


def bias_grad(da, db):
    """da: (B, O, N), db: (O,); ``db += sum over n and j of da``, one channel per iteration."""
    B, O, N = da.shape
    T = db.dtype.type
    for o in prange(O):
        s = 0.0  # float64 for any dtype: a float32 sum of B * N terms would drift
        for n in range(B):
            row = da[n, o]
            for j in range(N):
                s += row[j]
        db[o] += T(s)


def add_parts(parts, dW):
    """parts: (tasks, O, K), dW: (O, K); ``dW += sum_t parts[t]``."""
    tasks, O, K = parts.shape
    for o in prange(O):
        for t in range(tasks):
            for k in range(K):
                dW[o, k] += parts[t, o, k]


def conv2d_forward(x, W2, b, kh, kw, sh, sw, ph, pw, act, alpha, out, cols, blas, tasks):
    """x: (B, C, H, W); W2: (O, C kh kw); b: (O,); out: (B, O, Ho Wo); cols: (tasks, C kh kw, Ho Wo)

    ``out[n] = f(W2 @ im2col(x[n]) + b)`` (reference: ``conv2d_forward``),
    examples split across threads, each with its own ``cols[t]``.
    """
    B = x.shape[0]
    T = out.dtype.type
    for t in prange(tasks):
        n0, n1 = split(B, tasks, t)
        for n in range(n0, n1):
            im2col(x[n], kh, kw, sh, sw, ph, pw, cols[t])
            gemm_blas(T(1), W2, cols[t], T(0), out[n], blas)
            bias_activation_rows(out[n], b, act, alpha)


def conv2d_backward(x, W2, da, dW2, dW_parts, kh, kw, sh, sw, ph, pw, Ho, Wo, dx, need_dx,
                    cols, dcols, blas, tasks):
    """Backward of :func:`conv2d_forward` after the activation (reference: ``conv2d_backward``).

    x, dx: (B, C, H, W); W2, dW2: (O, C kh kw); da: (B, O, Ho Wo) = dy f'(y);
    dW_parts: (tasks, O, C kh kw); cols, dcols: (tasks, C kh kw, Ho Wo).

    Per example: ``dW2 += da[n] @ im2col(x[n]).T`` (into the thread's part,
    added up at the end) and ``dx[n] = col2im(W2.T @ da[n])``. ``db`` is
    :func:`bias_grad`'s job.
    """
    B = x.shape[0]
    T = dW2.dtype.type
    for t in prange(tasks):
        dW_parts[t].fill(T(0))
        n0, n1 = split(B, tasks, t)
        for n in range(n0, n1):
            im2col(x[n], kh, kw, sh, sw, ph, pw, cols[t])
            gemm_blas(T(1), da[n], cols[t].T, T(1), dW_parts[t], blas)
            if need_dx:
                gemm_blas(T(1), W2.T, da[n], T(0), dcols[t], blas)
                dx[n].fill(T(0))
                col2im_add(dcols[t], kh, kw, sh, sw, ph, pw, Ho, Wo, dx[n])
    add_parts(dW_parts, dW2)


def conv_transpose2d_forward(x, W2, b, kh, kw, sh, sw, ph, pw, H, W, act, alpha, out, cols,
                             blas, tasks):
    """x: (B, C, H W); W2: (C, O kh kw); b: (O,); out: (B, O, Ho, Wo); cols: (tasks, O kh kw, H W)

    ``out[n] = f(col2im(W2.T @ x[n]) + b)`` (reference: ``conv_transpose2d_forward``).
    The output rows and columns no window reaches (``output_padding``) get
    ``f(b)``.
    """
    B, O, Ho, Wo = out.shape
    T = out.dtype.type
    for t in prange(tasks):
        n0, n1 = split(B, tasks, t)
        for n in range(n0, n1):
            gemm_blas(T(1), W2.T, x[n], T(0), cols[t], blas)
            out[n].fill(T(0))
            col2im_add(cols[t], kh, kw, sh, sw, ph, pw, H, W, out[n])
            bias_activation_rows(out[n].reshape(O, Ho * Wo), b, act, alpha)


def conv_transpose2d_backward(x, W2, da, dW2, dW_parts, kh, kw, sh, sw, ph, pw, dx, need_dx,
                              cols, blas, tasks):
    """Backward of :func:`conv_transpose2d_forward` after the activation.

    x, dx: (B, C, H W); W2, dW2: (C, O kh kw); da: (B, O, Ho, Wo) = dy f'(y);
    dW_parts: (tasks, C, O kh kw); cols: (tasks, O kh kw, H W).

    Per example, with ``cols = im2col(da[n])`` (the convolution's gather):
    ``dW2 += x[n] @ cols.T`` and ``dx[n] = W2 @ cols`` (reference:
    ``conv_transpose2d_backward``).
    """
    B = x.shape[0]
    T = dW2.dtype.type
    for t in prange(tasks):
        dW_parts[t].fill(T(0))
        n0, n1 = split(B, tasks, t)
        for n in range(n0, n1):
            im2col(da[n], kh, kw, sh, sw, ph, pw, cols[t])
            gemm_blas(T(1), x[n], cols[t].T, T(1), dW_parts[t], blas)
            if need_dx:
                gemm_blas(T(1), W2, cols[t], T(0), dx[n], blas)
    add_parts(dW_parts, dW2)


def conv2d_forward_direct(x, W, b, sh, sw, ph, pw, act, alpha, out):
    """x: (B, C, H, W); W: (O, C, kh, kw); b: (O,); out: (B, O, Ho, Wo). The definition, jitted.

    ``out[n,o,i,j] = f(b[o] + sum_{c,p,q} W[o,c,p,q] x[n, c, i sh + p - ph, j sw + q - pw])``,
    parallel over examples: the direct convolution, kept to be measured
    against im2col + BLAS (``benchmarks/bench_conv.py``).
    """
    B, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    _, _, Ho, Wo = out.shape
    T = out.dtype.type
    alpha = T(alpha)
    for n in prange(B):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    s = b[o]
                    for c in range(C):
                        for p in range(kh):
                            u = i * sh + p - ph
                            if u < 0 or u >= H:
                                continue
                            for q in range(kw):
                                v = j * sw + q - pw
                                if 0 <= v < Wd:
                                    s += W[o, c, p, q] * x[n, c, u, v]
                    out[n, o, i, j] = activate(s, act, alpha, T)


# --------------------------------------------------------------------------
# Jitting, in one place (numba_jit's options)
# --------------------------------------------------------------------------

#: The kernels, and whether each runs its outer loop on several threads.
KERNELS = {
    "split": False, "im2col": False, "col2im_add": False, "bias_activation_rows": False,
    "activation_grad": True, "bias_grad": True, "add_parts": True,
    "conv2d_forward": True, "conv2d_backward": True, "conv_transpose2d_forward": True,
    "conv_transpose2d_backward": True, "conv2d_forward_direct": True,
}


jit_kernels(globals(), KERNELS)
