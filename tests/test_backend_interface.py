"""The backend interface: every backend defines every op, keeps dtypes, returns new arrays.

Here each op is compared with the reference once, on fixed inputs; the
thorough checks (central differences over hypothesis-drawn shapes and layouts)
are where the ops are used (layers, distributions, model, optimizers), and
every one of those tests runs on every backend.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from strategies import with_layout

import numpyvae
from numpyvae.backend import (
    BACKENDS,
    ENV_VAR,
    OPS,
    STEP_OPS,
    default_backend_name,
    get_backend,
    numba_available,
    reference,
)
from numpyvae.ops import ACTIVATIONS


def _module(name):
    """The backend module, or a skip when the optional Numba backend does not import."""
    try:
        return get_backend(name)
    except ImportError as exc:  # numba is an optional dependency
        pytest.skip(f"backend {name!r} does not import here: {exc}")


@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_defines_every_op(name):
    module = _module(name)
    missing = [op for op in OPS if not callable(getattr(module, op, None))]
    assert not missing, f"backend {name!r} lacks {missing}"
    assert module.NAME == name


def test_everything_the_library_calls_through_a_backend_is_a_listed_op():
    """An op called by name but missing from OPS would go untested on the fast backend.

    Calls through a backend read ``backend.<op>(...)``; a module that calls the
    specification itself (``ops.logsumexp(...)``, the formulas every backend
    shares) does not go through a backend, and is not counted.
    """
    package = Path(numpyvae.__file__).parent
    called = set()
    for source in package.rglob("*.py"):
        if "backend" in source.parts:
            continue
        called |= set(re.findall(r"\bbackend\.([a-z_]+)\(", source.read_text()))
    assert called, "found no backend calls: has the calling convention changed?"
    assert called <= set(OPS) | set(STEP_OPS), sorted(called - set(OPS) - set(STEP_OPS))


def test_the_numba_backend_offers_every_whole_step_op():
    module = _module("numba")
    assert all(callable(getattr(module, op, None)) for op in STEP_OPS)
    assert not any(hasattr(reference, op) for op in STEP_OPS)  # the fused path is optional


def test_get_backend_resolves_names_modules_and_the_environment(monkeypatch):
    assert get_backend("numpy") is reference
    assert get_backend("NumPy") is reference
    assert get_backend(reference) is reference
    with pytest.raises(ValueError, match="unknown backend 'cuda'; expected one of numpy, numba"):
        get_backend("cuda")
    monkeypatch.setenv(ENV_VAR, "numpy")
    assert default_backend_name() == "numpy"
    assert get_backend() is reference
    monkeypatch.setenv(ENV_VAR, "fortran")
    with pytest.raises(ValueError, match=r"unknown \$NUMPYVAE_BACKEND 'fortran'"):
        get_backend()
    monkeypatch.delenv(ENV_VAR)
    assert default_backend_name() == ("numba" if numba_available() else "numpy")


def test_importing_numpyvae_does_not_import_numba():
    import subprocess
    import sys

    code = "import sys, numpyvae; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": "", "PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == "False"


def test_backend_modules_are_importable_by_their_documented_names():
    assert importlib.import_module("numpyvae.ops") is reference


# --------------------------------------------------------------------------
# Contracts every backend keeps: dtype, new arrays, accumulate vs return, inputs untouched
# --------------------------------------------------------------------------


def _inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    B, n_in, n_out, L, D = 4, 5, 3, 2, 6

    def a(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    return dict(B=B, n_in=n_in, n_out=n_out, L=L, D=D, x=a(B, n_in), W=a(n_in, n_out),
                b=a(n_out), dy=a(B, n_out), mu=a(B, L), logvar=a(B, L, scale=0.5),
                eps=a(B, L), dz=a(B, L), dkl=a(B), h=a(B, 2 * L), logits=a(B, D, scale=3),
                target=rng.random((B, D)).astype(dtype), mean=a(B, D), obs=a(B, D),
                obs_logvar=a(D, scale=0.3), dnll=a(B), image=a(B, 2, 5, 4),
                conv_W=a(3, 2, 3, 2), convT_W=a(2, 3, 3, 2))


def _calls(backend, v):
    """(name, thunk) for a call of every op that returns arrays."""
    yield "activation_forward", lambda: [backend.activation_forward(v["x"], act)
                                         for act in ACTIVATIONS]
    y = reference.activation_forward(v["x"], "tanh")
    yield "activation_backward", lambda: [backend.activation_backward(v["x"], y, act)
                                          for act in ACTIVATIONS]
    yield "linear_forward", lambda: backend.linear_forward(v["x"], v["W"], v["b"], "relu")
    yl = reference.linear_forward(v["x"], v["W"], v["b"], "softplus")
    dW, db = np.zeros_like(v["W"]), np.zeros_like(v["b"])
    yield "linear_backward", lambda: [backend.linear_backward(v["dy"], v["x"], v["W"], yl, dW,
                                                              db, "softplus"), dW, db]
    yield "matmul", lambda: backend.matmul(v["x"], v["W"])
    yield "reparameterize", lambda: backend.reparameterize(v["mu"], v["logvar"], v["eps"])
    yield "reparameterize_backward", lambda: backend.reparameterize_backward(
        v["dz"], v["logvar"], v["eps"])
    yield "gaussian_kl", lambda: backend.gaussian_kl(v["mu"], v["logvar"])
    yield "gaussian_kl_backward", lambda: backend.gaussian_kl_backward(v["dkl"], v["mu"],
                                                                       v["logvar"])
    yield "latent_forward", lambda: backend.latent_forward(v["h"], v["eps"])
    yield "latent_backward", lambda: backend.latent_backward(v["dz"], v["h"], v["eps"],
                                                             v["dkl"], 0.1)
    yield "kl_per_dimension", lambda: backend.kl_per_dimension(v["mu"], v["logvar"])
    yield "bernoulli_nll", lambda: backend.bernoulli_nll(v["logits"], v["target"])
    yield "bernoulli_nll_backward", lambda: backend.bernoulli_nll_backward(
        v["dnll"], v["logits"], v["target"])
    yield "gaussian_nll", lambda: backend.gaussian_nll(v["mean"], v["obs_logvar"], v["obs"])
    yield "gaussian_nll_backward", lambda: backend.gaussian_nll_backward(
        v["dnll"], v["mean"], v["obs_logvar"], v["obs"])
    yield "bernoulli_nll_and_grad", lambda: backend.bernoulli_nll_and_grad(
        v["logits"], v["target"], 0.25)
    dlv = np.zeros_like(v["obs_logvar"])
    yield "gaussian_nll_and_grad", lambda: [*backend.gaussian_nll_and_grad(
        v["mean"], v["obs_logvar"], v["obs"], 0.25, dlv), dlv]
    yield "conv2d_forward", lambda: backend.conv2d_forward(
        v["image"], v["conv_W"], v["b"], (2, 1), 1, "tanh")
    yc = reference.conv2d_forward(v["image"], v["conv_W"], v["b"], (2, 1), 1, "tanh")
    dWc, dbc = np.zeros_like(v["conv_W"]), np.zeros_like(v["b"])
    yield "conv2d_backward", lambda: [backend.conv2d_backward(
        np.sin(yc), v["image"], v["conv_W"], yc, dWc, dbc, (2, 1), 1, "tanh"), dWc, dbc]
    yield "conv_transpose2d_forward", lambda: backend.conv_transpose2d_forward(
        v["image"], v["convT_W"], v["b"], 2, (1, 0), 1, "relu")
    yt = reference.conv_transpose2d_forward(v["image"], v["convT_W"], v["b"], 2, (1, 0), 1,
                                            "relu")
    dWt, dbt = np.zeros_like(v["convT_W"]), np.zeros_like(v["b"])
    yield "conv_transpose2d_backward", lambda: [backend.conv_transpose2d_backward(
        np.cos(yt), v["image"], v["convT_W"], yt, dWt, dbt, 2, (1, 0), "relu"), dWt, dbt]


def _flatten(result):
    if isinstance(result, np.ndarray):
        return [result]
    return [a for r in result for a in _flatten(r)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_op_keeps_the_dtype_and_leaves_its_inputs_alone(backend, dtype):
    v = _inputs(dtype)
    before = {k: a.copy() for k, a in v.items() if isinstance(a, np.ndarray)}
    covered = set()
    for name, call in _calls(backend, v):
        for out in _flatten(call()):
            assert out.dtype == dtype, name
            assert np.all(np.isfinite(out)), name
            for k, a in v.items():  # a result is a new array, never a view of an input
                assert not (isinstance(a, np.ndarray) and np.shares_memory(out, a)), (name, k)
        for k, a in before.items():
            np.testing.assert_array_equal(v[k], a, err_msg=f"{name} changed its input {k}")
        covered.add(name)
    assert covered == set(OPS) - {"sgd_update", "adam_update", "sum_of_squares"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_op_agrees_with_the_reference(backend, dtype):
    v = _inputs(dtype)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for (name, call), (_, ref) in zip(_calls(backend, v), _calls(reference, _inputs(dtype)),
                                      strict=True):
        for got, want in zip(_flatten(call()), _flatten(ref()), strict=True):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=name)


def test_the_reference_ops_take_no_output_arguments():
    """The specification returns its results: no ``out=``, ``dx=``, ... buffers to write into.

    (Parameter gradients are accumulated into the caller's arrays: ``dW``,
    ``db`` and a learned variance's ``dlogvar`` are inputs, not outputs.)
    """
    outputs = {"out", "dx", "dh", "z", "kl", "nll", "dmu", "dlogits", "dmean"}
    for op in OPS:
        params = set(inspect.signature(getattr(reference, op)).parameters)
        assert not params & outputs, (op, sorted(params & outputs))


def test_linear_backward_accumulates_parameter_gradients_and_returns_dx(backend):
    v = _inputs("float64")
    y = reference.linear_forward(v["x"], v["W"], v["b"], "tanh")
    dW0, db0 = np.zeros_like(v["W"]), np.zeros_like(v["b"])
    dx0 = backend.linear_backward(v["dy"], v["x"], v["W"], y, dW0, db0, "tanh")

    dW, db = np.full_like(v["W"], 2.0), np.full_like(v["b"], -1.0)
    dx = backend.linear_backward(v["dy"], v["x"], v["W"], y, dW, db, "tanh")
    assert dx.shape == v["x"].shape and not np.shares_memory(dx, dx0)
    np.testing.assert_allclose(dW, dW0 + 2.0, rtol=1e-14)
    np.testing.assert_allclose(db, db0 - 1.0, rtol=1e-14)
    np.testing.assert_allclose(dx, dx0, rtol=1e-14)
    assert backend.linear_backward(v["dy"], v["x"], v["W"], y, dW, db, "tanh",
                                   need_dx=False) is None


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_ops_accept_non_contiguous_inputs(backend, layout):
    v = _inputs("float64", seed=3)
    strided = {k: with_layout(a, layout) if isinstance(a, np.ndarray) and a.ndim == 2 else a
               for k, a in v.items()}
    for (name, call), (_, want) in zip(_calls(backend, strided), _calls(backend, v),
                                       strict=True):
        for got_a, want_a in zip(_flatten(call()), _flatten(want()), strict=True):
            np.testing.assert_allclose(got_a, want_a, rtol=1e-13, atol=1e-14, err_msg=name)


def test_unknown_activation_is_rejected(backend):
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        backend.activation_forward(x, "swish")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        backend.activation_backward(x, x, "swish")


def test_sum_of_squares(backend):
    a = np.arange(12.0).reshape(3, 4)
    assert backend.sum_of_squares(a) == pytest.approx(float(np.sum(a**2)), rel=1e-15)
    assert isinstance(backend.sum_of_squares(a.astype(np.float32)), float)
    assert backend.sum_of_squares(with_layout(a, "sliced")) == pytest.approx(506.0)


@pytest.mark.parametrize("files,expected", [
    ({"proc": "0::/course/user7\n", "course/user7/cpu.max": "150000 100000\n"}, 1.5),
    ({"proc": "0::/\n", "cpu.max": "max 100000\n"}, None),
    ({"proc": "4:cpu,cpuacct:/box\n", "cpu,cpuacct/box/cpu.cfs_quota_us": "50000\n",
      "cpu,cpuacct/box/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"proc": "4:cpu,cpuacct:/\n", "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
      "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
    ({"proc": "1:name=systemd:/\n"}, None),
])
def test_the_cgroup_cpu_quota_is_read_from_either_cgroup_version(tmp_path, files, expected):
    from numpyvae.backend import cgroup_cpu_limit

    for name, text in files.items():
        path = tmp_path / ("proc_cgroup" if name == "proc" else f"fs/{name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert cgroup_cpu_limit(tmp_path / "proc_cgroup", tmp_path / "fs") == expected


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_the_numba_backend_takes_its_thread_count_from_the_affinity_mask():
    pytest.importorskip("numba")
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from numpyvae.backend import usable_cpus; from numpyvae.fast import numba_ops; "
            "import numba; "
            "print(usable_cpus(), numba.config.NUMBA_NUM_THREADS)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.split() == ["1", "1"]
