"""BLAS from jitted code: finding ``sgemm``/``dgemm``, calling them by address, the LLVM it takes.

The plumbing under the kernels of :mod:`numpyvae.fast.numba_kernels`,
kept apart from the arithmetic:

* :func:`call_blas_gemm` calls the Fortran ``?gemm`` at a raw address, and
  :func:`pow2` builds ``2**k`` from its bits: the two small pieces of LLVM a
  jitted function cannot express by itself, each with a plain-Python twin
  (used when the JIT is disabled) that an ``overload`` replaces in jitted code;
* :func:`gemm_blas`: ``c = alpha a @ b + beta c`` for row- or column-major
  views, with :func:`blas_layout` saying how BLAS can read an array;
* which BLAS library is found (:data:`GEMM`, :data:`BLAS`): on an Intel
  CPU, Intel MKL when it is installed (a dependency of the package on
  x86-64 Linux; ``pip install mkl`` elsewhere), loaded through its single
  dynamic library ``libmkl_rt`` and switched to its sequential layer;
  otherwise, and on every other CPU, the OpenBLAS inside NumPy (64-bit integers; it spares importing
  scipy.linalg), or else SciPy's, through the documented
  ``scipy.linalg.cython_blas``; and :data:`THREAD_SWITCH`, the library's own
  thread count, which the backend sets to one while its kernels call BLAS
  (see :mod:`numpyvae.fast.numba_ops`). ``NUMPYVAE_BLAS=openblas`` skips
  MKL; ``NUMPYVAE_BLAS=mkl`` insists on it, whatever the CPU.

  Why by vendor: MKL takes slow code paths on CPUs that are not Intel's (on
  an AMD EPYC the default VAE's training step ran far slower with MKL than
  with NumPy's OpenBLAS), while on Intel CPUs its small products are the
  faster. ``benchmarks/bench_peers.py`` times the whole training step with
  each: the rows ``numba`` and ``numba openblas``.

What does not live here: how matrices are split between threads
(:func:`numpyvae.fast.numba_kernels.gemm_parallel`), the other matmul
kernels, and choosing between them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .numba_jit import jit_kernels

# --------------------------------------------------------------------------
# Two tiny pieces of LLVM, each with a plain-Python twin
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
# c = alpha a @ b + beta c by BLAS
# --------------------------------------------------------------------------


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
    costs a flag, not a copy. ``alpha`` and ``beta`` are taken in ``c``'s float
    type (BLAS reads them at its own width: a float64 given to ``sgemm`` would
    be read as another number).
    """
    if a.itemsize != c.itemsize or b.itemsize != c.itemsize:
        raise ValueError("gemm_blas: a, b and c must have one float dtype, the one blas is for")
    T = c.dtype.type
    alpha, beta = T(alpha), T(beta)
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
# Which BLAS: NumPy's OpenBLAS, else SciPy's
# --------------------------------------------------------------------------


def _function_address(library, name):
    function = getattr(library, name, None)
    return None if function is None else ctypes.cast(function, ctypes.c_void_p).value


def _thread_switch(library, suffix):
    """``(get, set)`` of OpenBLAS's thread count in ``library`` (or a dependency), or None."""
    for prefix in ("scipy_", ""):
        get = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
        set_ = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
        if get is not None and set_ is not None:
            get.restype = ctypes.c_int
            return get, set_
    return None


def numpy_blas():
    """The ILP64 OpenBLAS inside NumPy (PyPI wheels): ``(gemm by dtype, switch, name)`` or None."""
    try:
        try:
            from numpy._core import _multiarray_umath as core
        except ImportError:  # NumPy 1.x
            from numpy.core import _multiarray_umath as core
        library = ctypes.CDLL(core.__file__)  # dlsym also searches its dependencies
    except (ImportError, OSError, AttributeError):
        return None
    for prefix in ("scipy_", ""):
        sgemm = _function_address(library, f"{prefix}sgemm_64_")
        dgemm = _function_address(library, f"{prefix}dgemm_64_")
        if sgemm and dgemm:
            gemm = {np.dtype(np.float32): (sgemm, 1), np.dtype(np.float64): (dgemm, 1)}
            return gemm, _thread_switch(library, "64_"), "NumPy's OpenBLAS (ILP64)"
    return None


def scipy_blas():
    """SciPy's BLAS through scipy.linalg.cython_blas: ``(gemm by dtype, switch, name)``."""
    from numba.extending import get_cython_function_address

    sgemm = get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
    dgemm = get_cython_function_address("scipy.linalg.cython_blas", "dgemm")
    gemm = {np.dtype(np.float32): (sgemm, 0), np.dtype(np.float64): (dgemm, 0)}

    class DlInfo(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                    ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

    switch = None
    try:  # the wrapper's shared library, whose dependencies include the BLAS
        info = DlInfo()
        if ctypes.CDLL(None).dladdr(ctypes.c_void_p(dgemm), ctypes.byref(info)):
            switch = _thread_switch(ctypes.CDLL(info.fname.decode()), "")
    except (OSError, AttributeError, TypeError):
        pass
    return gemm, switch, "SciPy's BLAS (scipy.linalg.cython_blas)"


#: MKL's codes (mkl_service.h): its sequential threading layer; its integer widths.
MKL_THREADING_SEQUENTIAL, MKL_INTERFACE_LP64, MKL_INTERFACE_ILP64 = 1, 0, 1
#: The environment variable that chooses the BLAS: "mkl", "openblas", or unset (by the CPU).
BLAS_ENV = "NUMPYVAE_BLAS"


def cpu_vendor(cpuinfo="/proc/cpuinfo") -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``, ...), or "" if unknown."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return "GenuineIntel" if "intel" in platform.processor().lower() else ""


def _mkl_library():
    """``libmkl_rt`` (the pip or conda package's lib folder, else the system's), or None."""
    names = ("libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.2.dylib", "mkl_rt.2.dll")
    folders = dict.fromkeys(Path(p) / sub for p in (sys.prefix, sys.base_prefix)
                            for sub in ("lib", "Library/bin"))
    candidates = [str(f / n) for f in folders for n in names if (f / n).is_file()]
    found = ctypes.util.find_library("mkl_rt")
    for path in [*candidates, *([found] if found else [])]:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _no_threads():
    """A :data:`THREAD_SWITCH` for a sequential BLAS: one thread, nothing to switch."""
    return (lambda: 1), (lambda n: None)


def mkl_blas():
    """Intel MKL, sequential: ``(gemm by dtype, switch, name)``, or None if absent or threaded.

    MKL runs on its sequential layer (no threads of its own: the kernels cut
    the work between Numba's threads). If MKL was already set to a threaded
    layer in this process (by another library), it is not used.
    """
    library = _mkl_library()
    if library is None:
        return None
    try:
        set_layer, set_interface = library.MKL_Set_Threading_Layer, library.MKL_Set_Interface_Layer
        sgemm, dgemm = (_function_address(library, n) for n in ("sgemm_", "dgemm_"))
    except AttributeError:
        return None
    set_layer.restype = set_interface.restype = ctypes.c_int
    if set_layer(ctypes.c_int(MKL_THREADING_SEQUENTIAL)) != MKL_THREADING_SEQUENTIAL:
        return None
    interface = set_interface(ctypes.c_int(MKL_INTERFACE_LP64)) & 1
    if not (sgemm and dgemm):
        return None
    gemm = {np.dtype(np.float32): (sgemm, interface), np.dtype(np.float64): (dgemm, interface)}
    version = ""
    try:
        get_version = library.MKL_Get_Version_String
        buffer = ctypes.create_string_buffer(200)
        get_version(buffer, ctypes.c_int(len(buffer)))
        words = buffer.value.decode(errors="replace").split()
        version = " " + words[words.index("Version") + 1].split("-")[0]
    except (AttributeError, OSError, ValueError, IndexError):
        pass
    ints = "ILP64" if interface == MKL_INTERFACE_ILP64 else "LP64"
    return gemm, _no_threads(), f"Intel MKL{version} (sequential, {ints})"


def choose_blas(choice=None):
    """The BLAS the kernels call: ``(gemm by dtype, switch, name)``; see the module docstring.

    ``choice`` (default ``$NUMPYVAE_BLAS``): ``"mkl"``, ``"openblas"``, or
    empty for MKL on an Intel CPU when it is installed, else OpenBLAS.
    """
    choice = (os.environ.get(BLAS_ENV, "") if choice is None else choice).strip().lower()
    if choice not in ("", "mkl", "openblas"):
        raise ValueError(f"{BLAS_ENV}={choice!r}: expected 'mkl' or 'openblas' (or unset)")
    if choice == "" and cpu_vendor() != "GenuineIntel":
        choice = "openblas"  # MKL's code paths for other vendors' CPUs are slow
    mkl = mkl_blas() if choice != "openblas" else None
    if choice == "mkl" and mkl is None:
        raise ImportError(f"{BLAS_ENV}=mkl, but Intel MKL's libmkl_rt was not found, or another "
                          'library set it to a threaded layer (pip install "mkl<2025")')
    return mkl or numpy_blas() or scipy_blas()


GEMM, THREAD_SWITCH, BLAS = choose_blas()
"""``GEMM[dtype]`` is the ``blas`` argument of :func:`gemm_blas`; ``THREAD_SWITCH`` is
``(get, set)`` of OpenBLAS's thread count, or None; ``BLAS`` names the library."""


jit_kernels(globals(), {"blas_layout": False, "gemm_blas": False})
