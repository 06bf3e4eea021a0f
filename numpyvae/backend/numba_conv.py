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

The windows are gathered from a *canvas*: the example pasted into the
middle of a zero border as wide as the padding (:func:`paste`), so that no
read needs a bounds check. Where window ``(i, j)`` and kernel offset
``(p, q)`` read is then ``(p Wp + q) + offs[i Wo + j]`` in the flattened
channel, with ``offs[i Wo + j] = i sh Wp + j sw`` (:func:`window_offsets`)
computed once per call; the scatter back (:func:`col2im_add`) adds into a
zeroed canvas the same way and :func:`crop` copies its middle out. On the
conv VAE's middle layers this ran the forward 1.5 times and the backward
1.3 times as fast as bounds-checked loops over ``(i, j)``, with the same
numbers to the bit: every value is gathered unchanged and every pixel's
sum is taken in the same order.

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


def window_offsets(Ho, Wo, sh, sw, Wp, offs):
    """offs: (Ho Wo,); ``offs[i Wo + j] = i sh Wp + j sw``.

    Where window ``(i, j)`` starts in a flattened canvas channel ``(Hp Wp,)``.
    """
    for i in range(Ho):
        for j in range(Wo):
            offs[i * Wo + j] = i * sh * Wp + j * sw


def paste(x, ph, pw, canvas):
    """x: (C, H, W), canvas: (C, Hp, Wp); ``canvas[c, ph + u, pw + v] = x[c, u, v]``.

    The border is left as it is: zero, once the canvas has been cleared.
    """
    C, H, W = x.shape
    for c in range(C):
        for u in range(H):
            src = x[c, u]
            dst = canvas[c, ph + u]
            for v in range(W):
                dst[pw + v] = src[v]


def crop(canvas, ph, pw, x):
    """canvas: (C, Hp, Wp), x: (C, H, W); ``x[c, u, v] = canvas[c, ph + u, pw + v]``."""
    C, H, W = x.shape
    for c in range(C):
        for u in range(H):
            src = canvas[c, ph + u]
            dst = x[c, u]
            for v in range(W):
                dst[v] = src[pw + v]


def im2col(canvas, kh, kw, offs, cols):
    """canvas: (C, Hp, Wp) one padded example; offs: (Ho Wo,); cols: (C kh kw, Ho Wo).

    Reference: ``reference.im2col``: ``cols[(c kh + p) kw + q, i Wo + j] =
    x[c, i sh + p - ph, j sw + q - pw]``, zero where that is padding; here
    ``canvas[c, i sh + p, j sw + q]``, the padding being the canvas's zero
    border (:func:`paste`, :func:`window_offsets`).
    """
    C, Hp, Wp = canvas.shape
    flat = canvas.reshape(C, Hp * Wp)
    for c in range(C):
        channel = flat[c]
        for p in range(kh):
            for q in range(kw):
                row = cols[(c * kh + p) * kw + q]
                start = p * Wp + q
                for s in range(offs.shape[0]):
                    row[s] = channel[start + offs[s]]


def col2im_add(cols, kh, kw, offs, canvas):
    """cols: (C kh kw, Ho Wo); canvas: (C, Hp, Wp). ``canvas += col2im(cols)``, padding included.

    The adjoint of :func:`im2col` (reference: ``reference.col2im``): every
    entry is added back where it was gathered from, in the order of the
    loops (channel, kernel row, kernel column, window), so each pixel's sum
    is the reference loop's; :func:`crop` then drops what fell on the border.
    """
    C, Hp, Wp = canvas.shape
    flat = canvas.reshape(C, Hp * Wp)
    for c in range(C):
        channel = flat[c]
        for p in range(kh):
            for q in range(kw):
                row = cols[(c * kh + p) * kw + q]
                start = p * Wp + q
                for s in range(offs.shape[0]):
                    channel[start + offs[s]] += row[s]


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


def conv2d_forward(x, W2, b, kh, kw, sh, sw, ph, pw, Ho, Wo, act, alpha, out, cols, canvas,
                   offs, blas, tasks):
    """x: (B, C, H, W); W2: (O, C kh kw); b: (O,); out: (B, O, Ho Wo); cols: (tasks, C kh kw, Ho Wo)

    canvas: (tasks, C, H + 2 ph, W + 2 pw); offs: (Ho Wo,).
    ``out[n] = f(W2 @ im2col(x[n]) + b)`` (reference: ``conv2d_forward``),
    examples split across threads, each with its own ``cols[t]`` and ``canvas[t]``.
    """
    B = x.shape[0]
    T = out.dtype.type
    window_offsets(Ho, Wo, sh, sw, canvas.shape[3], offs)
    for t in prange(tasks):
        canvas[t].fill(T(0))
        n0, n1 = split(B, tasks, t)
        for n in range(n0, n1):
            paste(x[n], ph, pw, canvas[t])
            im2col(canvas[t], kh, kw, offs, cols[t])
            gemm_blas(T(1), W2, cols[t], T(0), out[n], blas)
            bias_activation_rows(out[n], b, act, alpha)


def conv2d_backward(x, W2, da, dW2, dW_parts, kh, kw, sh, sw, ph, pw, Ho, Wo, dx, need_dx,
                    cols, dcols, canvas, dcanvas, offs, blas, tasks):
    """Backward of :func:`conv2d_forward` after the activation (reference: ``conv2d_backward``).

    x, dx: (B, C, H, W); W2, dW2: (O, C kh kw); da: (B, O, Ho Wo) = dy f'(y);
    dW_parts: (tasks, O, C kh kw); cols, dcols: (tasks, C kh kw, Ho Wo);
    canvas, dcanvas: (tasks, C, H + 2 ph, W + 2 pw); offs: (Ho Wo,).

    Per example: ``dW2 += da[n] @ im2col(x[n]).T`` (into the thread's part,
    added up at the end) and ``dx[n] = col2im(W2.T @ da[n])``. ``db`` is
    :func:`bias_grad`'s job.
    """
    B = x.shape[0]
    T = dW2.dtype.type
    window_offsets(Ho, Wo, sh, sw, canvas.shape[3], offs)
    for t in prange(tasks):
        dW_parts[t].fill(T(0))
        canvas[t].fill(T(0))
        n0, n1 = split(B, tasks, t)
        for n in range(n0, n1):
            paste(x[n], ph, pw, canvas[t])
            im2col(canvas[t], kh, kw, offs, cols[t])
            gemm_blas(T(1), da[n], cols[t].T, T(1), dW_parts[t], blas)
            if need_dx:
                gemm_blas(T(1), W2.T, da[n], T(0), dcols[t], blas)
                dcanvas[t].fill(T(0))
                col2im_add(dcols[t], kh, kw, offs, dcanvas[t])
                crop(dcanvas[t], ph, pw, dx[n])
    add_parts(dW_parts, dW2)


def conv_transpose2d_forward(x, W2, b, kh, kw, sh, sw, ph, pw, H, W, act, alpha, out, cols,
                             canvas, offs, blas, tasks):
    """x: (B, C, H W); W2: (C, O kh kw); b: (O,); out: (B, O, Ho, Wo); cols: (tasks, O kh kw, H W)

    canvas: (tasks, O, Hc, Wc), at least ``(H - 1) sh + kh`` by ``(W - 1) sw + kw``
    and ``Ho + ph`` by ``Wo + pw``; offs: (H W,).
    ``out[n] = f(col2im(W2.T @ x[n]) + b)`` (reference: ``conv_transpose2d_forward``).
    The output rows and columns no window reaches (``output_padding``) get
    ``f(b)``.
    """
    B, O, Ho, Wo = out.shape
    T = out.dtype.type
    window_offsets(H, W, sh, sw, canvas.shape[3], offs)
    for t in prange(tasks):
        n0, n1 = split(B, tasks, t)
        for n in range(n0, n1):
            gemm_blas(T(1), W2.T, x[n], T(0), cols[t], blas)
            canvas[t].fill(T(0))
            col2im_add(cols[t], kh, kw, offs, canvas[t])
            crop(canvas[t], ph, pw, out[n])
            bias_activation_rows(out[n].reshape(O, Ho * Wo), b, act, alpha)


def conv_transpose2d_backward(x, W2, da, dW2, dW_parts, kh, kw, sh, sw, ph, pw, H, W, dx,
                              need_dx, cols, canvas, offs, blas, tasks):
    """Backward of :func:`conv_transpose2d_forward` after the activation.

    x, dx: (B, C, H W); W2, dW2: (C, O kh kw); da: (B, O, Ho, Wo) = dy f'(y);
    dW_parts: (tasks, C, O kh kw); cols: (tasks, O kh kw, H W); canvas and
    offs as :func:`conv_transpose2d_forward`'s.

    Per example, with ``cols = im2col(da[n])`` (the convolution's gather):
    ``dW2 += x[n] @ cols.T`` and ``dx[n] = W2 @ cols`` (reference:
    ``conv_transpose2d_backward``).
    """
    B = x.shape[0]
    T = dW2.dtype.type
    window_offsets(H, W, sh, sw, canvas.shape[3], offs)
    for t in prange(tasks):
        dW_parts[t].fill(T(0))
        canvas[t].fill(T(0))
        n0, n1 = split(B, tasks, t)
        for n in range(n0, n1):
            paste(da[n], ph, pw, canvas[t])
            im2col(canvas[t], kh, kw, offs, cols[t])
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
    "split": False, "window_offsets": False, "paste": False, "crop": False, "im2col": False,
    "col2im_add": False, "bias_activation_rows": False,
    "activation_grad": True, "bias_grad": True, "add_parts": True,
    "conv2d_forward": True, "conv2d_backward": True, "conv_transpose2d_forward": True,
    "conv_transpose2d_backward": True, "conv2d_forward_direct": True,
}


jit_kernels(globals(), KERNELS)
