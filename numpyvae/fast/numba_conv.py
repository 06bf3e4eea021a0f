"""The Numba kernels of the convolutions, as plain Python functions jitted in one place.

The derivations are in :mod:`numpyvae.ops` (the naive loops and
the im2col form); each kernel here names the reference function it computes.
The wrappers that check arguments and hold the work buffers are the
``conv2d_*`` / ``conv_transpose2d_*`` functions of
:mod:`numpyvae.fast.numba_ops`.

How the work is done
--------------------
One block of examples per Numba thread, taken a group of ``G`` examples at
a time: each thread gathers the group's windows side by side into its own
``cols`` buffer (:func:`im2col`, ``(C kh kw, G Ho Wo)``), multiplies them
with one single-threaded BLAS ``gemm`` called from jitted code, and copies
each example's block of the product out, adding the bias and applying the
activation in the forward pass. Because the weight is stored as PyTorch
does (``(O, C, kh, kw)``), ``W`` read as an ``(O, C kh kw)`` matrix times an
example's windows *is* its ``(O, Ho, Wo)`` output. ``G`` (from
``numba_ops.GROUP_COLUMNS``) makes the products about 500 columns wide:
one example of the conv VAE's middle layer has 49 windows, a product too
thin for BLAS to run at speed.

The windows are gathered from a *canvas*: the example pasted into the
middle of a zero border as wide as the padding (:func:`paste`), so that no
read needs a bounds check. Where window ``(i, j)`` and kernel offset
``(p, q)`` read is then ``(p Wp + q) + offs[i Wo + j]`` in the flattened
channel, with ``offs[i Wo + j] = i sh Wp + j sw`` (:func:`window_offsets`)
computed once per call; the scatter back (:func:`col2im_add`) adds into a
zeroed canvas the same way and :func:`crop` copies its middle out. On the
conv VAE's middle layers this ran the forward and the backward faster than
bounds-checked loops over ``(i, j)`` (``benchmarks/bench_conv.py`` times
the layers' kernels), with the same numbers to the bit: every value is
gathered unchanged and every pixel's sum is taken in the same order.

The weight gradient is a sum over examples; each thread accumulates its
examples into its own slice of ``dW_parts`` (BLAS with ``beta = 1``) and the
slices are added at the end, so no two threads write the same memory.

:func:`conv2d_forward_direct` is the alternative the issue asked to measure:
the convolution as six nested loops with no gathering. On the conv VAE's
shapes it is several times slower than im2col + BLAS
(``benchmarks/bench_conv.py``), so the backend uses im2col.

Conventions as in :mod:`numpyvae.fast.numba_kernels`: every kernel opens
with a shape comment, writes into the arrays it is given and allocates
nothing, and is dtype-generic (``T = out.dtype.type``).
"""

from __future__ import annotations

from numba import prange

from .numba_jit import jit_kernels
from .numba_kernels import IDENTITY, RELU, activate, activation_slope, gemm_blas
from .numba_math import reassoc_add


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
    loops (channel, kernel row, kernel column, window); :func:`crop` then
    drops what fell on the border.
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
    """da: (B, O, N), db: (O,); ``db += sum over n and j of da``, one channel per iteration.

    The sum is kept in float64 for any dtype (a float32 sum of ``B N`` terms
    would drift), in several partial sums at once (:func:`reassoc_add`, as
    NumPy's pairwise sum does) rather than one chain of additions each
    waiting for the last: measured several times faster on the conv VAE's
    first layer at batch 128, two threads.
    """
    B, O, N = da.shape
    T = db.dtype.type
    for o in prange(O):
        s = 0.0
        for n in range(B):
            row = da[n, o]
            for j in range(N):
                s = reassoc_add(s, float(row[j]))
        db[o] += T(s)


def add_parts(parts, dW):
    """parts: (tasks, O, K), dW: (O, K); ``dW += sum_t parts[t]``."""
    tasks, O, K = parts.shape
    for o in prange(O):
        for t in range(tasks):
            for k in range(K):
                dW[o, k] += parts[t, o, k]


def copy_rows(src, dst):
    """src, dst: (R, N), either a strided view; ``dst = src``."""
    for r in range(src.shape[0]):
        a, d = src[r], dst[r]
        for j in range(a.shape[0]):
            d[j] = a[j]


def conv2d_forward(x, W2, b, kh, kw, sh, sw, ph, pw, Ho, Wo, act, alpha, out, cols, wide_out,
                   canvas, offs, blas, tasks):
    """x: (B, C, H, W); W2: (O, C kh kw); b: (O,); out: (B, O, Ho Wo); offs: (Ho Wo,)

    cols: (tasks, C kh kw, G Ho Wo); wide_out: (tasks, O, G Ho Wo);
    canvas: (tasks, C, H + 2 ph, W + 2 pw).
    ``out[n] = f(W2 @ im2col(x[n]) + b)`` (reference: ``conv2d_forward``),
    examples split across threads, and each thread's taken ``G`` at a time
    (the group): their windows side by side in ``cols[t]``, one product for
    all of them, then each example's block of the product, with the bias
    and the activation, into ``out``.
    """
    B = x.shape[0]
    T = out.dtype.type
    S = Ho * Wo
    G = cols.shape[2] // S
    window_offsets(Ho, Wo, sh, sw, canvas.shape[3], offs)
    for t in prange(tasks):
        canvas[t].fill(T(0))
        n0, n1 = split(B, tasks, t)
        for g0 in range(n0, n1, G):
            g1 = min(g0 + G, n1)
            group_cols, group_out = cols[t][:, :(g1 - g0) * S], wide_out[t][:, :(g1 - g0) * S]
            for n in range(g0, g1):
                paste(x[n], ph, pw, canvas[t])
                im2col(canvas[t], kh, kw, offs, group_cols[:, (n - g0) * S:(n - g0 + 1) * S])
            gemm_blas(T(1), W2, group_cols, T(0), group_out, blas)
            for n in range(g0, g1):
                copy_rows(group_out[:, (n - g0) * S:(n - g0 + 1) * S], out[n])
                bias_activation_rows(out[n], b, act, alpha)


def conv2d_backward(x, W2, da, dW2, dW_parts, kh, kw, sh, sw, ph, pw, Ho, Wo, dx, need_dx,
                    cols, dcols, wide_da, canvas, dcanvas, offs, blas, tasks):
    """Backward of :func:`conv2d_forward` after the activation (reference: ``conv2d_backward``).

    x, dx: (B, C, H, W); W2, dW2: (O, C kh kw); da: (B, O, Ho Wo) = dy f'(y);
    dW_parts: (tasks, O, C kh kw); cols, dcols: (tasks, C kh kw, G Ho Wo);
    wide_da: (tasks, O, G Ho Wo); canvas, dcanvas: (tasks, C, H + 2 ph, W + 2 pw);
    offs: (Ho Wo,).

    Per group of ``G`` examples, side by side as in :func:`conv2d_forward`:
    ``dW2 += da @ im2col(x).T`` (into the thread's part, added up at the
    end) and ``dcols = W2.T @ da``, then each example's ``dx[n] =
    col2im(dcols)``. ``db`` is :func:`bias_grad`'s job.
    """
    B = x.shape[0]
    T = dW2.dtype.type
    S = Ho * Wo
    G = cols.shape[2] // S
    window_offsets(Ho, Wo, sh, sw, canvas.shape[3], offs)
    for t in prange(tasks):
        dW_parts[t].fill(T(0))
        canvas[t].fill(T(0))
        n0, n1 = split(B, tasks, t)
        for g0 in range(n0, n1, G):
            g1 = min(g0 + G, n1)
            m = (g1 - g0) * S
            group_cols, group_dcols, group_da = cols[t][:, :m], dcols[t][:, :m], wide_da[t][:, :m]
            for n in range(g0, g1):
                paste(x[n], ph, pw, canvas[t])
                im2col(canvas[t], kh, kw, offs, group_cols[:, (n - g0) * S:(n - g0 + 1) * S])
                copy_rows(da[n], group_da[:, (n - g0) * S:(n - g0 + 1) * S])
            gemm_blas(T(1), group_da, group_cols.T, T(1), dW_parts[t], blas)
            if need_dx:
                gemm_blas(T(1), W2.T, group_da, T(0), group_dcols, blas)
                for n in range(g0, g1):
                    dcanvas[t].fill(T(0))
                    col2im_add(group_dcols[:, (n - g0) * S:(n - g0 + 1) * S], kh, kw, offs,
                               dcanvas[t])
                    crop(dcanvas[t], ph, pw, dx[n])
    add_parts(dW_parts, dW2)


def conv_transpose2d_forward(x, W2, b, kh, kw, sh, sw, ph, pw, H, W, act, alpha, out, cols,
                             wide_x, canvas, offs, blas, tasks):
    """x: (B, C, H W); W2: (C, O kh kw); b: (O,); out: (B, O, Ho, Wo); offs: (H W,)

    cols: (tasks, O kh kw, G H W); wide_x: (tasks, C, G H W); canvas:
    (tasks, O, Hc, Wc), at least ``(H - 1) sh + kh`` by ``(W - 1) sw + kw``
    and ``Ho + ph`` by ``Wo + pw``.
    ``out[n] = f(col2im(W2.T @ x[n]) + b)`` (reference: ``conv_transpose2d_forward``),
    ``G`` examples side by side in one product. The output rows and columns
    no window reaches (``output_padding``) get ``f(b)``.
    """
    B, O, Ho, Wo = out.shape
    T = out.dtype.type
    S = H * W
    G = cols.shape[2] // S
    window_offsets(H, W, sh, sw, canvas.shape[3], offs)
    for t in prange(tasks):
        n0, n1 = split(B, tasks, t)
        for g0 in range(n0, n1, G):
            g1 = min(g0 + G, n1)
            group_cols, group_x = cols[t][:, :(g1 - g0) * S], wide_x[t][:, :(g1 - g0) * S]
            for n in range(g0, g1):
                copy_rows(x[n], group_x[:, (n - g0) * S:(n - g0 + 1) * S])
            gemm_blas(T(1), W2.T, group_x, T(0), group_cols, blas)
            for n in range(g0, g1):
                canvas[t].fill(T(0))
                col2im_add(group_cols[:, (n - g0) * S:(n - g0 + 1) * S], kh, kw, offs,
                           canvas[t])
                crop(canvas[t], ph, pw, out[n])
                bias_activation_rows(out[n].reshape(O, Ho * Wo), b, act, alpha)


def conv_transpose2d_backward(x, W2, da, dW2, dW_parts, kh, kw, sh, sw, ph, pw, H, W, dx,
                              need_dx, cols, wide_x, wide_dx, canvas, offs, blas, tasks):
    """Backward of :func:`conv_transpose2d_forward` after the activation.

    x, dx: (B, C, H W); W2, dW2: (C, O kh kw); da: (B, O, Ho, Wo) = dy f'(y);
    dW_parts: (tasks, C, O kh kw); cols: (tasks, O kh kw, G H W); wide_x,
    wide_dx: (tasks, C, G H W); canvas and offs as :func:`conv_transpose2d_forward`'s.

    Per group of ``G`` examples, with ``cols = im2col(da)`` (the
    convolution's gather): ``dW2 += x @ cols.T`` and ``dx = W2 @ cols``
    (reference: ``conv_transpose2d_backward``).
    """
    B = x.shape[0]
    T = dW2.dtype.type
    S = H * W
    G = cols.shape[2] // S
    window_offsets(H, W, sh, sw, canvas.shape[3], offs)
    for t in prange(tasks):
        dW_parts[t].fill(T(0))
        canvas[t].fill(T(0))
        n0, n1 = split(B, tasks, t)
        for g0 in range(n0, n1, G):
            g1 = min(g0 + G, n1)
            m = (g1 - g0) * S
            group_cols, group_x, group_dx = cols[t][:, :m], wide_x[t][:, :m], wide_dx[t][:, :m]
            for n in range(g0, g1):
                paste(da[n], ph, pw, canvas[t])
                im2col(canvas[t], kh, kw, offs, group_cols[:, (n - g0) * S:(n - g0 + 1) * S])
                copy_rows(x[n], group_x[:, (n - g0) * S:(n - g0 + 1) * S])
            gemm_blas(T(1), group_x, group_cols.T, T(1), dW_parts[t], blas)
            if need_dx:
                gemm_blas(T(1), W2, group_cols, T(0), group_dx, blas)
                for n in range(g0, g1):
                    copy_rows(group_dx[:, (n - g0) * S:(n - g0 + 1) * S], dx[n])
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
    "col2im_add": False, "copy_rows": False, "bias_activation_rows": False,
    "activation_grad": True, "bias_grad": True, "add_parts": True,
    "conv2d_forward": True, "conv2d_backward": True, "conv_transpose2d_forward": True,
    "conv_transpose2d_backward": True, "conv2d_forward_direct": True,
}


jit_kernels(globals(), KERNELS)
