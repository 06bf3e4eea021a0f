"""The training step's thread count (:mod:`numpyvae.fast.threads`): chosen by timing, and harmless.

Whatever thread count the chooser picks, every bit of the results is the
same (the per-op kernels give each output element to one thread); the
chooser runs the cheaper count, probes the other less often after each
probe it loses, and leaves Numba's thread count as it found it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

import numba  # noqa: E402

from numpyvae import CVAE, VAE, Adam, train_step  # noqa: E402
from numpyvae.convnet import conv_vae  # noqa: E402
from numpyvae.fast import whole_products  # noqa: E402
from numpyvae.fast.threads import ThreadChooser, chooser_of, step_threads  # noqa: E402

MOST = numba.config.NUMBA_NUM_THREADS


def _train(make, k, monkeypatch, labels=False, batches=(9, 48, 8, 9)):
    monkeypatch.setattr(ThreadChooser, "pick", lambda self, k=k: k)
    model = make()
    opt = Adam(model.params, backend="numba")
    rng = np.random.default_rng(8)
    losses = []
    for B in batches:
        x = rng.random((B, *model.input_shape), dtype=np.float32)
        if labels:
            y = rng.integers(0, 3, size=B)
            with step_threads(model):
                result = model.loss_and_grads(x, y)
                opt.step(result.grads)
        else:
            result = train_step(model, opt, x)
        losses.append(result.loss)
    return losses, model.flat_params.copy()


@pytest.mark.skipif(MOST < 2, reason="needs two usable CPUs to compare thread counts")
@pytest.mark.parametrize("which", ["mlp", "mlp 784-32-4", "mlp 784-400-8",
                                   "mlp 784-400-8, a data-parallel batch", "conv", "cvae"])
def test_one_thread_and_every_thread_train_to_the_same_bits(which, monkeypatch):
    # On one thread the one-call step may run its products whole
    # (numpyvae.fast.whole_products), but only where that gave the same bits:
    # a data-parallel batch, whose blocks' gradients are summed, is one it checks.
    monkeypatch.setattr(whole_products, "_SAME_BITS", {})
    default = lambda: VAE(784, (400,), 8, backend="numba", dtype="float32", seed=1)  # noqa: E731
    make = {
        "mlp": lambda: VAE(10, (7,), 3, backend="numba", dtype="float32", seed=1),
        "mlp 784-32-4": lambda: VAE(784, (32,), 4, backend="numba", dtype="float32", seed=1),
        "mlp 784-400-8": default,
        "mlp 784-400-8, a data-parallel batch": default,
        "conv": lambda: conv_vae((8, 8), 3, (2, 3), seed=1, backend="numba", dtype="float32"),
        "cvae": lambda: CVAE(10, num_classes=3, hidden_dims=(7,), latent_dim=3,
                             backend="numba", dtype="float32", seed=1),
    }[which]
    batches = (260 * MOST, 48, 260 * MOST) if "data-parallel" in which else (9, 48, 8, 9)
    one = _train(make, 1, monkeypatch, labels=which == "cvae", batches=batches)
    every = _train(make, MOST, monkeypatch, labels=which == "cvae", batches=batches)
    assert one[0] == every[0]
    np.testing.assert_array_equal(one[1], every[1])
    if which.startswith("mlp"):  # each batch size's one-thread step was checked, once
        assert len(whole_products._SAME_BITS) == len(set(batches))


@pytest.mark.parametrize("fused", [True, False])
def test_the_step_takes_the_path_asked_for_and_restores_numbas_thread_count(fused):
    # The default runs forward and backward as one kernel call (mlp_step);
    # fused=False runs the per-op path. Both on the chooser's thread count.
    model = VAE(10, (7,), 3, backend="numba", dtype="float64", seed=1)
    twin = VAE(10, (7,), 3, backend="numba", dtype="float64", seed=1)
    opt, twin_opt = Adam(model.params, backend="numba"), Adam(twin.params, backend="numba")
    calls = []
    real = model.backend.mlp_step
    model.backend.mlp_step = lambda *args: calls.append(1) or real(*args)
    before = numba.get_num_threads()
    try:
        x = np.random.default_rng(3).random((6, 10))
        eps = np.random.default_rng(4).standard_normal((6, 3))
        for _ in range(5):
            got = train_step(model, opt, x, eps=eps, fused=fused)
            want = twin.loss_and_grads(x, eps=eps)
            twin_opt.step(want.grads)
            assert got.loss == pytest.approx(want.loss, rel=1e-13)
    finally:
        model.backend.mlp_step = real
    assert calls == ([1] * 5 if fused else [])
    assert numba.get_num_threads() == before
    np.testing.assert_allclose(model.flat_params, twin.flat_params, rtol=1e-12, atol=1e-14)
    if not fused:
        np.testing.assert_array_equal(model.flat_params, twin.flat_params)
    chooser = chooser_of(model)
    assert (chooser is None) == (MOST < 2)
    if chooser is not None:
        assert chooser.steps == 5


def test_the_numpy_backend_has_no_threads_to_choose():
    model = VAE(10, (7,), 3, backend="numpy", dtype="float64", seed=1)
    with step_threads(model):
        model.loss_and_grads(np.ones((2, 10)))
    assert chooser_of(model) is None


def run_chooser(chooser, steps, seconds):
    """``steps`` steps of ``chooser``, a step on ``k`` threads taking ``seconds(k)``: the picks."""
    picks = []
    for _ in range(steps):
        k = chooser.pick()
        picks.append(k)
        chooser.record(k, seconds(k))
    return picks


def probe_gaps(picks, best):
    """Steps from the start of each probe (a run of steps off ``best``) to the next's."""
    starts = [i for i in range(1, len(picks)) if picks[i] != best and picks[i - 1] == best]
    return list(np.diff(starts))


def test_the_chooser_runs_the_cheaper_count_and_probes_less_after_each_lost_probe():
    chooser = ThreadChooser(2)
    cost = {1: 1.0, 2: 1.15}  # one thread a little faster: a busy machine
    picks = run_chooser(chooser, 3000, cost.get)
    assert picks[:2] == [2, 2]  # warm-up on every core, untimed
    assert chooser.best == 1
    gaps = probe_gaps(picks, 1)
    assert len(gaps) >= 4  # still probed, in case the machine goes quiet
    steps = ThreadChooser.PROBE_STEPS - 1  # a probe's own steps, after its first
    assert gaps[:4] == [64 + steps, 128 + steps, 256 + steps, 512 + steps]  # each loss doubles
    assert max(gaps) == ThreadChooser.PROBE_MOST + steps
    cost = {1: 1.0, 2: 0.5}  # the machine went quiet
    for _ in range(ThreadChooser.PROBE_MOST + 2 * steps):
        k = chooser.pick()
        chooser.record(k, cost[k])
        if chooser.best == 2:
            break
    assert chooser.best == 2  # found within one longest wait
    assert chooser.interval == ThreadChooser.PROBE_EVERY  # a won probe resets the wait
    assert ThreadChooser(1).pick() == 1


@pytest.mark.parametrize("slower", [1.3, 1.7, 2.5])
def test_a_probe_that_loses_costs_at_most_its_share_of_the_steps_until_the_next(slower):
    # Idle at a large batch, one thread's step takes 1.7 times two threads'
    # (beside a busy process, two threads' can take 2.5 times one's): each
    # lost probe waits long enough that its extra time is at most PROBE_COST
    # of the steps until the next probe, or PROBE_MOST steps.
    chooser = ThreadChooser(2)
    cost = {1: slower, 2: 1.0}
    picks = run_chooser(chooser, 6000, cost.get)
    assert chooser.best == 2
    extra = ThreadChooser.PROBE_STEPS * (slower - 1.0)
    for gap in probe_gaps(picks, 2):  # each wait after a lost probe
        assert gap >= 2 * ThreadChooser.PROBE_EVERY
        assert extra / gap <= ThreadChooser.PROBE_COST or gap >= ThreadChooser.PROBE_MOST
    lost = sum(cost[k] - 1.0 for k in picks[200:])  # the probes' extra time, once settled
    assert lost <= max(ThreadChooser.PROBE_COST, extra / ThreadChooser.PROBE_MOST) * 1.05 * (
        len(picks) - 200) + extra


def test_one_fast_step_of_the_other_count_does_not_take_over():
    chooser = ThreadChooser(2)
    rng = np.random.default_rng(0)
    # two threads are 30% faster, with rare slow outliers either way
    picks = run_chooser(chooser, 2000, lambda k: (1.0 if k == 2 else 1.3)
                        * (3.0 if rng.random() < 0.1 else 1.0))
    assert chooser.best == 2
    assert picks[10:].count(1) < 0.04 * len(picks[10:])  # the probes, and little else


@pytest.mark.parametrize("two_threads_faster_by", [0.0, 0.05])
def test_a_second_thread_that_does_not_pay_for_itself_is_given_back(two_threads_faster_by):
    # A busy machine: two threads run steps as fast as one (or a little
    # faster, within the margin), with noise either way. The chooser settles
    # on one thread, leaving the other core to the machine's other programs.
    chooser = ThreadChooser(2)
    rng = np.random.default_rng(2)
    picks = run_chooser(chooser, 3000, lambda k: (1.0 - two_threads_faster_by if k == 2 else 1.0)
                        * rng.uniform(0.9, 1.1))
    assert chooser.best == 1
    assert picks[100:].count(2) < 0.03 * len(picks[100:])  # the probes, and little else


def test_a_sudden_slowdown_is_answered_at_once_whatever_the_interval():
    chooser = ThreadChooser(2)
    cost = {1: 4.7, 2: 3.2}  # idle: two threads faster; the probe interval grows to its most
    run_chooser(chooser, 3000, cost.get)
    assert chooser.best == 2 and chooser.interval == ThreadChooser.PROBE_MOST
    cost = {1: 6.6, 2: 14.7}  # two busy processes start: one thread is now twice as fast
    waited = 0
    while chooser.best != 1 and waited < 100:
        k = chooser.pick()
        chooser.record(k, cost[k])
        waited += 1
    assert chooser.best == 1
    assert waited <= 3 * ThreadChooser.WINDOW + ThreadChooser.PROBE_STEPS + 1


def test_a_burst_that_ends_when_it_is_noticed_does_not_take_a_thread_away():
    # Idle, two threads are 1.5 times as fast as one. A burst of another
    # program's work slows the two-thread steps to one thread's speed for
    # the two windows the chooser needs to notice it, and ends just then.
    # The probe of one thread is judged against two threads' steps after
    # the burst, so the chooser keeps both threads.
    chooser = ThreadChooser(2)
    run_chooser(chooser, 600, {1: 1.5, 2: 1.0}.get)
    assert chooser.best == 2 and chooser._reference is not None
    noticed = False
    for _ in range(60):
        k = chooser.pick()
        burst = chooser._reference is not None and not noticed
        chooser.record(k, {1: 1.5, 2: 1.45 if burst else 1.0}[k])
        noticed = noticed or chooser._reference is None
        if k == 1:  # the probe the burst set off
            break
    assert noticed and k == 1
    run_chooser(chooser, ThreadChooser.PROBE_STEPS, {1: 1.5, 2: 1.0}.get)
    assert chooser.best == 2


def test_a_steady_machine_is_not_probed_more_often():
    chooser = ThreadChooser(2)
    rng = np.random.default_rng(1)
    picks = run_chooser(chooser, 5000, lambda k: (1.0 if k == 2 else 1.5) * rng.uniform(0.9, 1.1))
    assert picks[1000:].count(1) <= 9 * ThreadChooser.PROBE_STEPS  # a probe per 512 steps
