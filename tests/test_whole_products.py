"""The one-thread step with whole products (:mod:`numpyvae.fast.whole_products`).

It is taken only where the first one-thread step of its shape, run both
ways from the same state, gave the blocked step's bits in every output;
otherwise the blocked step's result stands and one thread keeps the blocks.
"""

from __future__ import annotations

import numpy as np
import pytest

from numpyvae.fast import whole_products
from numpyvae.fast.whole_products import checked, step_on_one_thread


@pytest.fixture(autouse=True)
def fresh_verdicts(monkeypatch):
    monkeypatch.setattr(whole_products, "_SAME_BITS", {})


def fake_step(outputs, whole_bits):
    """A step that adds 1 to every output (whole products: adds ``whole_bits`` instead)."""
    calls = []

    def run(tasks):
        calls.append(tasks)
        for a in outputs:
            a += 1.0 if tasks > 1 else whole_bits
        return True

    return run, calls


def test_whole_products_are_kept_where_they_give_the_blocked_bits():
    outputs = [np.zeros(5), np.full(3, 2.0, np.float32)]
    run, calls = fake_step(outputs, whole_bits=1.0)
    assert step_on_one_thread(run, outputs, "shape", 2) is True
    assert calls == [2, 1] and checked("shape") is True
    np.testing.assert_array_equal(outputs[0], 1.0)  # one step, not two
    np.testing.assert_array_equal(outputs[1], 3.0)
    step_on_one_thread(run, outputs, "shape", 2)
    assert calls == [2, 1, 1]  # checked once: whole products from then on
    np.testing.assert_array_equal(outputs[0], 2.0)


@pytest.mark.parametrize("whole_bits", [1.0 + 2.0**-40, -0.0, np.nan])
def test_any_difference_in_the_bits_keeps_the_blocks_and_the_blocked_result(whole_bits):
    outputs = [np.zeros(4), np.ones(2)]
    run, calls = fake_step(outputs, whole_bits)
    step_on_one_thread(run, outputs, "shape", 2)
    assert checked("shape") is False
    assert calls == [2, 1, 2]  # the blocked step taken again from the same state
    np.testing.assert_array_equal(outputs[0], 1.0)
    np.testing.assert_array_equal(outputs[1], 2.0)
    step_on_one_thread(run, outputs, "shape", 2)
    assert calls == [2, 1, 2, 2]


def test_a_different_result_keeps_the_blocks():
    outputs = [np.zeros(3)]
    results = iter([True, False, True])
    calls = []

    def run(tasks):
        calls.append(tasks)
        outputs[0] += 1.0
        return next(results)

    assert step_on_one_thread(run, outputs, "shape", 2) is True
    assert checked("shape") is False and calls == [2, 1, 2]
    np.testing.assert_array_equal(outputs[0], 1.0)


def test_outputs_too_large_to_copy_are_not_checked(monkeypatch):
    monkeypatch.setattr(whole_products, "MOST_BYTES_CHECKED", 16)
    outputs = [np.zeros(3)]  # 24 bytes
    run, calls = fake_step(outputs, whole_bits=1.0)
    step_on_one_thread(run, outputs, "shape", 2)
    assert calls == [2] and checked("shape") is False


def test_each_shape_is_checked_on_its_own():
    outputs = [np.zeros(2)]
    run, calls = fake_step(outputs, whole_bits=1.0)
    step_on_one_thread(run, outputs, "a", 2)
    step_on_one_thread(run, outputs, "b", 2)
    assert calls == [2, 1, 2, 1]


def test_a_verdict_holds_for_the_path_it_was_checked_on(monkeypatch):
    # The same model and batch size, first with each product shared between
    # the threads, then data-parallel (whose summed gradients whole products
    # do not reproduce): the second path is checked on its own, and one
    # thread gives every thread's bits on it.
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs a pool of two threads")
    from numpyvae import VAE, Adam, train_step
    from numpyvae.fast import numba_step
    from numpyvae.fast.threads import ThreadChooser

    def train(k, data_parallel):
        monkeypatch.setattr(numba_step, "DATA_PARALLEL_ROWS", 1 if data_parallel else 10**9)
        monkeypatch.setattr(ThreadChooser, "pick", lambda self: k)
        model = VAE(10, (7,), 3, backend="numba", dtype="float32", seed=1)
        opt = Adam(model.params, backend="numba")
        rng = np.random.default_rng(8)
        losses = [train_step(model, opt, rng.random((40, 10), dtype=np.float32)).loss
                  for _ in range(4)]
        return losses, model.flat_params.copy()

    train(1, data_parallel=False)
    one = train(1, data_parallel=True)
    every = train(numba.config.NUMBA_NUM_THREADS, data_parallel=True)
    assert one[0] == every[0]
    np.testing.assert_array_equal(one[1], every[1])
    assert len(whole_products._SAME_BITS) == 2
