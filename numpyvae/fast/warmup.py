"""Compiling the Numba kernels before training starts, and saying so only when it happens.

The first time the ``numba`` backend runs on a machine it compiles its
kernels, for many seconds; after that they load from Numba's on-disk cache
in a fraction of the time (``benchmarks/bench_startup.py`` measures both:
the first training step cold and cached). Left to happen inside the first
training step, that time shows up as a progress bar whose first batch takes
as long as the compilation, with an estimate of most of an hour.
:func:`compile_kernels` instead runs one training step (and one
evaluation) of a throwaway model built like the real one, on one batch,
through the very function the training loop calls, before the bar starts.
Numba compiles once per argument *type*, not per size, so this compiles
exactly what training will use, and it leaves the real model, its optimizer
and every random stream untouched.

What the user sees is what happens: nothing when the kernels load from the
cache; when Numba is compiling (its dispatchers count a cache miss), one
line saying so, on a terminal a line that counts the kernels compiled and
the seconds, and at the end how many were compiled in how long.

What does not live here: the kernels (:mod:`numpyvae.fast.numba_kernels` and
its neighbours), the training loop (:mod:`numpyvae.app.train`).
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from ..step import step_of

#: Seconds of compiling before it is announced (a few kernels compile in less).
ANNOUNCE_AFTER = 0.5
MESSAGE = "compiling the numba kernels for this model, once (later runs load them from the cache)"
#: Seconds between two updates of the counting line on a terminal.
TICK = 1.0


def kernels_compiled() -> int:
    """How many kernel signatures of the fast path Numba has compiled (not loaded) so far.

    Counted from each dispatcher's statistics: a signature missing from the
    on-disk cache is a *cache miss*, and is compiled.
    """
    from numba.core.dispatcher import Dispatcher

    seen, misses = set(), 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("numpyvae.fast.") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and id(value) not in seen:
                seen.add(id(value))
                misses += sum(value.stats.cache_misses.values())
    return misses


def announce_if_slow(work, log, message=MESSAGE, after=ANNOUNCE_AFTER, *,
                     compiled=kernels_compiled, status=None) -> float:
    """Run ``work()``; if it compiles for longer than ``after`` seconds, say so.

    ``compiled()`` counts the kernels compiled so far: while it does not
    grow, nothing is said (loading from the cache is quiet). Once compiling
    has gone on for ``after`` seconds, ``log(message)``; then, given
    ``status`` (a function that rewrites one line of a terminal), every
    :data:`TICK` seconds the kernels compiled and the seconds so far; at the
    end ``log`` says how many kernels were compiled in how long. Returns the
    seconds ``work()`` took.
    """
    before = compiled()
    start = time.perf_counter()
    done, shown = threading.Event(), threading.Event()

    def watch():
        while not done.wait(0.1 if not shown.is_set() else TICK):
            elapsed = time.perf_counter() - start
            count = compiled() - before
            if not shown.is_set():
                if count > 0 and elapsed >= after:
                    shown.set()
                    log(message)
            elif status is not None:
                status(f"  {count} kernels compiled, {elapsed:.0f} s")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        work()
    finally:
        done.set()
        watcher.join()
    seconds = time.perf_counter() - start
    if shown.is_set():
        if status is not None:
            status("")
        log(f"compiled {compiled() - before} kernels in {seconds:.1f} s")
    return seconds


def terminal_status(stream=None):
    """A ``status`` for :func:`announce_if_slow` that rewrites one line of ``stream``.

    None when ``stream`` (default ``sys.stderr``) is not a terminal: a log
    file gets only the first and the last line.
    """
    stream = sys.stderr if stream is None else stream
    if not getattr(stream, "isatty", lambda: False)():
        return None

    def status(text):
        stream.write("\r" + text.ljust(40) + ("" if text else "\r"))
        stream.flush()

    return status


def compile_kernels(make_model, optimizer_cls, x, log, lr=1e-3, *, batch_size=128,
                    labels=None, objective=None, status=None) -> float | None:
    """Compile what training a model from ``make_model()`` needs, on one batch of ``x``.

    Runs :func:`warmup_step` under :func:`announce_if_slow`. Nothing happens
    for a backend other than numba. Returns the seconds taken, or None.
    """
    step = warmup_step(make_model, optimizer_cls, x, lr, batch_size=batch_size, labels=labels,
                       objective=objective)
    if step is None:
        return None
    return announce_if_slow(step, log, status=status)


def warmup_step(make_model, optimizer_cls, x, lr=1e-3, *, batch_size=128, labels=None,
                objective=None):
    """A function that takes one training step and one evaluation of a throwaway model.

    ``make_model`` builds a fresh model like the one to be trained (same
    dtype, layers, likelihood and backend). The step is the one the training
    loop takes (:func:`numpyvae.step.step_of`), with the run's ``objective``
    and, for a conditional model, ``labels`` (the first rows' are used), on
    the first ``batch_size`` rows of ``x``. Calling it compiles (or loads)
    every kernel training will use. None for a backend other than numba.
    """
    probe = make_model()
    if getattr(probe.backend, "NAME", "") != "numba":
        return None
    rows = max(1, min(int(batch_size), len(x)))
    batch = np.ascontiguousarray(np.asarray(x[:rows]).reshape(rows, *probe.input_shape),
                                 dtype=probe.dtype)
    given = {} if labels is None else {"labels": np.asarray(labels)[:rows]}

    def step():
        optimizer = optimizer_cls(probe.params, lr=lr, backend=probe.backend)
        step_of(probe.backend)(probe, optimizer, batch, objective=objective, beta=1.0,
                               rng=np.random.default_rng(0), **given)
        probe.elbo_terms(batch, rng=np.random.default_rng(0), **given)

    return step
