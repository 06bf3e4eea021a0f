"""A training step on one thread with every product whole, where that gives the same bits.

The one-call step (:func:`numpyvae.fast.numba_step.mlp_step`) cuts its work
into one block per thread of Numba's pool however many threads run it, so
that the thread count never changes a bit of the results
(``tests/test_threads.py``): the thread chooser may move a run between one
thread and two at any step, and a resumed run must follow the same path to
the bit. On one thread of a larger pool (what the chooser picks beside a
busy process) that costs something: each large product is two half-size
BLAS calls where one would do, and the forward pass runs in two blocks of
examples. (Under a one-CPU affinity mask the pool itself is one thread,
and its one block is the whole product already.) On the default VAE at
batch 128, one thread ran the step about 5% faster with every product
whole, with Intel MKL and with NumPy's OpenBLAS, and about as fast at
batch 32 (``benchmarks/bench_whole_products.py``).

Whether a product cut in two gives the same bits as the whole product is
the BLAS's business. Each element of ``C = A B`` is a sum over the same
``k`` whichever block of ``C`` holds it; MKL and OpenBLAS add it up in the
same order either way at the shapes measured, but nothing in their
contract says so. So it is checked, once for each shape of step, from the
step itself: the first step on one thread runs both ways from the same
state, and the whole products are kept only if every output came out with
exactly the bits of the blocked step. Where they do not (a data-parallel
step, whose blocks' gradients are summed, may not), one thread keeps the
blocks, and the step's result is the blocked one.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Outputs larger than this (bytes, all together) are not checked, since the
#: check keeps a copy of them: such a step keeps its blocks on one thread.
MOST_BYTES_CHECKED = 1 << 28

_SAME_BITS: dict = {}  # step shape -> whether whole products gave the blocked step's bits


def step_on_one_thread(run, outputs, shape, blocks):
    """Run a step on one thread, its products whole if that gives the blocked step's bits.

    ``run(tasks)`` runs the step with its work cut into ``tasks`` blocks and
    returns its result; ``outputs`` are the arrays it writes (every one whose
    bits must not depend on the path: parameters, gradients, optimizer
    state, losses); ``shape`` is a hashable description of the step (every
    array shape, dtype and layer in it); ``blocks`` is the pool's block
    count, the path every thread count takes. Returns ``run``'s result.
    """
    same = _SAME_BITS.get(shape)
    if same is not None:
        return run(1 if same else blocks)
    if sum(a.nbytes for a in outputs) > MOST_BYTES_CHECKED:
        _SAME_BITS[shape] = False
        return run(blocks)
    before = [a.copy() for a in outputs]
    blocked = run(blocks)
    blocked_bits = _fingerprint(outputs)
    _restore(outputs, before)
    whole = run(1)
    same = whole == blocked and _fingerprint(outputs) == blocked_bits
    _SAME_BITS[shape] = same
    if same:
        return whole
    _restore(outputs, before)  # and take the blocked step again: the one every count takes
    return run(blocks)


def checked(shape):
    """What the check found for ``shape``: True, False, or None if not checked yet."""
    return _SAME_BITS.get(shape)


def _restore(outputs, saved):
    for array, copy in zip(outputs, saved, strict=True):
        array[...] = copy


def _fingerprint(arrays):
    """A digest of the arrays' bytes: equal digests, equal bits (nan and -0.0 included)."""
    digest = hashlib.blake2b(digest_size=32)
    for a in arrays:
        digest.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1))
    return digest.digest()
