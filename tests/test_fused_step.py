"""The one-call forward and backward (``numpyvae.train_step``'s default) against the per-op path.

The fused step runs the forward and backward pass of an MLP VAE as one
call into jitted code (:mod:`numpyvae.fast.numba_step`). It must be the
same training step: after several Adam steps the losses, parameters and
gradients equal those of ``loss_and_grads`` + ``optimizer.step`` on the
NumPy reference backend (float64 to 1e-12, float32 to 1e-5 relative), for
every likelihood, the VAE and the autoencoder, layers small enough to run
on one thread and large enough to be split, any thread count (more threads
than examples too), given or drawn noise; and models it does not cover take
the per-op path.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

import numba  # noqa: E402

from numpyvae import SGD, VAE, Adam, AdamW, Autoencoder  # noqa: E402
from numpyvae.fast.step import train_step  # noqa: E402
from numpyvae.fast.threads import ThreadChooser  # noqa: E402
from numpyvae.gradcheck import rel_error  # noqa: E402

TOL = {"float32": 1e-5, "float64": 1e-12}
LIKELIHOODS = [("bernoulli", {}), ("gaussian", {"gaussian_var": 0.5}),
               ("gaussian", {"gaussian_var": "learned"})]


def _pair(kind, likelihood, extra, dtype, optimizer=Adam, **model_args):
    """The same model and optimizer twice: on the Numba backend and on the NumPy reference."""
    args = dict(likelihood=likelihood, activation="tanh", dtype=dtype, seed=3, **extra,
                **model_args)
    fast = kind(10, (7, 6), 3, backend="numba", **args)
    slow = kind(10, (7, 6), 3, backend="numpy", **args)
    return (fast, optimizer(fast.params, backend="numba"),
            slow, optimizer(slow.params, backend="numpy"))


def _assert_same(fast, slow, tol, what):
    for name in slow.params:
        assert rel_error(fast.params[name], slow.params[name]) <= tol, f"{what}: {name}"
        assert rel_error(fast.grads[name], slow.grads[name]) <= 10 * tol, f"{what}: d{name}"


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request, monkeypatch):
    """Every fused step on this many threads (what :class:`ThreadChooser` would choose)."""
    k = min(request.param, numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setattr(ThreadChooser, "pick", lambda self: k)
    return k


KERNELS = {"shared products": "mlp_step", "forward by rows": "mlp_step",
           "data-parallel": "mlp_step_rows"}


def _force_kernel(monkeypatch, kernel, forward_by_rows=False, whole_on_one_thread=False):
    """Make the fused step run ``kernel`` of ``numba_step`` at any batch; the list its calls fill.

    ``mlp_step``: each product cut between the threads (with
    ``forward_by_rows``, but in the forward pass, where each thread takes its
    block of the batch); ``mlp_step_rows``: each thread its block of the batch
    through the whole step. On one thread too, unless ``whole_on_one_thread``
    lets a one-thread step run its products whole where they gave the same
    bits (:mod:`numpyvae.fast.whole_products`, its verdicts cleared first).
    """
    from numpyvae.fast import numba_ops, numba_step, whole_products

    parallel = kernel == "mlp_step_rows"
    if (parallel or forward_by_rows) and numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("the data-parallel step needs a pool of two or more threads")
    monkeypatch.setattr(numba_step, "DATA_PARALLEL_ROWS", 1 if parallel else 10**9)
    monkeypatch.setattr(numba_step, "FORWARD_ROWS", 1 if forward_by_rows else 10**9)
    monkeypatch.setattr(numba_ops, "FORWARD_BY_ROWS", forward_by_rows)  # whatever the BLAS
    monkeypatch.setattr(whole_products, "_SAME_BITS", {})
    monkeypatch.setattr(numba_ops, "step_on_one_thread",
                        whole_products.step_on_one_thread if whole_on_one_thread
                        else lambda run, outputs, shape, blocks: run(blocks))
    real, calls = getattr(numba_step, kernel), []

    def counting(*args):
        if kernel == "mlp_step" and args[-1] > 1:  # the flag before the BLAS and the task count
            assert args[-3] == forward_by_rows
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(numba_step, kernel, counting)
    return calls


@pytest.fixture(params=list(KERNELS))
def path(request, monkeypatch):
    """Which kernel the fused step runs (:data:`KERNELS`), checked to have run."""
    calls = _force_kernel(monkeypatch, KERNELS[request.param],
                          forward_by_rows=request.param == "forward by rows")
    yield request.param
    assert calls, f"the {request.param} kernel never ran"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", [VAE, Autoencoder])
@pytest.mark.parametrize("likelihood,extra", LIKELIHOODS, ids=["bernoulli", "gaussian",
                                                               "gaussian learned"])
def test_fused_steps_equal_the_reference_per_op_steps(kind, likelihood, extra, dtype, threads):
    fast, fast_opt, slow, slow_opt = _pair(kind, likelihood, extra, dtype)
    rng = np.random.default_rng(0)
    for step in range(5):
        x = rng.random((9, 10)).astype(dtype)
        got = train_step(fast, fast_opt, x, beta=0.7)
        want = slow.loss_and_grads(x, beta=0.7)
        slow_opt.step(want.grads)
        for field in ("loss", "recon", "kl"):
            a, b = getattr(got, field), getattr(want, field)
            assert abs(a - b) <= TOL[dtype] * max(1.0, abs(b)), f"step {step} {field}: {a} {b}"
        _assert_same(fast, slow, TOL[dtype] * 10 ** step, f"step {step}")
    assert got.grads is fast.grads or dict(got.grads).keys() == fast.grads.keys()


def test_fused_step_takes_the_fused_path_and_draws_the_same_noise():
    fast, fast_opt, slow, slow_opt = _pair(VAE, "bernoulli", {}, "float64")
    x = np.random.default_rng(1).random((6, 10))
    calls = []
    real = fast.backend.mlp_step

    def counting(*args):
        calls.append(1)
        return real(*args)

    fast.backend.mlp_step = counting
    try:
        got = train_step(fast, fast_opt, x)  # noise from each model's own generator
    finally:
        fast.backend.mlp_step = real
    want = slow.loss_and_grads(x)
    slow_opt.step(want.grads)
    assert calls == [1]
    assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)
    _assert_same(fast, slow, 1e-12, "drawn noise")


@pytest.mark.parametrize("batch", [3, 16, 40])
def test_products_large_enough_to_split_between_threads(batch, threads):
    # 784-400-20: the big layers' products (batch * 784 * 400 multiply-adds)
    # are cut into one block per thread of Numba's pool at every batch here;
    # the latent layer's (batch * 400 * 40) only at batch 40 and above.
    from numpyvae.fast.numba_step import SMALL_PRODUCT
    assert 3 * 784 * 400 < SMALL_PRODUCT <= 16 * 784 * 400 and 40 * 400 * 40 < SMALL_PRODUCT
    fast = VAE(784, (400,), 20, backend="numba", dtype="float64", seed=2)
    slow = VAE(784, (400,), 20, backend="numpy", dtype="float64", seed=2)
    fast_opt, slow_opt = Adam(fast.params, backend="numba"), Adam(slow.params, backend="numpy")
    rng = np.random.default_rng(12)
    for _ in range(2):
        x, eps = rng.random((batch, 784)), rng.standard_normal((batch, 20))
        got = train_step(fast, fast_opt, x, eps=eps)
        want = slow.loss_and_grads(x, eps=eps)
        slow_opt.step(want.grads)
        assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)
    _assert_same(fast, slow, 1e-11, f"784-400-20, batch {batch}")


@pytest.mark.parametrize("batch", [9, 40])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", [VAE, Autoencoder])
@pytest.mark.parametrize("likelihood,extra", LIKELIHOODS, ids=["bernoulli", "gaussian",
                                                               "gaussian learned"])
@pytest.mark.parametrize("whole_step", [True, False], ids=["whole step", "forward pass"])
def test_data_parallel_steps_equal_the_reference_per_op_steps(kind, likelihood, extra, dtype,
                                                              batch, whole_step, threads,
                                                              monkeypatch):
    # Each thread of the pool takes its block of the batch (blocks of 16
    # rows, rounded up: 40 examples are 32 + 8, 9 are one block and an
    # empty one) through the whole step, and the blocks' gradients are
    # summed; or through the forward pass and the likelihood only (a learned
    # variance's gradient summed over every example after), the backward
    # pass sharing its products.
    calls = (_force_kernel(monkeypatch, "mlp_step_rows") if whole_step else
             _force_kernel(monkeypatch, "mlp_step", forward_by_rows=True))
    fast, fast_opt, slow, slow_opt = _pair(kind, likelihood, extra, dtype)
    rng = np.random.default_rng(0)
    for step in range(4):
        x = rng.random((batch, 10)).astype(dtype)
        eps = rng.standard_normal((batch, 3)).astype(dtype)
        got = train_step(fast, fast_opt, x, eps=eps, beta=0.7)
        want = slow.loss_and_grads(x, eps=eps, beta=0.7)
        slow_opt.step(want.grads)
        for field in ("loss", "recon", "kl"):
            a, b = getattr(got, field), getattr(want, field)
            assert abs(a - b) <= TOL[dtype] * max(1.0, abs(b)), f"step {step} {field}: {a} {b}"
        _assert_same(fast, slow, TOL[dtype] * 10 ** step, f"step {step}")
    assert len(calls) == 4


@pytest.mark.parametrize("shape,batch", [
    ((784, (400, 400), 20), 32),   # two shared layers in a row, in the encoder and the decoder
    ((784, (400,), 20), 600),      # every layer shared, the latent layer's too
    ((200, (1000,), 10), 32),      # the first layer's weight gradient cut by columns
], ids=["two big layers in a row", "every layer big", "first layer cut by columns"])
@pytest.mark.parametrize("likelihood,extra", [LIKELIHOODS[0], LIKELIHOODS[2]],
                         ids=["bernoulli", "gaussian learned"])
def test_every_order_of_shared_and_one_thread_layers_matches_the_reference(
        shape, batch, likelihood, extra, threads, path):
    # The backward runs layers too small to share on one thread while the
    # other threads take the Adam steps waiting from the layers above, and a
    # shared layer's step inside its own region when nothing reads its
    # weights any more: each ordering of those cases, against the reference.
    D, hidden, L = shape
    fast = VAE(D, hidden, L, likelihood=likelihood, backend="numba", dtype="float64", seed=5,
               **extra)
    slow = VAE(D, hidden, L, likelihood=likelihood, backend="numpy", dtype="float64", seed=5,
               **extra)
    fast_opt, slow_opt = Adam(fast.params, backend="numba"), Adam(slow.params, backend="numpy")
    rng = np.random.default_rng(14)
    for _ in range(2):
        x, eps = rng.random((batch, D)), rng.standard_normal((batch, L))
        got = train_step(fast, fast_opt, x, eps=eps)
        want = slow.loss_and_grads(x, eps=eps)
        slow_opt.step(want.grads)
        assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)
    assert fast_opt.step_count == 2
    _assert_same(fast, slow, 1e-11, f"{shape}, batch {batch}")


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_more_threads_than_examples(batch):
    fast, fast_opt, slow, slow_opt = _pair(VAE, "gaussian", {"gaussian_var": "learned"},
                                           "float64")
    x = np.random.default_rng(2).random((batch, 10))
    eps = np.random.default_rng(3).standard_normal((batch, 3))
    got = train_step(fast, fast_opt, x, eps=eps)
    want = slow.loss_and_grads(x, eps=eps)
    slow_opt.step(want.grads)
    assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)
    _assert_same(fast, slow, 1e-12, f"batch {batch}")


@pytest.mark.parametrize("optimizer", [AdamW, SGD])
def test_other_optimizers_get_the_same_gradient(optimizer, path):
    fast, fast_opt, slow, slow_opt = _pair(VAE, "bernoulli", {}, "float64", optimizer=optimizer)
    rng = np.random.default_rng(4)
    for _ in range(3):
        x, eps = rng.random((40, 10)), rng.standard_normal((40, 3))
        train_step(fast, fast_opt, x, eps=eps)
        slow_opt.step(slow.loss_and_grads(x, eps=eps).grads)
    _assert_same(fast, slow, 1e-11, optimizer.__name__)


def test_models_the_kernel_does_not_cover_take_the_per_op_path():
    # Free bits: the kernel's latent layer has none.
    fast, fast_opt, slow, slow_opt = _pair(VAE, "bernoulli", {}, "float64", free_bits=0.1)
    real = fast.backend.mlp_step
    fast.backend.mlp_step = None  # would fail if called
    try:
        x, eps = np.random.default_rng(5).random((5, 10)), np.ones((5, 3))
        got = train_step(fast, fast_opt, x, eps=eps)
    finally:
        fast.backend.mlp_step = real
    want = slow.loss_and_grads(x, eps=eps)
    slow_opt.step(want.grads)
    assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)
    _assert_same(fast, slow, 1e-12, "free bits")


def test_bad_input_raises_the_per_op_error():
    fast, fast_opt, _, _ = _pair(VAE, "bernoulli", {}, "float64")
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, 10\)"):
        train_step(fast, fast_opt, np.ones((4, 9)))
    with pytest.raises(ValueError, match=r"expected eps of shape \(4, 3\)"):
        train_step(fast, fast_opt, np.ones((4, 10)), eps=np.ones((4, 2)))


def test_the_numpy_backend_runs_the_per_op_step():
    model = VAE(10, (7,), 3, backend="numpy", dtype="float64", seed=1)
    twin = VAE(10, (7,), 3, backend="numpy", dtype="float64", seed=1)
    opt, twin_opt = Adam(model.params, backend="numpy"), Adam(twin.params, backend="numpy")
    x = np.random.default_rng(6).random((4, 10))
    got = train_step(model, opt, x)
    want = twin.loss_and_grads(x)
    twin_opt.step(want.grads)
    assert got.loss == want.loss
    for name in model.params:
        np.testing.assert_array_equal(model.params[name], twin.params[name])



@pytest.mark.parametrize("backend,kernel,by_rows", [
    ("numba", "mlp_step", False), ("numba", "mlp_step", True), ("numba", "mlp_step_rows", False),
    ("numpy", None, False)])
def test_a_batch_whose_loss_is_not_finite_leaves_the_parameters(backend, kernel, by_rows,
                                                                 monkeypatch):
    calls = _force_kernel(monkeypatch, kernel, forward_by_rows=by_rows) if kernel else []
    model = VAE(10, (7,), 3, backend=backend, dtype="float64", seed=1)
    opt = Adam(model.params, backend=backend)
    model.params["decoder.1.b"][0] = np.inf
    before = model.flat_params.copy()
    result = train_step(model, opt, np.random.default_rng(7).random((40, 10)))
    assert not np.isfinite(result.loss)
    np.testing.assert_array_equal(model.flat_params, before)
    assert opt.step_count == 0
    assert len(calls) == (1 if kernel else 0)


@pytest.mark.parametrize("whole", [False, True], ids=["blocks", "whole products on one thread"])
def test_the_thread_count_changes_no_bit_of_the_results(monkeypatch, path, whole):
    # With whole products allowed, the first one-thread step checks them
    # against the forced kernel's bits (a data-parallel step's summed
    # gradients are not those of the whole products) and keeps them only if equal.
    if whole:
        _force_kernel(monkeypatch, KERNELS[path], forward_by_rows=path == "forward by rows",
                      whole_on_one_thread=True)
    results = []
    for k in (1, numba.config.NUMBA_NUM_THREADS):
        monkeypatch.setattr(ThreadChooser, "pick", lambda self, k=k: k)
        model = VAE(10, (7,), 3, backend="numba", dtype="float32", seed=1)
        opt = Adam(model.params, backend="numba")
        rng = np.random.default_rng(8)
        losses = [train_step(model, opt, rng.random((40, 10), dtype=np.float32)).loss
                  for _ in range(4)]
        results.append((losses, model.flat_params.copy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_networks_of_linear_layers_are_fused_and_other_layers_are_not():
    from numpyvae import Gaussian, Linear, ReLU, Sequential

    def nets(backend, split_activation):
        rng = np.random.default_rng(9)
        common = dict(rng=rng, dtype="float64", backend=backend)
        if split_activation:  # a separate activation layer: not a layer the kernel knows
            first = [Linear(10, 8, **common), ReLU(backend=backend)]
        else:
            first = [Linear(10, 8, activation="relu", **common)]
        encoder = Sequential(*first, Linear(8, 6, activation="tanh", **common),
                             Linear(6, 4, **common))
        decoder = Sequential(Linear(2, 5, activation="leaky_relu", **common),
                             Linear(5, 10, **common))
        return VAE(encoder, decoder, likelihood=Gaussian(0.3), latent_dim=2, backend=backend)

    for split in (False, True):
        fast, slow = nets("numba", split), nets("numpy", split)
        fast_opt, slow_opt = Adam(fast.params, backend="numba"), Adam(slow.params, backend="numpy")
        calls = []
        real = fast.backend.mlp_step
        fast.backend.mlp_step = lambda *args, c=calls, r=real: c.append(1) or r(*args)
        try:
            rng = np.random.default_rng(10)
            for _ in range(3):
                x, eps = rng.random((7, 10)), rng.standard_normal((7, 2))
                got = train_step(fast, fast_opt, x, eps=eps)
                want = slow.loss_and_grads(x, eps=eps)
                slow_opt.step(want.grads)
                assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)
        finally:
            fast.backend.mlp_step = real
        assert len(calls) == (0 if split else 3)
        _assert_same(fast, slow, 1e-11, f"split activation {split}")


def test_free_bits_switched_on_later_take_the_per_op_path():
    fast, fast_opt, slow, slow_opt = _pair(VAE, "bernoulli", {}, "float64")
    rng = np.random.default_rng(11)
    for step in range(3):
        if step == 1:
            fast.free_bits = slow.free_bits = 0.5
        x, eps = rng.random((6, 10)), rng.standard_normal((6, 3))
        got = train_step(fast, fast_opt, x, eps=eps)
        want = slow.loss_and_grads(x, eps=eps)
        slow_opt.step(want.grads)
        assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)
    _assert_same(fast, slow, 1e-11, "free bits later")


def test_adam_steps_inside_the_kernel_call_and_other_optimizers_after_it(monkeypatch):
    # Adam or AdamW on the model's own flat buffer: each layer's step is taken in
    # the kernel call (optimizer.step is not called); any other optimizer steps
    # after it. Same results as the per-op path on the reference, either way.
    from numpyvae.optim import Optimizer

    real_step = Optimizer.step
    for optimizer in (Adam, AdamW, SGD):
        calls = []
        monkeypatch.setattr(Optimizer, "step",
                            lambda self, grads, c=calls: c.append(1) or real_step(self, grads))
        fast, fast_opt, slow, slow_opt = _pair(VAE, "gaussian", {"gaussian_var": "learned"},
                                               "float64", optimizer=optimizer)
        rng = np.random.default_rng(13)
        for _ in range(3):
            x, eps = rng.random((8, 10)), rng.standard_normal((8, 3))
            train_step(fast, fast_opt, x, eps=eps)
            slow_opt.step(slow.loss_and_grads(x, eps=eps).grads)
        assert fast_opt.step_count == slow_opt.step_count == 3
        assert len(calls) == (3 if optimizer is SGD else 0) + 3  # the slow twin's 3 steps
        _assert_same(fast, slow, 1e-11, optimizer.__name__)


# --------------------------------------------------------------------------
# The fused step asks the model (describe) and the optimizer (flat_state)
# --------------------------------------------------------------------------


def _counting_mlp_step(model):
    """Replace ``model.backend.mlp_step`` by a counting twin; returns (calls, restore)."""
    calls, real = [], model.backend.mlp_step
    model.backend.mlp_step = lambda *args: calls.append(1) or real(*args)
    return calls, lambda: setattr(model.backend, "mlp_step", real)


@pytest.mark.parametrize("likelihood,extra", LIKELIHOODS, ids=["bernoulli", "gaussian",
                                                               "gaussian learned"])
@pytest.mark.parametrize("kind", [VAE, Autoencoder])
def test_describe_says_what_the_model_is_and_where_each_parameter_lives(kind, likelihood, extra):
    model = kind(10, (7, 6), 3, likelihood=likelihood, activation="tanh", dtype="float64",
                 backend="numpy", **extra)
    desc = model.describe()
    assert desc["kind"] == model.kind and desc["dtype"] == np.float64
    assert desc["latent_dim"] == 3 and desc["input_shape"] == (10,) and desc["free_bits"] == 0.0
    assert desc["posterior"] == ("DiagonalGaussian" if kind is VAE else None)
    assert desc["flat_params"] is model.flat_params and desc["flat_grads"] is model.flat_grads
    widths = [(10, 7), (7, 6), (6, 3 * model.latent_widths), (3, 6), (6, 7), (7, 10)]
    layers = desc["encoder"] + desc["decoder"]
    assert [layer["params"]["W"].shape for layer in layers] == widths
    assert [layer["type"] for layer in layers] == ["Linear"] * 6
    assert [layer["activation"] for layer in layers] == ["tanh", "tanh", "identity"] * 2
    lik = desc["likelihood"]
    assert lik["type"] == type(model.likelihood).__name__
    parts = [(layer["params"], layer["offsets"]) for layer in layers]
    parts.append((lik["params"], lik["offsets"]))
    described = [(p, offsets[key]) for params, offsets in parts for key, p in params.items()]
    assert [p.shape for p, _ in described] == [p.shape for p in model.params.values()]
    model.flat_params.fill(np.nan)
    model.flat_grads.fill(np.nan)
    for p, start in described:  # write each parameter and its gradient through its offset
        model.flat_params[start:start + p.size] = np.arange(p.size)
        model.flat_grads[start:start + p.size] = -np.arange(p.size)
    for (p, _), (name, g) in zip(described, model.grads.items(), strict=True):
        np.testing.assert_array_equal(p.ravel(), np.arange(p.size), err_msg=name)
        np.testing.assert_array_equal(model.params[name].ravel(), np.arange(p.size))
        np.testing.assert_array_equal(g.ravel(), -np.arange(p.size), err_msg=name)
    if extra.get("gaussian_var") == "learned":
        assert lik["logvar"] is model.likelihood.params["logvar"]
    elif likelihood == "gaussian":
        assert lik["logvar"] == np.float64(np.log(0.5)) and lik["var"] == 0.5


def test_a_parameter_moved_out_of_the_flat_buffer_has_no_offset_and_takes_the_per_op_path():
    fast, fast_opt, slow, slow_opt = _pair(VAE, "bernoulli", {}, "float64")
    layer = next(lr for lr in fast.encoder.layers() if "W" in lr.params)
    layer.params["W"] = layer.params["W"].copy()  # no longer a view of flat_params
    assert fast.describe()["encoder"][0]["offsets"]["W"] is None
    calls, restore = _counting_mlp_step(fast)
    try:
        x, eps = np.random.default_rng(15).random((5, 10)), np.ones((5, 3))
        train_step(fast, fast_opt, x, eps=eps)
    finally:
        restore()
    assert calls == []


def test_a_conditional_model_takes_the_per_op_path():
    from numpyvae import CVAE

    model = CVAE(10, num_classes=3, hidden_dims=(7,), latent_dim=3, backend="numba",
                 dtype="float64", seed=1)
    assert model.describe()["kind"] == "cvae"
    calls, restore = _counting_mlp_step(model)
    try:  # the per-op path runs the CVAE's own loss, which asks for the labels
        with pytest.raises(ValueError, match="pass labels="):
            train_step(model, Adam(model.params, backend="numba"), np.ones((4, 10)))
    finally:
        restore()
    assert calls == []


def test_a_subclass_of_a_layer_is_a_layer_the_kernel_does_not_know():
    from numpyvae import Linear, Sequential

    class Doubled(Linear):  # may change the math: the kernel must not run it as a Linear
        def forward(self, x):
            return 2 * super().forward(x)

        def backward(self, dout):
            return super().backward(2 * dout)

    def model(backend):
        common = dict(rng=np.random.default_rng(16), dtype="float64", backend=backend)
        return VAE(Sequential(Doubled(10, 6, "tanh", **common), Linear(6, 4, **common)),
                   Sequential(Linear(2, 5, "tanh", **common), Linear(5, 10, **common)),
                   latent_dim=2, backend=backend)

    fast, slow = model("numba"), model("numpy")
    assert fast.describe()["encoder"][0]["type"] == "Doubled"
    fast_opt, slow_opt = Adam(fast.params, backend="numba"), Adam(slow.params, backend="numpy")
    calls, restore = _counting_mlp_step(fast)
    try:
        rng = np.random.default_rng(17)
        for _ in range(2):
            x, eps = rng.random((6, 10)), rng.standard_normal((6, 2))
            got = train_step(fast, fast_opt, x, eps=eps)
            want = slow.loss_and_grads(x, eps=eps)
            slow_opt.step(want.grads)
            assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)
    finally:
        restore()
    assert calls == []
    _assert_same(fast, slow, 1e-11, "a subclass of Linear")


def test_flat_state_gives_the_optimizers_own_buffers_or_none():
    model = VAE(10, (7,), 3, backend="numpy", dtype="float64", seed=1)
    for optimizer, slots in ((Adam, ("m", "v")), (AdamW, ("m", "v")), (SGD, ("velocity",))):
        opt = optimizer(model.params, backend="numpy")
        state = opt.flat_state()
        assert state["type"] == optimizer.__name__ and state["params"] is model.flat_params
        assert set(state) == {"type", "params", *slots}
        for slot in slots:  # the very arrays the optimizer keeps, by name, as views
            assert state[slot].shape == model.flat_params.shape
            for name, a in opt.state[slot].items():
                assert np.shares_memory(a, state[slot]), (slot, name)
    apart = {name: p.copy() for name, p in model.params.items()}  # separate arrays: not flat
    assert Adam(apart, backend="numpy").flat_state() is None


def test_an_optimizer_without_a_flat_state_steps_after_the_kernel(monkeypatch):
    # Adam over the model's parameters in another order: no flat buffer, so the
    # kernel cannot take its step; the fused forward and backward still run and
    # Adam steps after them, one parameter at a time. The same results either way.
    from numpyvae.optim import Optimizer

    fast, _, slow, slow_opt = _pair(VAE, "gaussian", {"gaussian_var": "learned"}, "float64")
    fast_opt = Adam(dict(reversed(list(fast.params.items()))), backend="numba")
    assert fast_opt.flat_state() is None
    steps, real_step = [], Optimizer.step
    monkeypatch.setattr(Optimizer, "step", lambda self, g: steps.append(self) or real_step(self, g))
    calls, restore = _counting_mlp_step(fast)
    try:
        rng = np.random.default_rng(18)
        for _ in range(3):
            x, eps = rng.random((8, 10)), rng.standard_normal((8, 3))
            train_step(fast, fast_opt, x, eps=eps)
            slow_opt.step(slow.loss_and_grads(x, eps=eps).grads)
    finally:
        restore()
    assert calls == [1, 1, 1] and steps.count(fast_opt) == 3
    _assert_same(fast, slow, 1e-11, "Adam in another order")


def test_the_forward_pass_by_rows_is_taken_with_mkl_from_its_batch_size(monkeypatch):
    # With MKL, a batch of FORWARD_ROWS examples per task or more takes its forward pass
    # by rows; a smaller one, and any batch with another BLAS, shares each product.
    from numpyvae.fast import numba_ops, numba_step

    tasks = numba.config.NUMBA_NUM_THREADS
    if tasks < 2:
        pytest.skip("the forward pass by rows needs a pool of two or more threads")
    assert numba_ops.FORWARD_BY_ROWS == numba_ops.BLAS.startswith("Intel MKL")
    flags = []
    real = numba_step.mlp_step
    monkeypatch.setattr(numba_step, "mlp_step", lambda *a: flags.append(a[-3]) or real(*a))
    monkeypatch.setattr(numba_step, "FORWARD_ROWS", 4)
    for mkl in (True, False):
        monkeypatch.setattr(numba_ops, "FORWARD_BY_ROWS", mkl)
        model = VAE(10, (7,), 3, backend="numba", seed=1)
        opt = Adam(model.params, backend="numba")
        for batch in (4 * tasks - 1, 4 * tasks):
            train_step(model, opt, np.random.default_rng(batch).random((batch, 10)))
    assert flags == [False, True, False, False]
