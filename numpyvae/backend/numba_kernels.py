"""The Numba kernels behind :mod:`numpyvae.backend.numba_ops`, as plain Python functions.

Every kernel here is an ordinary Python function over NumPy arrays, written
with explicit loops. They are jitted in one place, at the bottom of this file
(:func:`_jit_all`), so that with ``NUMBA_DISABLE_JIT=1`` the very same code
runs as plain Python and can be stepped through in a debugger (slowly). The
derivations are not repeated here: each kernel names the function of
:mod:`numpyvae.backend.reference` it computes, and that docstring derives it.

Conventions
-----------
* Every kernel opens with a shape comment. ``B`` batch, ``I``/``O`` a
  layer's input/output features, ``L`` latent, ``D`` data dimension.
* Kernels write into the arrays they are given and allocate nothing.
* Dtype-generic: ``T = x.dtype.type`` and every constant is ``T(...)``, so a
  float32 kernel never meets a float64 number (which would upcast it).
* Arrays may have any strides (sliced or transposed views), except in
  :func:`gemm_blas` and the two kernels that use it, which need what BLAS
  takes (:func:`blas_layout`); the backend checks before it calls them.
* No ``fastmath``: exp and log stay exact to the last bit or two. The one
  exception is :func:`reassoc_add`, used for row sums, which lets the
  compiler keep several partial sums in a vector register (as NumPy's
  pairwise sum does) instead of one sequential chain.

The matmul
----------
``c = alpha * a @ b + beta * c`` is computed in one of three ways, all
benchmarked in ``benchmarks/bench_kernels.py``:

* :func:`gemm_blas` (the default) calls OpenBLAS's ``sgemm``/``dgemm`` (the
  copy inside NumPy, or else SciPy's, through ``scipy.linalg.cython_blas``)
  straight from jitted code, with ``alpha``, ``beta`` and transpose flags, so that
  ``dW += x.T @ da`` accumulates in place with no temporary and no copy of
  the transpose. The fused linear-layer kernels use it.
* :func:`matmul_tiled`, a cache-blocked, parallel kernel;
* :func:`matmul_loops`, the readable triple loop, for teaching.

The last two take any strides; BLAS needs one unit stride per matrix
(:func:`blas_layout`), and the backend falls back to the tiled kernel when a
view has none. BLAS measured two to three times faster than the tiled
kernel here, so it is the one the backend uses.

Threads
-------
Kernels that call BLAS take ``tasks``, the number of Numba threads: each
thread takes one block of the output (:func:`block`) and multiplies it with
a *single-threaded* BLAS call (in the forward pass it then adds the bias
and applies the activation to the same block, while it is in its cache).
The backend runs BLAS single-threaded for the duration of these
calls, so one pool of threads does all the work; see
:mod:`numpyvae.backend.numba_ops` for why.

What does not live here: argument checking, buffer management and choosing
between kernels (:mod:`numpyvae.backend.numba_ops`).
"""

from __future__ import annotations

import ctypes
import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

#: Activation codes; the order is ``reference.ACTIVATIONS``.
IDENTITY, RELU, LEAKY_RELU, TANH, SIGMOID, SOFTPLUS = range(6)

#: Rows of ``c`` per parallel task and inner-dimension block of the tiled matmul.
TILE_ROWS = 8
TILE_K = 128
#: Columns per parallel task in the Gaussian likelihood's batch sum.
COLUMN_BLOCK = 64


# --------------------------------------------------------------------------
# Low-level helpers: two tiny pieces of LLVM, each with a plain-Python twin
# --------------------------------------------------------------------------
#
# A jitted function cannot call through a raw address or reinterpret bits by
# itself; these two intrinsics do it. Each is reached through a plain Python
# function (used when the JIT is disabled) that an ``overload`` replaces in
# jitted code.


def call_blas_gemm(blas, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call the Fortran ``?gemm`` that ``blas`` names: ``C = alpha op(A) op(B) + beta C``.

    ``blas = (address, ilp64)``: where the function is, and whether its
    integers are 64-bit (ILP64, as in NumPy's own OpenBLAS) or 32-bit.
    Column-major, every argument by reference, as Fortran expects; ``a``,
    ``b``, ``c`` are addresses, ``transa``/``transb`` are ``ord('N')`` or
    ``ord('T')``. (This Python version calls it through ``ctypes``.)
    """
    fn, ilp64 = blas
    real = ctypes.c_float if isinstance(alpha, np.float32) else ctypes.c_double
    integer = ctypes.c_int64 if ilp64 else ctypes.c_int32
    ptr = ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(None, *([ptr] * 13))(fn)

    def ref(v, ctype):
        return ctypes.cast(ctypes.pointer(ctype(v)), ptr)

    proto(ref(transa, ctypes.c_char), ref(transb, ctypes.c_char), ref(m, integer),
          ref(n, integer), ref(k, integer), ref(alpha, real), ptr(a), ref(lda, integer), ptr(b),
          ref(ldb, integer), ref(beta, real), ptr(c), ref(ldc, integer))


def _gemm_typing(int_bits, fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Signature and code generator of a call to ``?gemm`` with ``int_bits``-wide integers."""
    if alpha not in (types.float32, types.float64) or beta != alpha:
        return None
    sig = types.void(fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc = args
        voidptr = ir.IntType(8).as_pointer()

        def by_ref(value, bits=None):
            if bits is not None:  # a Fortran CHARACTER (8 bits) or INTEGER
                if value.type.width > bits:
                    value = builder.trunc(value, ir.IntType(bits))
                elif value.type.width < bits:
                    value = builder.sext(value, ir.IntType(bits))
            slot = cgutils.alloca_once_value(builder, value)
            return builder.bitcast(slot, voidptr)

        def address(value):
            return builder.inttoptr(value, voidptr)

        fnty = ir.FunctionType(ir.VoidType(), [voidptr] * 13)
        callee = builder.inttoptr(fn, fnty.as_pointer())
        i = int_bits
        builder.call(callee, [
            by_ref(transa, 8), by_ref(transb, 8), by_ref(m, i), by_ref(n, i), by_ref(k, i),
            by_ref(alpha), address(a), by_ref(lda, i), address(b), by_ref(ldb, i),
            by_ref(beta), address(c), by_ref(ldc, i),
        ])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _gemm_lp64(typingctx, fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    return _gemm_typing(32, fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


@intrinsic
def _gemm_ilp64(typingctx, fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    return _gemm_typing(64, fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


@overload(call_blas_gemm, jit_options={"cache": True})
def _call_blas_gemm_jit(blas, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    def impl(blas, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        if blas[1]:
            _gemm_ilp64(blas[0], transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        else:
            _gemm_lp64(blas[0], transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    return impl


def pow2(k, T):
    """``2**k`` as the float type ``T`` (np.float32 or np.float64), ``k`` in the normal range."""
    return np.ldexp(T(1), k)


@intrinsic
def _float_from_bits(typingctx, bits):
    if bits == types.int32:
        return types.float32(bits), lambda ctx, b, sig, args: b.bitcast(args[0], ir.FloatType())
    if bits == types.int64:
        return types.float64(bits), lambda ctx, b, sig, args: b.bitcast(args[0], ir.DoubleType())
    return None


@overload(pow2, jit_options={"cache": True})
def _pow2_jit(k, T):
    # An IEEE float with a zero mantissa and exponent field e + bias is exactly 2**e.
    if T.instance_type == types.float32:
        return lambda k, T: _float_from_bits(np.int32((np.int32(k) + np.int32(127)) << 23))
    return lambda k, T: _float_from_bits(np.int64((np.int64(k) + np.int64(1023)) << 52))


# --------------------------------------------------------------------------
# Scalar functions: exp and log1p that the compiler can vectorise
# --------------------------------------------------------------------------
#
# A loop that calls the C library's exp or log1p runs one element at a time
# (Numba has no vector math library here); written as polynomials, the same
# functions run 8 or 16 elements per instruction. They are accurate to about
# 2 units in the last place, float32 and float64 alike.


def reassoc_add(a, b):
    """``a + b``, jitted with the one fastmath flag that lets a sum be vectorised (reassoc)."""
    return a + b


def exp_neg(a, T):
    """``exp(-a)`` for ``a >= 0`` in type ``T`` (0 once the result is below the normal range).

    Write ``a = n ln2 - r`` with ``n`` an integer and ``|r| <= ln2 / 2``: then
    ``exp(-a) = 2**-n * exp(r)``. ``ln2`` is split into a head with few bits
    (so ``n * head`` is exact) and a tail (Cody & Waite), and ``exp(r)`` is
    its Taylor series to ``r**12 / 12!`` (relative error below 2e-16).
    """
    amax = T(87.0) if np.finfo(T).bits == 32 else T(708.0)  # exp(-amax) is still normal
    ac = min(a, amax)
    n = np.floor(ac * T(1.4426950408889634) + T(0.5))  # np.floor keeps the type T
    r = (n * T(0.693359375) - ac) + n * T(-2.1219444005469058277e-4)
    p = T(1 / 479001600)
    p = p * r + T(1 / 39916800)
    p = p * r + T(1 / 3628800)
    p = p * r + T(1 / 362880)
    p = p * r + T(1 / 40320)
    p = p * r + T(1 / 5040)
    p = p * r + T(1 / 720)
    p = p * r + T(1 / 120)
    p = p * r + T(1 / 24)
    p = p * r + T(1 / 6)
    p = p * r + T(0.5)
    p = p * r + T(1)
    p = p * r + T(1)
    e = p * pow2(-int(n), T)
    return e if a <= amax else T(0)


def log1p_small(e, T):
    """``log(1 + e)`` for ``0 <= e <= 1`` in type ``T``.

    With ``u = 1 + e`` rounded, ``c = e - (u - 1)`` is the rounding error
    exactly, and ``log(1 + e) = log(u) + c / u`` to first order (Goldberg's
    trick behind log1p). ``log(u)`` for ``u`` in ``[1, 2]``: halve ``u`` if it
    is above ``sqrt 2`` (adding ``ln 2``), then ``log(m) = 2 atanh(s)`` with
    ``s = (m - 1)/(m + 1)``, ``|s| <= 0.172``, whose odd series in ``s``
    converges to 1e-17 by the ``s**21`` term.
    """
    u = T(1) + e
    c = e - (u - T(1))
    halve = T(u > T(1.4142135623730951))
    m = u * (T(1) - T(0.5) * halve)
    s = (m - T(1)) / (m + T(1))
    s2 = s * s
    q = T(1 / 21)
    q = q * s2 + T(1 / 19)
    q = q * s2 + T(1 / 17)
    q = q * s2 + T(1 / 15)
    q = q * s2 + T(1 / 13)
    q = q * s2 + T(1 / 11)
    q = q * s2 + T(1 / 9)
    q = q * s2 + T(1 / 7)
    q = q * s2 + T(1 / 5)
    q = q * s2 + T(1 / 3)
    q = q * s2 + T(1)
    return halve * T(0.6931471805599453) + T(2) * s * q + c / u


def activate(v, act, alpha, T):
    """One activation ``f(v)`` (reference: ``activation_forward``)."""
    if act == RELU:
        return max(v, T(0))
    if act == LEAKY_RELU:
        return v if v > T(0) else alpha * v
    if act == TANH:
        return math.tanh(v)
    if act == SIGMOID:
        e = exp_neg(abs(v), T)
        return (T(1) if v >= T(0) else e) / (T(1) + e)
    if act == SOFTPLUS:
        return max(v, T(0)) + log1p_small(exp_neg(abs(v), T), T)
    return v


def activation_slope(y, act, alpha, T):
    """``f'`` written in terms of the output ``y = f(x)`` (reference: ``activation_backward``)."""
    if act == RELU:
        return T(1) if y > T(0) else T(0)
    if act == LEAKY_RELU:
        return T(1) if y > T(0) else alpha
    if act == TANH:
        return T(1) - y * y
    if act == SIGMOID:
        return y * (T(1) - y)
    if act == SOFTPLUS:
        return -math.expm1(-y)
    return T(1)


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


def blas_layout(a):
    """How BLAS can read the 2-D array ``a``: ``(order, ld)``, order 0 if it cannot.

    order 1: each row is contiguous (C order, or some of its columns), and
    column-major BLAS sees ``a.T`` with leading dimension ``ld``; order 2:
    each column is contiguous (Fortran order, e.g. a transposed C array),
    and BLAS sees ``a`` itself. Anything else (every other column, negative
    or zero strides, an empty array) cannot be passed without a copy.
    """
    rows, cols = a.shape
    size = a.itemsize
    s0, s1 = a.strides
    if rows == 0 or cols == 0:
        return 0, 0
    if cols == 1 or s1 == size:
        if rows == 1:
            return 1, cols
        if s0 > 0 and s0 % size == 0 and s0 // size >= cols:
            return 1, s0 // size
    if rows == 1 or s0 == size:
        if cols == 1:
            return 2, rows
        if s1 > 0 and s1 % size == 0 and s1 // size >= rows:
            return 2, s1 // size
    return 0, 0


def gemm_blas(alpha, a, b, beta, c, blas):
    """``c = alpha * a @ b + beta * c`` by BLAS. a: (M, K), b: (K, N), c: (M, N).

    ``blas`` names ``sgemm``/``dgemm`` for ``c``'s dtype (see
    :func:`call_blas_gemm`); every array must pass :func:`blas_layout`.
    BLAS is column-major, and a row-major matrix is, to BLAS, its own
    transpose; so a row-major
    ``c = a b`` is handed over as ``c.T = b.T a.T``, and a transposed view
    costs a flag, not a copy.
    """
    M, K = a.shape
    N = b.shape[1]
    oa, lda = blas_layout(a)
    ob, ldb = blas_layout(b)
    oc, ldc = blas_layout(c)
    if oa == 0 or ob == 0 or oc == 0:
        raise ValueError("gemm_blas: an array is empty or has strides BLAS cannot take")
    NO, TR = ord("N"), ord("T")
    if oc == 1:  # BLAS sees c.T (N x M) = op(b) op(a)
        call_blas_gemm(blas, NO if ob == 1 else TR, NO if oa == 1 else TR, N, M, K,
                       alpha, b.ctypes.data, ldb, a.ctypes.data, lda, beta, c.ctypes.data, ldc)
    else:  # BLAS sees c (M x N) = op(a) op(b)
        call_blas_gemm(blas, NO if oa == 2 else TR, NO if ob == 2 else TR, M, N, K,
                       alpha, a.ctypes.data, lda, b.ctypes.data, ldb, beta, c.ctypes.data, ldc)


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


def bias_gradient_block(dy, y, act, alpha, da, db, j0, j1):
    """Columns ``j0:j1`` of dy, y, da: (B, O), db: (O,); ``da = dy f'(y)``, ``db += sum_n da[n]``.

    For the identity, ``da`` is ``dy`` itself and is not written. ReLU has a
    loop of its own, as in :func:`bias_activation_block`.
    """
    T = db.dtype.type
    alpha = T(alpha)
    grad = db[j0:j1]
    for n in range(dy.shape[0]):
        dy_row, y_row, da_row = dy[n, j0:j1], y[n, j0:j1], da[n, j0:j1]
        if act == IDENTITY:
            for j in range(grad.shape[0]):
                grad[j] += dy_row[j]
        elif act == RELU:
            for j in range(grad.shape[0]):
                g = dy_row[j] * (T(1) if y_row[j] > T(0) else T(0))
                da_row[j] = g
                grad[j] += g
        else:
            for j in range(grad.shape[0]):
                g = dy_row[j] * activation_slope(y_row[j], act, alpha, T)
                da_row[j] = g
                grad[j] += g


def bias_activation(out, b, act, alpha, tasks):
    """out: (B, O), b: (O,); ``out = f(out + b)`` in place, the epilogue of a linear layer."""
    for t in prange(tasks):
        j0, j1 = block(out.shape[1], tasks, t)
        bias_activation_block(out, b, act, alpha, j0, j1)


def bias_gradient(dy, y, act, alpha, da, db, tasks):
    """dy, y, da: (B, O), db: (O,); ``da = dy * f'(y)`` and ``db += sum_n da[n]`` in one pass.

    Each thread takes a block of columns, so it owns its part of ``db``: the
    reduction needs no locks and no per-thread copies.
    """
    for t in prange(tasks):
        j0, j1 = block(dy.shape[1], tasks, t)
        bias_gradient_block(dy, y, act, alpha, da, db, j0, j1)


def gemm_parallel(alpha, a, b, beta, c, blas, tasks):
    """``c = alpha a @ b + beta c`` by BLAS, one block of ``c`` per thread. a: (M, K), b: (K, N).

    The longer side of ``c`` is cut into ``tasks`` blocks (rows of ``c`` are
    rows of ``a``; columns of ``c`` are columns of ``b``), and each thread
    multiplies its block with a single-threaded BLAS call. The backend runs
    BLAS single-threaded while it calls these kernels, so that one pool of
    threads (Numba's) does all the work and none waits for another.
    """
    M, N = c.shape
    for t in prange(tasks):
        if N >= M:
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
    examples (rows), whichever side is longer: it multiplies its block with
    BLAS, then adds the bias and applies the activation there, while the
    block is still in its cache.
    """
    B, O = out.shape
    T = out.dtype.type
    for t in prange(tasks):
        if O >= B:
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
            z[n, j] = mu[n, j] + math.exp(T(0.5) * logvar[n, j]) * eps[n, j]


def reparameterize_backward(dz, logvar, eps, dmu, dlogvar):
    """dz, logvar, eps, dmu, dlogvar: (B, L); ``dmu = dz``, ``dlogvar = dz eps sigma / 2``."""
    B, L = dz.shape
    T = dmu.dtype.type
    for n in range(B):
        for j in range(L):
            dmu[n, j] = dz[n, j]
            dlogvar[n, j] = T(0.5) * dz[n, j] * eps[n, j] * math.exp(T(0.5) * logvar[n, j])


def gaussian_kl(mu, logvar, kl):
    """mu, logvar: (B, L), kl: (B,); ``kl[n] = sum_j (mu^2 + e^logvar - 1 - logvar) / 2``."""
    B, L = mu.shape
    T = kl.dtype.type
    for n in range(B):
        s = T(0)
        for j in range(L):
            m, lv = mu[n, j], logvar[n, j]
            s += T(0.5) * (m * m + math.exp(lv) - T(1) - lv)
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
            dlogvar[n, j] = dkl[n] * (T(0.5) * math.expm1(logvar[n, j]))


def latent_forward(h, eps, z, kl):
    """h: (B, 2L), eps, z: (B, L), kl: (B,). Sample and KL in one pass over ``h``.

    ``mu = h[:, :L]``, ``logvar = h[:, L:]``; ``sigma = exp(logvar / 2)`` is
    computed once and serves both: ``z = mu + sigma eps`` and, in the KL,
    ``exp(logvar) = sigma**2``.
    """
    B, L = eps.shape
    T = z.dtype.type
    for n in range(B):
        s = T(0)
        for j in range(L):
            mu, lv = h[n, j], h[n, L + j]
            sigma = math.exp(T(0.5) * lv)
            z[n, j] = mu + sigma * eps[n, j]
            s += T(0.5) * (mu * mu + sigma * sigma - T(1) - lv)
        kl[n] = s


def latent_backward(dz, h, eps, dkl, free_bits, dh):
    """dz, eps: (B, L), h, dh: (B, 2L), dkl: (B,). Both paths into ``mu`` and ``logvar``.

    Reference: ``latent_backward``. Column by column: with free bits, a
    latent dimension's batch-mean KL decides first whether its KL gradient
    is kept (``active``), then every row of that column is written.
    """
    B, L = eps.shape
    T = dh.dtype.type
    free_bits = T(free_bits)
    for j in range(L):
        active = T(1)
        if free_bits > T(0):
            s = T(0)
            for n in range(B):
                mu, lv = h[n, j], h[n, L + j]
                s += T(0.5) * (mu * mu + math.exp(lv) - T(1) - lv)
            active = T(1) if s / T(B) > free_bits else T(0)
        for n in range(B):
            mu, lv = h[n, j], h[n, L + j]
            dh[n, j] = dz[n, j] + dkl[n] * mu * active
            through_z = T(0.5) * dz[n, j] * eps[n, j] * math.exp(T(0.5) * lv)
            dh[n, L + j] = through_z + dkl[n] * (T(0.5) * math.expm1(lv)) * active


def kl_per_dimension(mu, logvar, out):
    """mu, logvar: (B, L), out: (L,); the batch-mean KL of each latent dimension."""
    B, L = mu.shape
    T = out.dtype.type
    for j in range(L):
        out[j] = T(0)
    for n in range(B):
        for j in range(L):
            m, lv = mu[n, j], logvar[n, j]
            out[j] += T(0.5) * (m * m + math.exp(lv) - T(1) - lv)
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
            term = max(v, T(0)) - x[n, d] * v + log1p_small(exp_neg(abs(v), T), T)
            s = reassoc_add(s, term)
        nll[n] = s


def bernoulli_nll_backward(dnll, logits, x, dlogits):
    """dnll: (B,), logits, x, dlogits: (B, D); ``dlogits = dnll * (sigmoid(l) - x)``."""
    B, D = logits.shape
    T = dlogits.dtype.type
    for n in prange(B):
        for d in range(D):
            v = logits[n, d]
            e = exp_neg(abs(v), T)
            p = (T(1) if v >= T(0) else e) / (T(1) + e)
            dlogits[n, d] = dnll[n] * (p - x[n, d])


def bernoulli_nll_and_grad(logits, x, scale, nll, dlogits):
    """logits, x, dlogits: (B, D), nll: (B,). The NLL and ``scale`` times its gradient, one pass.

    One ``e = exp(-|l|)`` per pixel serves both: the loss needs
    ``log(1 + e)`` and the gradient ``sigmoid(l) - x`` with
    ``sigmoid(l) = 1/(1 + e)`` for ``l >= 0`` and ``e/(1 + e)`` below.
    """
    B, D = logits.shape
    T = nll.dtype.type
    scale = T(scale)
    for n in prange(B):
        s = T(0)
        for d in range(D):
            v = logits[n, d]
            xv = x[n, d]
            e = exp_neg(abs(v), T)
            s = reassoc_add(s, max(v, T(0)) - xv * v + log1p_small(e, T))
            p = (T(1) if v >= T(0) else e) / (T(1) + e)
            dlogits[n, d] = scale * (p - xv)
        nll[n] = s


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
            s = reassoc_add(s, T(0.5) * (T(1.8378770664093453) + lv + r * r * math.exp(-lv)))
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
        s = T(0)
        for d in range(D):
            k = 0 if P == 1 else d
            r = x[n, d] - mean[n, d]
            s = reassoc_add(s, T(0.5) * (T(1.8378770664093453) + logvar[k] + r * r * inv_var[k]))
            dmean[n, d] = scale * (-r * inv_var[k])
        nll[n] = s
    if want_dlogvar:
        # Column blocks: each thread owns its columns of the batch sum.
        for block in prange((D + COLUMN_BLOCK - 1) // COLUMN_BLOCK):
            d0 = block * COLUMN_BLOCK
            d1 = min(d0 + COLUMN_BLOCK, D)
            grad, iv = dlogvar[d0:d1], inv_var[d0:d1]
            for n in range(B):
                x_row, mean_row = x[n, d0:d1], mean[n, d0:d1]
                for d in range(grad.shape[0]):
                    r = x_row[d] - mean_row[d]
                    grad[d] += scale * (T(0.5) * (T(1) - r * r * iv[d]))


# --------------------------------------------------------------------------
# Optimizer updates, fused over one flat buffer of all parameters
# --------------------------------------------------------------------------


def adam_update(param, grad, m, v, beta1, beta2, eps, weight_decay, decoupled, shrink, step,
                sqrt_bias2):
    """param, grad, m, v: (P,). One Adam/AdamW step in one pass (reference: ``adam_update``).

    The scalars that depend on the step number come in computed (in float64,
    then rounded to the parameters' dtype here, exactly as the reference
    rounds them): ``shrink = 1 - lr * weight_decay`` (AdamW),
    ``step = lr / (1 - beta1**t)`` and ``sqrt_bias2 = sqrt(1 - beta2**t)``.
    Each element is read once and written once, where the NumPy expression
    takes a dozen passes over the buffers.
    """
    T = param.dtype.type
    b1, c1 = T(beta1), T(1 - beta1)
    b2, c2 = T(beta2), T(1 - beta2)
    eps, wd, shrink, step, sqrt_bias2 = T(eps), T(weight_decay), T(shrink), T(step), T(sqrt_bias2)
    for i in prange(param.shape[0]):
        p = param[i]
        g = grad[i]
        if decoupled:
            p = p * shrink
        elif wd != T(0):
            g = g + wd * p
        mi = b1 * m[i] + c1 * g
        vi = b2 * v[i] + c2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] = p - step * mi / (math.sqrt(vi) / sqrt_bias2 + eps)


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """param, grad, velocity: (P,). One SGD step (reference: ``sgd_update``)."""
    T = param.dtype.type
    lr, mom, wd = T(lr), T(momentum), T(weight_decay)
    for i in prange(param.shape[0]):
        g = grad[i] + wd * param[i] if wd != T(0) else grad[i]
        if mom != T(0):
            vi = mom * velocity[i] + g
            velocity[i] = vi
            g = g + mom * vi if nesterov else vi
        param[i] -= lr * g


# --------------------------------------------------------------------------
# Jitting, in one place
# --------------------------------------------------------------------------
#
# cache=True keeps the compiled machine code on disk (next to this file, in
# __pycache__), so a second run loads instead of compiling.
# error_model="numpy" makes x / 0 give inf or nan, as NumPy does, instead of
# raising; the check for it would also stop loops from vectorising.

_SERIAL = {"cache": True, "nogil": True, "error_model": "numpy"}
_PARALLEL = {**_SERIAL, "parallel": True}

#: The kernels, and whether each runs its outer loop on several threads.
KERNELS = {
    "matmul_loops": True, "matmul_tiled": True, "gemm_blas": False, "blas_layout": False,
    "activate": False, "activation_slope": False, "exp_neg": False, "log1p_small": False,
    "activation_forward": True, "activation_backward": True, "block": False,
    "bias_activation_block": False, "bias_gradient_block": False, "bias_activation": True,
    "gemm_parallel": True, "linear_forward": True,
    "bias_gradient": True, "linear_backward": False,
    "reparameterize": False, "reparameterize_backward": False, "gaussian_kl": False,
    "gaussian_kl_backward": False, "latent_forward": False, "latent_backward": False,
    "kl_per_dimension": False,
    "bernoulli_nll": True, "bernoulli_nll_backward": True, "bernoulli_nll_and_grad": True,
    "gaussian_nll": True, "gaussian_nll_and_grad": True,
    "adam_update": True, "sgd_update": True,
}


def _jit_all():
    namespace = globals()
    namespace["reassoc_add"] = numba.njit(fastmath={"reassoc", "nsz"}, **_SERIAL)(reassoc_add)
    for name, parallel in KERNELS.items():
        namespace[name] = numba.njit(**(_PARALLEL if parallel else _SERIAL))(namespace[name])


_jit_all()
