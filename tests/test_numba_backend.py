"""The Numba backend: every fast kernel against the reference, and the training path end to end.

Each op of :mod:`numpyvae.fast.numba_ops` is compared with the same op of
the reference on hypothesis-drawn shapes, in float64 (to 1e-12 relative) and
float32 (to 1e-5), with inputs in every memory layout (contiguous,
transposed, sliced). One layout is drawn per example for all of an op's
inputs, which bounds how many specialisations Numba has to compile. Then:
the matmul kernels, the vectorised exp/log1p, allocation-free training
steps, identical loss curves with either backend, the whole-model gradient
check on this backend, and that ``import numpyvae`` does not import Numba.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import LAYOUTS, seeds, shapes, with_layout

pytest.importorskip("numba")

import numba  # noqa: E402

from numpyvae import VAE, Adam, AdamW  # noqa: E402
from numpyvae import ops as R  # noqa: E402
from numpyvae.backend import OPS, get_backend  # noqa: E402
from numpyvae.fast import numba_blas as NB  # noqa: E402
from numpyvae.fast import numba_kernels as K  # noqa: E402
from numpyvae.fast import numba_math as M  # noqa: E402
from numpyvae.gradcheck import check_model, rel_error  # noqa: E402

N = get_backend("numba")
SCIPY_GEMM = NB.scipy_blas()[0]  # the fallback BLAS (32-bit integers), tested alongside
NUMPY_GEMM = (NB.numpy_blas() or (SCIPY_GEMM,))[0]  # NumPy's OpenBLAS (64-bit integers)

DTYPES = (np.float32, np.float64)
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

dtypes = st.sampled_from(DTYPES)
layouts = st.sampled_from(LAYOUTS)


def assert_close(actual, expected, what=""):
    """Same dtype as the reference, and equal to the dtype's tolerance (relative to the scale)."""
    if expected is None:
        assert actual is None, what
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = rel_error(actual, expected)
    assert err <= TOL[expected.dtype], f"{what}: relative error {err:.3g} ({expected.dtype})"


def draw_array(draw, shape, dtype, layout, low=-2.0, high=2.0):
    rng = np.random.default_rng(draw(seeds()))
    return with_layout(rng.uniform(low, high, size=shape).astype(dtype), layout)


def fresh(a):
    """A C-ordered copy (so the reference and the backend never share an output)."""
    return np.array(a, order="C", copy=True)


# --------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------


def test_the_numba_backend_takes_every_call_of_the_reference():
    # Each op's parameters begin with the reference's, the same names, kinds and
    # defaults; any more are optional output arrays (default None).
    assert N.NAME == "numba"
    assert N.ACTIVATIONS == R.ACTIVATIONS
    for op in OPS:
        ref = list(inspect.signature(getattr(R, op)).parameters.values())
        fast = list(inspect.signature(getattr(N, op)).parameters.values())
        assert fast[:len(ref)] == ref, op
        assert all(p.default is None for p in fast[len(ref):]), op


def test_output_arrays_are_written_and_returned():
    """The fast path's own calling form: ``out=``, ``dx=``, ... given are written into."""
    rng = np.random.default_rng(0)
    B, n_in, n_out, L, D = 4, 5, 3, 2, 6
    x, W, b = rng.standard_normal((B, n_in)), rng.standard_normal((n_in, n_out)), \
        rng.standard_normal(n_out)
    h, eps, dz, dkl = (rng.standard_normal(s) for s in ((B, 2 * L), (B, L), (B, L), (B,)))
    logits, target = 3 * rng.standard_normal((B, D)), rng.random((B, D))
    mean, obs, obs_logvar = (rng.standard_normal(s) for s in ((B, D), (B, D), (D,)))

    def buffer(*shape):
        return np.full(shape, np.nan)  # garbage that must be overwritten

    out = buffer(B, n_in)
    assert N.activation_forward(x, "tanh", out=out) is out
    np.testing.assert_allclose(out, np.tanh(x), rtol=1e-14)
    out = buffer(B, n_out)
    assert N.linear_forward(x, W, b, out=out) is out
    np.testing.assert_allclose(out, x @ W + b, rtol=1e-13)
    y = R.linear_forward(x, W, b, "tanh")
    dx, dW, db = buffer(B, n_in), np.zeros_like(W), np.zeros_like(b)
    assert N.linear_backward(y, x, W, y, dW, db, "tanh", dx=dx) is dx
    np.testing.assert_allclose(dx, R.linear_backward(y, x, W, y, dW.copy(), db.copy(), "tanh"),
                               rtol=1e-13)
    z, kl = buffer(B, L), buffer(B)
    got_z, got_kl = N.latent_forward(h, eps, z=z, kl=kl)
    assert got_z is z and got_kl is kl
    np.testing.assert_allclose(z, R.latent_forward(h, eps)[0], rtol=1e-14)
    dh = buffer(B, 2 * L)
    assert N.latent_backward(dz, h, eps, dkl, dh=dh) is dh
    np.testing.assert_allclose(dh, R.latent_backward(dz, h, eps, dkl), rtol=1e-13)
    nll, dlogits = buffer(B), buffer(B, D)
    got = N.bernoulli_nll_and_grad(logits, target, 0.5, nll=nll, dlogits=dlogits)
    assert got[0] is nll and got[1] is dlogits
    np.testing.assert_allclose(dlogits, R.bernoulli_nll_and_grad(logits, target, 0.5)[1],
                               rtol=1e-13)
    nll, dmean = buffer(B), buffer(B, D)
    got = N.gaussian_nll_and_grad(mean, obs_logvar, obs, 0.5, None, nll=nll, dmean=dmean)
    assert got[0] is nll and got[1] is dmean
    np.testing.assert_allclose(nll, R.gaussian_nll(mean, obs_logvar, obs), rtol=1e-13)
    # Where the kernels do not take the arrays, the reference's result is written instead.
    out = np.full((B, n_out), np.nan, dtype=np.float32)
    assert N.linear_forward(x, W, b, out=out) is out  # float64 inputs, a float32 output
    np.testing.assert_allclose(out, x @ W + b, rtol=1e-6)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_convolutions_write_into_given_output_arrays(transposed):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 9, 8)).astype(np.float32)
    W = rng.standard_normal((3, 2, 3, 3) if transposed else (2, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    if transposed:
        forward, backward = N.conv_transpose2d_forward, N.conv_transpose2d_backward
        geometry, ref_forward = (2, 1, 1), R.conv_transpose2d_forward
    else:
        forward, backward = N.conv2d_forward, N.conv2d_backward
        geometry, ref_forward = (2, 1), R.conv2d_forward
    y = ref_forward(x, W, b, *geometry, activation="relu")
    out = np.full_like(y, np.nan)
    assert forward(x, W, b, *geometry, activation="relu", out=out) is out
    assert_close(out, y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = np.full_like(x, np.nan)
    got = backward(dy, x, W, y, np.zeros_like(W), np.zeros_like(b), *geometry[:2],
                   activation="relu", dx=dx)
    assert got is dx
    assert_close(dx, backward(dy, x, W, y, np.zeros_like(W), np.zeros_like(b), *geometry[:2],
                              activation="relu"))


def test_importing_numpyvae_neither_imports_nor_compiles_numba():
    code = ("import sys, numpyvae; m = numpyvae.VAE(8, (4,), 2, backend='numpy'); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('numba', 'llvmlite') "
            "or k.endswith('numba_ops')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("NUMPYVAE_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip() == "[]"


def test_unknown_activation_and_matmul_are_clear_errors():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        N.activation_forward(x, "gelu")
    with pytest.raises(ValueError, match="unknown matmul 'cuda'"):
        N.set_matmul("cuda")


# --------------------------------------------------------------------------
# Activations and the linear layer
# --------------------------------------------------------------------------


@given(shape=shapes(), dtype=dtypes, layout=layouts, act=st.sampled_from(R.ACTIVATIONS),
       data=st.data())
def test_activations_match_the_reference(shape, dtype, layout, act, data):
    x = draw_array(data.draw, shape, dtype, layout, -4, 4)
    y = R.activation_forward(x, act, 0.1)
    dy = draw_array(data.draw, shape, dtype, layout)
    out = np.empty(shape, dtype)
    assert N.activation_forward(x, act, 0.1, out=out) is out
    assert_close(out, y, f"{act} forward")
    y_in = with_layout(y, layout)
    assert_close(N.activation_backward(dy, y_in, act, 0.1),
                 R.activation_backward(dy, y_in, act, 0.1), f"{act} backward")


@given(shape=shapes(), n_out=st.integers(1, 9), dtype=dtypes, layout=layouts,
       act=st.sampled_from(R.ACTIVATIONS), need_dx=st.booleans(), data=st.data())
def test_linear_forward_and_backward_match_the_reference(shape, n_out, dtype, layout, act,
                                                         need_dx, data):
    B, n_in = shape
    x = draw_array(data.draw, (B, n_in), dtype, layout)
    W = draw_array(data.draw, (n_in, n_out), dtype, layout)
    b = draw_array(data.draw, (n_out,), dtype, "contiguous")
    y = R.linear_forward(x, W, b, act, 0.1)
    assert_close(N.linear_forward(x, W, b, act, 0.1), y, "linear forward")

    dy = draw_array(data.draw, (B, n_out), dtype, layout)
    y_in = with_layout(y, layout)
    dW0 = draw_array(data.draw, W.shape, dtype, "contiguous")  # gradients accumulate
    db0 = draw_array(data.draw, b.shape, dtype, "contiguous")
    dW_ref, db_ref, dW, db = fresh(dW0), fresh(db0), fresh(dW0), fresh(db0)
    dx_ref = R.linear_backward(dy, x, W, y_in, dW_ref, db_ref, act, 0.1, need_dx=need_dx)
    dx = N.linear_backward(dy, x, W, y_in, dW, db, act, 0.1, need_dx=need_dx)
    assert_close(dx, dx_ref, "dx")
    assert_close(dW, dW_ref, "dW")
    assert_close(db, db_ref, "db")


@pytest.mark.parametrize("method", N.MATMUL_METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_matmul_method_gives_the_same_linear_layer(method, dtype):
    rng = np.random.default_rng(1)
    x, W, b = (rng.standard_normal(s).astype(dtype) for s in ((9, 13), (13, 70), (70,)))
    dy = rng.standard_normal((9, 70)).astype(dtype)
    old = N.set_matmul(method)
    try:
        assert N.get_matmul() == method
        y = N.linear_forward(x, W, b, "relu")
        dW, db = np.zeros_like(W), np.zeros_like(b)
        dx = N.linear_backward(dy, x, W, y, dW, db, "relu")
        product = N.matmul(x, W)
    finally:
        N.set_matmul(old)
    y_ref = R.linear_forward(x, W, b, "relu")
    dW_ref, db_ref = np.zeros_like(W), np.zeros_like(b)
    assert_close(y, y_ref)
    assert_close(dx, R.linear_backward(dy, x, W, y_ref, dW_ref, db_ref, "relu"))
    assert_close(dW, dW_ref)
    assert_close(db, db_ref)
    assert_close(product, x @ W)


#: Layouts of (a, b) in the products of a training step (x W, x.T da, da W.T) and beyond.
LAYOUT_PAIRS = [("contiguous", "contiguous"), ("transposed", "contiguous"),
                ("contiguous", "transposed"), ("sliced", "sliced"), ("transposed", "sliced")]


@given(m=st.integers(1, 9), k=st.integers(1, 9), n=st.integers(1, 9), dtype=dtypes,
       layout=st.sampled_from(LAYOUT_PAIRS), lc=st.sampled_from(("contiguous", "transposed")),
       alpha=st.sampled_from((1.0, -0.5)), beta=st.sampled_from((0.0, 1.0, 2.5)),
       data=st.data())
def test_gemm_kernels_compute_alpha_ab_plus_beta_c_for_any_layout(m, k, n, dtype, layout, lc,
                                                                  alpha, beta, data):
    la, lb = layout
    a = draw_array(data.draw, (m, k), dtype, la)
    b = draw_array(data.draw, (k, n), dtype, lb)
    c0 = draw_array(data.draw, (m, n), dtype, "contiguous")
    expected = (alpha * (a.astype(np.float64) @ b) + beta * c0).astype(dtype)
    T = np.dtype(dtype).type
    kernels = [K.matmul_tiled, K.matmul_loops]
    if all(NB.blas_layout.py_func(arr)[0] for arr in (a, b, with_layout(c0, lc))):
        for blas in {N._GEMM[np.dtype(dtype)], NUMPY_GEMM[np.dtype(dtype)],
                     SCIPY_GEMM[np.dtype(dtype)]}:  # every library: MKL, OpenBLAS, SciPy's
            tasks = data.draw(st.integers(1, 3))  # blocks of c, one per thread, even uneven
            kernels.append(lambda *args, blas=blas: NB.gemm_blas(*args, blas))
            kernels.append(lambda *args, blas=blas, t=tasks: K.gemm_parallel(*args, blas, t))
    for kernel in kernels:
        c = with_layout(c0.copy(), lc)
        if beta == 0:
            c[...] = np.nan  # beta = 0 must overwrite, never multiply, what is there
        kernel(T(alpha), a, b, T(beta), c)
        assert_close(c, expected, f"{kernel} {la} {lb} {lc}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_takes_python_floats_for_alpha_and_beta_and_refuses_mixed_dtypes(dtype):
    # BLAS reads alpha and beta at its own width: a Python float (float64) handed to
    # sgemm as it is would be read as another number, and the product come out wrong.
    rng = np.random.default_rng(3)
    a, b = rng.random((5, 7)).astype(dtype), rng.random((7, 3)).astype(dtype)
    c = np.ones((5, 3), dtype)
    NB.gemm_blas(2.0, a, b, 0.5, c, N._GEMM[np.dtype(dtype)])
    assert_close(c, (2 * (a.astype(np.float64) @ b) + 0.5).astype(dtype))
    other = a.astype(np.float64 if dtype == "float32" else np.float32)
    with pytest.raises(ValueError, match="one float dtype"):
        NB.gemm_blas(1.0, other, b, 0.0, c, N._GEMM[np.dtype(dtype)])


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 40, 400, 784])
@pytest.mark.parametrize("tasks", [1, 2, 3, 8])
def test_blocks_partition_a_range_into_aligned_pieces(n, tasks):
    pieces = [K.block.py_func(n, tasks, t) for t in range(tasks)]
    covered = [i for start, stop in pieces for i in range(start, stop)]
    assert covered == list(range(n))  # in order, once each
    assert all(start % 16 == 0 for start, stop in pieces if stop > start)


def test_the_blas_library_is_found_with_its_thread_switch():
    assert N.BLAS  # NumPy's OpenBLAS in PyPI wheels, else SciPy's
    assert N._BLAS_THREADS is not None
    get, set_ = N._BLAS_THREADS
    before = get()
    N._with_blas(lambda *args: None)  # switches to one thread and back
    assert get() == before


def test_the_blas_is_chosen_by_numpyvae_blas_and_a_bad_choice_is_named(monkeypatch):
    assert "OpenBLAS" in NB.choose_blas("openblas")[2] or "SciPy" in NB.choose_blas("openblas")[2]
    intel = NB.cpu_vendor() == "GenuineIntel"
    expected = (NB.mkl_blas() if intel else None) or NB.choose_blas("openblas")
    assert NB.choose_blas("")[2] == expected[2]
    with pytest.raises(ValueError, match=r"NUMPYVAE_BLAS='atlas': expected 'mkl' or 'openblas'"):
        NB.choose_blas("atlas")
    monkeypatch.setattr(NB, "mkl_blas", lambda: None)  # as if MKL were not installed
    with pytest.raises(ImportError, match=r"NUMPYVAE_BLAS=mkl, but Intel MKL.*pip install"):
        NB.choose_blas("mkl")
    assert NB.choose_blas("")[2] == NB.choose_blas("openblas")[2]


def test_mkl_is_the_default_only_on_intel_cpus(monkeypatch, tmp_path):
    mkl = ({}, NB._no_threads(), "Intel MKL (sequential, LP64)")
    monkeypatch.setattr(NB, "mkl_blas", lambda: mkl)  # as if MKL were installed
    for vendor, mkl_chosen in (("GenuineIntel", True), ("AuthenticAMD", False), ("", False)):
        monkeypatch.setattr(NB, "cpu_vendor", lambda vendor=vendor: vendor)
        name = NB.choose_blas("")[2]
        assert name.startswith("Intel MKL") == mkl_chosen, (vendor, name)
        assert NB.choose_blas("mkl")[2].startswith("Intel MKL")  # asked for: whatever the CPU
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n")
    monkeypatch.undo()
    assert NB.cpu_vendor(str(cpuinfo)) == "AuthenticAMD"


def test_openblas_and_the_default_blas_train_to_the_same_losses():
    # In fresh processes, as NUMPYVAE_BLAS is read when the backend is imported.
    import json
    import subprocess
    import sys

    code = (
        "import json, numpy as np, numpyvae\n"
        "from numpyvae.fast import numba_ops\n"
        "m = numpyvae.VAE(784, (400,), 8, backend='numba', dtype='float64', seed=3)\n"
        "opt = numpyvae.Adam(m.params, backend='numba')\n"
        "rng = np.random.default_rng(4)\n"
        "losses = [numpyvae.train_step(m, opt, rng.random((40, 784))).loss for _ in range(3)]\n"
        "print(json.dumps([numba_ops.BLAS, losses]))\n")
    runs = {}
    for choice in ("", "openblas"):
        env = {**os.environ, "NUMPYVAE_BLAS": choice}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=300, check=True).stdout
        runs[choice] = json.loads(out.strip().splitlines()[-1])
    assert "MKL" not in runs["openblas"][0]
    np.testing.assert_allclose(runs[""][1], runs["openblas"][1], rtol=1e-12)


def test_blas_layout_accepts_what_blas_can_stride_and_nothing_else():
    layout = NB.blas_layout.py_func
    a = np.zeros((6, 8), np.float32)
    assert layout(a) == (1, 8)
    assert layout(a.T) == (2, 8)
    assert layout(a[:, 2:5]) == (1, 8)  # a column slice: rows still contiguous
    assert layout(a[1:4].T) == (2, 8)
    assert layout(a[::2]) == (1, 16)
    assert layout(a[:, ::2]) == (0, 0)  # no unit stride
    assert layout(a[::-1]) == (0, 0)  # negative stride
    assert layout(np.broadcast_to(a[:1], (6, 8))) == (0, 0)  # zero stride
    assert layout(a[:0]) == (0, 0)  # empty


# --------------------------------------------------------------------------
# The latent layer
# --------------------------------------------------------------------------


@given(shape=shapes(), dtype=dtypes, layout=layouts, free_bits=st.sampled_from((0.0, 0.3)),
       data=st.data())
def test_latent_ops_match_the_reference(shape, dtype, layout, free_bits, data):
    B, L = shape
    h = draw_array(data.draw, (B, 2 * L), dtype, layout)
    mu, logvar = h[:, :L], h[:, L:]  # the views the model passes
    eps, dz = (draw_array(data.draw, (B, L), dtype, layout) for _ in range(2))
    dkl = draw_array(data.draw, (B,), dtype, "contiguous")

    def arrays_of(result):
        return [result] if isinstance(result, np.ndarray) else list(result)

    for got, want, what in [
        (N.latent_forward(h, eps), R.latent_forward(h, eps), "latent_forward"),
        (N.latent_backward(dz, h, eps, dkl, free_bits),
         R.latent_backward(dz, h, eps, dkl, free_bits), "latent_backward"),
        (N.reparameterize(mu, logvar, eps), R.reparameterize(mu, logvar, eps), "reparam"),
        (N.reparameterize_backward(dz, logvar, eps),
         R.reparameterize_backward(dz, logvar, eps), "reparam backward"),
        (N.gaussian_kl(mu, logvar), R.gaussian_kl(mu, logvar), "kl"),
        (N.gaussian_kl_backward(dkl, mu, logvar), R.gaussian_kl_backward(dkl, mu, logvar),
         "kl backward"),
        (N.kl_per_dimension(mu, logvar), R.kl_per_dimension(mu, logvar), "kl per dim"),
    ]:
        for g, w in zip(arrays_of(got), arrays_of(want), strict=True):
            assert_close(g, w, what)


# --------------------------------------------------------------------------
# Reconstruction terms
# --------------------------------------------------------------------------


@given(shape=shapes(max_features=40), dtype=dtypes, layout=layouts, spread=st.sampled_from(
       (1.0, 30.0, 120.0)), scale=st.floats(0.01, 2.0), data=st.data())
def test_bernoulli_terms_match_the_reference_for_every_logit(shape, dtype, layout, spread, scale,
                                                             data):
    # spread 120 reaches logits where exp underflows in float32 (and sigmoid saturates).
    logits = draw_array(data.draw, shape, dtype, layout, -spread, spread)
    target = draw_array(data.draw, shape, dtype, layout, 0.0, 1.0)
    dnll = draw_array(data.draw, shape[:1], dtype, "contiguous")
    assert_close(N.bernoulli_nll(logits, target), R.bernoulli_nll(logits, target), "nll")
    assert_close(N.bernoulli_nll_backward(dnll, logits, target),
                 R.bernoulli_nll_backward(dnll, logits, target), "nll backward")
    nll, dlogits = np.empty(shape[0], dtype), np.empty(shape, dtype)
    got = N.bernoulli_nll_and_grad(logits, target, scale, nll=nll, dlogits=dlogits)
    want = R.bernoulli_nll_and_grad(logits, target, scale)
    assert got[0] is nll and got[1] is dlogits
    assert_close(nll, want[0], "fused nll")
    assert_close(dlogits, want[1], "fused dlogits")


@given(shape=shapes(), dtype=dtypes, layout=layouts, learned=st.booleans(), data=st.data())
def test_gaussian_terms_match_the_reference(shape, dtype, layout, learned, data):
    B, D = shape
    mean, x = (draw_array(data.draw, shape, dtype, layout) for _ in range(2))
    if learned:
        logvar = draw_array(data.draw, (D,), dtype, "contiguous", -1, 1)
    else:
        logvar = np.dtype(dtype).type(-0.7)
    assert_close(N.gaussian_nll(mean, logvar, x), R.gaussian_nll(mean, logvar, x), "nll")
    dlv0 = draw_array(data.draw, (D,), dtype, "contiguous")
    dlv_ref, dlv = (fresh(dlv0), fresh(dlv0)) if learned else (None, None)
    nll_ref, dmean_ref = R.gaussian_nll_and_grad(mean, logvar, x, 0.3, dlv_ref)
    nll, dmean = N.gaussian_nll_and_grad(mean, logvar, x, 0.3, dlv)
    assert_close(nll, nll_ref, "fused nll")
    assert_close(dmean, dmean_ref, "fused dmean")
    assert_close(dlv, dlv_ref, "dlogvar (accumulated)")


@numba.njit
def _exp_neg_and_log1p(a, e, out_exp, out_log):
    for i in range(a.shape[0]):
        out_exp[i] = M.exp_neg(a[i], a.dtype.type)
    for i in range(e.shape[0]):
        out_log[i] = M.log1p_small(e[i], e.dtype.type)


@pytest.mark.parametrize("jitted", [False, True], ids=["as Python", "jitted"])
def test_vectorised_exp_and_log1p_are_accurate_to_a_few_ulp(jitted):
    # Jitted, the polynomials may use fused multiply-adds (their ``contract``
    # flag), so the compiled code is checked as well as the Python it comes from.
    a = np.concatenate([np.linspace(0, 1, 3001), np.linspace(1, 700, 3001)])
    e = np.linspace(0, 1, 3001)

    def exp_and_log(dtype):
        T = np.dtype(dtype).type
        if jitted:
            out_exp, out_log = np.empty(a.size, dtype), np.empty(e.size, dtype)
            _exp_neg_and_log1p(a.astype(dtype), e.astype(dtype), out_exp, out_log)
            return out_exp.astype(np.float64), out_log.astype(np.float64)
        exp_neg, log1p_small = M.exp_neg.py_func, M.log1p_small.py_func
        return (np.array([exp_neg(T(v), T) for v in a.astype(dtype)], dtype=np.float64),
                np.array([log1p_small(T(v), T) for v in e.astype(dtype)], dtype=np.float64))

    def check(dtype, ulps):
        got_exp, got_log = exp_and_log(dtype)
        tiny = np.finfo(dtype).tiny
        got = got_exp
        want = np.exp(-a.astype(dtype).astype(np.float64))
        normal = want >= tiny * 2**24
        rel = np.abs(got - want)[normal] / want[normal]
        assert rel.max() <= ulps * np.finfo(dtype).eps, f"exp {dtype}: {rel.max():.3g}"
        assert np.all(got[want < tiny] == 0)  # below the normal range: 0
        got = got_log
        want = np.log1p(e.astype(dtype).astype(np.float64))
        rel = np.abs(got - want)[1:] / want[1:]
        assert rel.max() <= ulps * np.finfo(dtype).eps, f"log1p {dtype}: {rel.max():.3g}"
        assert got[0] == 0

    check(np.float64, 4)
    check(np.float32, 4)
    # ... and the jitted kernels compute the same (up to the order of a row's sum).
    logits = np.linspace(-100, 100, 2001).reshape(1, -1)
    target = np.zeros_like(logits)
    assert_close(N.bernoulli_nll(logits, target), R.bernoulli_nll(logits, target))


@numba.njit
def _exp_and_expm1(x, out_exp, out_expm1):
    for i in range(x.shape[0]):
        out_exp[i] = M.exp_any(x[i], x.dtype.type)
        out_expm1[i] = M.expm1_given_exp(x[i], out_exp[i], x.dtype.type)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_and_expm1_of_either_sign_are_accurate_to_a_few_ulp(dtype):
    # The latent layer's sigma = exp(logvar / 2) and (e^logvar - 1) / 2 by these
    # polynomials: across the whole float range, at its ends, and near zero,
    # where exp(x) - 1 would lose every digit that expm1 keeps (expm1 from the
    # polynomial exp, as the kernels call it).
    T = np.dtype(dtype).type
    rng = np.random.default_rng(0)
    top = np.log(np.finfo(dtype).max)
    x = np.concatenate([
        rng.uniform(-800, 800, 20_000), rng.uniform(-1, 1, 20_000), rng.uniform(-1e-6, 1e-6, 2_000),
        np.linspace(top - 1, top + 1, 1001), np.linspace(-110, -80, 1001),
        np.linspace(-750, -700, 1001), [0.0, -0.0, 0.5, -0.5, np.inf, -np.inf, np.nan],
    ]).astype(dtype)
    got_exp, got_expm1 = np.empty_like(x), np.empty_like(x)
    _exp_and_expm1(x, got_exp, got_expm1)
    with np.errstate(over="ignore"):
        for got, want, ulps in ((got_exp, np.exp(x.astype(np.float64)), 2),
                                (got_expm1, np.expm1(x.astype(np.float64)), 4)):
            want_t = want.astype(dtype)
            finite = np.isfinite(want_t) & (np.abs(want_t) >= np.finfo(dtype).tiny)
            err = np.abs(got[finite].astype(np.float64) - want[finite])
            assert np.max(err / np.spacing(np.abs(want_t[finite])).astype(np.float64)) <= ulps
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want_t))  # the same overflow
            assert np.isnan(got[-1])
            subnormal = np.isfinite(want_t) & (np.abs(want_t) < np.finfo(dtype).tiny)
            gap = np.abs(got[subnormal] - want_t[subnormal])
            assert np.all(gap <= 2 * np.finfo(dtype).smallest_subnormal)
    assert got_expm1[x == 0].tolist() == [0, 0] and T(got_expm1[x == -np.inf][0]) == -1


# --------------------------------------------------------------------------
# Optimizer updates
# --------------------------------------------------------------------------


@given(n=st.integers(1, 300), dtype=dtypes, decoupled=st.booleans(),
       weight_decay=st.sampled_from((0.0, 0.05)), step=st.integers(1, 50), seed=seeds())
def test_adam_update_matches_the_reference(n, dtype, decoupled, weight_decay, step, seed):
    check_adam_update(n, dtype, (1e-2, 0.9, 0.999, 1e-8, weight_decay, step, decoupled), seed)


def check_adam_update(n, dtype, args, seed):
    """Both backends' Adam step on the same random buffers of ``n`` elements."""
    rng = np.random.default_rng(seed)
    p, g, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    ref = [fresh(a) for a in (p, g, m, v)]
    got = [fresh(a) for a in (p, g, m, v)]
    R.adam_update(*ref, *args)
    N.adam_update(*got, *args)
    for a, b, what in zip(got, ref, "pgmv", strict=True):
        assert_close(a, b, what)


@given(n=st.integers(1, 300), dtype=dtypes, momentum=st.sampled_from((0.0, 0.9)),
       nesterov=st.booleans(), weight_decay=st.sampled_from((0.0, 0.01)), seed=seeds())
def test_sgd_update_matches_the_reference(n, dtype, momentum, nesterov, weight_decay, seed):
    rng = np.random.default_rng(seed)
    p, g, vel = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    ref, got = [fresh(a) for a in (p, g, vel)], [fresh(a) for a in (p, g, vel)]
    R.sgd_update(*ref, 0.1, momentum, nesterov and momentum > 0, weight_decay)
    N.sgd_update(*got, 0.1, momentum, nesterov and momentum > 0, weight_decay)
    for a, b in zip(got, ref, strict=True):
        assert_close(a, b)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_update_of_a_buffer_longer_than_a_chunk_matches_the_reference(decoupled):
    # The kernel cuts a long buffer into chunks shared out between threads;
    # the reference updates it in one piece. Every element's update is the same.
    n = 3 * K.ADAM_CHUNK + 777
    check_adam_update(n, np.float32, (1e-2, 0.9, 0.999, 1e-8, 0.05, 7, decoupled), seed=9)


def test_updates_of_shaped_and_strided_parameters_fall_back_correctly():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((4, 10))
    p, g, m, v = big[:, ::2], rng.standard_normal((4, 5)), np.zeros((4, 5)), np.zeros((4, 5))
    p_ref = p.copy()
    R.adam_update(p_ref, g, m.copy(), v.copy(), 0.1, 0.9, 0.999, 1e-8, 0.0, 1, False)
    N.adam_update(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, 1, False)
    assert_close(p, p_ref)  # written through the view


# --------------------------------------------------------------------------
# The training path end to end
# --------------------------------------------------------------------------


def _binary_data(n, d, seed=0):
    return (np.random.default_rng(seed).random((n, d)) > 0.5)


def test_a_training_step_allocates_nothing():
    # The one-call step keeps every array it needs between steps. (The per-op
    # path, model.loss_and_grads, allocates each op's results afresh.)
    from numpyvae.fast.step import train_step

    model = VAE(784, (64,), 8, backend="numba", dtype="float32", seed=0)
    opt = Adam(model.params, backend="numba")
    x = _binary_data(64, 784).astype(np.float32)
    for _ in range(3):  # warm-up: compile, create every work buffer
        train_step(model, opt, x)
    tracemalloc.start()
    for _ in range(5):
        train_step(model, opt, x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The step's arrays are (64, 64) float32 (16 KiB) or larger, but for the
    # per-example vectors; its Python objects (the loss result, the thread
    # timer's records) take a few KiB.
    assert peak < 8192, f"{peak} bytes allocated during 5 training steps"


@pytest.mark.parametrize("optimizer", [Adam, AdamW])
def test_both_backends_give_the_same_loss_curve(optimizer):
    x = _binary_data(240, 50, seed=1).astype(np.float64)
    curves = {}
    for name in ("numpy", "numba"):
        model = VAE(50, (32,), 4, backend=name, dtype="float64", seed=7)
        opt = optimizer(model.params, lr=1e-2, backend=name)
        rng = np.random.default_rng(11)
        losses = []
        for step in range(30):
            batch = x[(step % 8) * 30:(step % 8 + 1) * 30]
            losses.append(model.loss_and_grads(batch, rng=rng).loss)
            opt.step(model.grads)
        curves[name] = np.array(losses)
    assert curves["numpy"][-1] < curves["numpy"][0]  # it did train
    np.testing.assert_allclose(curves["numba"], curves["numpy"], rtol=1e-10, atol=0)


@pytest.mark.parametrize("likelihood, extra", [
    ("bernoulli", {}), ("gaussian", {"gaussian_var": "learned"}),
    ("bernoulli", {"free_bits": 0.05}),
])
def test_whole_model_gradient_check_passes_on_the_numba_backend(likelihood, extra):
    model = VAE(6, (5,), 3, likelihood=likelihood, activation="tanh", backend="numba",
                dtype="float64", seed=2, **extra)
    x = np.random.default_rng(4).random((4, 6))
    report = check_model(model, x, rng=np.random.default_rng(5))
    assert report.passed, str(report)


def test_kernels_run_as_plain_python_with_the_jit_disabled():
    code = """
import numpy as np
from numpyvae import ops as R
from numpyvae.fast import numba_ops as N
from numpyvae.fast import numba_kernels as K
assert not hasattr(K.bernoulli_nll_and_grad, 'py_func')  # a plain function
rng = np.random.default_rng(0)
x, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
errs = [np.abs(N.linear_forward(x, W, b, 'softplus') - R.linear_forward(x, W, b, 'softplus')).max()]
l, t = 5 * rng.standard_normal((3, 6)), rng.random((3, 6))
errs += [np.abs(a - b).max() for a, b in zip(N.bernoulli_nll_and_grad(l, t, 0.5),
                                              R.bernoulli_nll_and_grad(l, t, 0.5))]
print(max(errs))
"""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 1e-12


@given(data=hnp.arrays(np.float64, (3, 5), elements=st.floats(-50, 50)))
def test_extreme_but_finite_inputs_stay_finite(data):
    nll, dlogits = N.bernoulli_nll_and_grad(data * 20, np.clip(data, 0, 1), 1.0)
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(dlogits))


def test_a_bad_numpyvae_blas_is_one_line_and_exit_2_on_the_command_line(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "NUMPYVAE_BLAS": "atlas"}
    proc = subprocess.run([sys.executable, "-m", "numpyvae", "train", "--epochs", "1", "--out",
                           str(tmp_path / "run")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "numpyvae train: error: NUMPYVAE_BLAS='atlas': expected 'mkl' or 'openblas' (or unset)"]
