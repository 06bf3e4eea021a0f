"""Compiling the Numba kernels before training starts, and saying so.

The first time the ``numba`` backend runs on a machine it compiles its
kernels, for many seconds; after that they load from Numba's on-disk cache
in a fraction of the time (``benchmarks/bench_startup.py`` measures both:
the first training step cold and cached). Left to happen inside the first
training step, that time shows up as a progress bar whose first batch takes
as long as the compilation, with an estimate of most of an hour.
:func:`compile_kernels` instead runs one training step (and one
evaluation) of a throwaway model built like the real one, on two examples,
before the bar starts. Numba compiles once per argument *type*, not per
size, so this compiles exactly what training will use, and it leaves the
real model, its optimizer and every random stream untouched. When the step
takes longer than a moment, the user is told what is happening.

What does not live here: the kernels (:mod:`numpyvae.backend`), the training
loop (:mod:`numpyvae.app.train`).
"""

from __future__ import annotations

import threading
import time

import numpy as np

#: Seconds a warm-up may take before it is announced (a cached load takes less).
ANNOUNCE_AFTER = 0.5
MESSAGE = "compiling the numba kernels, once (later runs load them from the cache) ..."


def announce_if_slow(work, log, message=MESSAGE, after=ANNOUNCE_AFTER) -> float:
    """Run ``work()``; if it is still running after ``after`` seconds, ``log(message)``.

    When the message was shown, also log how long it took. Returns the seconds taken.
    """
    shown = threading.Event()

    def announce():
        shown.set()
        log(message)

    timer = threading.Timer(after, announce)
    timer.daemon = True
    start = time.perf_counter()
    timer.start()
    try:
        work()
    finally:
        timer.cancel()
    seconds = time.perf_counter() - start
    if shown.is_set():
        log(f"compiled in {seconds:.1f} s")
    return seconds


def compile_kernels(make_model, optimizer_cls, x, log, lr=1e-3) -> float | None:
    """Compile what training a model from ``make_model()`` needs, on two rows of ``x``.

    ``make_model`` builds a fresh model like the one to be trained (same
    dtype, layers, likelihood and backend). Nothing happens for a backend
    other than numba. Returns the seconds taken, or None.
    """
    probe = make_model()
    if getattr(probe.backend, "NAME", "") != "numba":
        return None
    batch = np.ascontiguousarray(np.asarray(x[:2]).reshape(min(2, len(x)), -1),
                                 dtype=probe.dtype)

    def step():
        optimizer = optimizer_cls(probe.params, lr=lr, backend=probe.backend)
        result = probe.loss_and_grads(batch, beta=1.0, rng=np.random.default_rng(0))
        optimizer.step(result.grads)
        probe.elbo_terms(batch, rng=np.random.default_rng(0))

    return announce_if_slow(step, log)
