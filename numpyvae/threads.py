"""How many threads a training step runs on: chosen by timing the steps themselves.

On an idle machine every core helps: the Numba backend's kernels split each
matrix product and each elementwise pass between its threads. When another
process keeps a core busy, a kernel on two threads waits at its end for
whichever thread the scheduler has set aside, at every one of the step's
twenty-odd kernels, and one thread is faster. Measured on the default VAE at
batch 128 on two cores (``benchmarks/bench_peers.py``): idle, two threads
~36,000 samples/s against one thread's ~23,000; with one competing
CPU-bound process, one thread ~20,000 against two threads' ~17,000 (and
~3,000 on OpenMP's spinning threads). Which is faster changes while a run
goes on (a notebook starts next door, a course server empties), so the step
measures it, all the time.

:class:`ThreadChooser` keeps a running cost (an exponential average of step
times) per thread count, runs the cheaper one, and now and then probes the
other once. A probe that loses costs one slow step, so the interval between
probes doubles after each lost probe (from :attr:`ThreadChooser.PROBE_EVERY`
up to :attr:`ThreadChooser.PROBE_MOST`) and is reset when a probe wins.

:func:`step_threads` is the ``with`` block a training loop wraps each step
in: one chooser per model, kept as long as the model lives.

The thread count changes the speed, never a bit of the results: each kernel
gives every output element to one thread, whose arithmetic does not depend
on how many others there are (the tests train on one and on two threads and
compare the parameters exactly).
"""

from __future__ import annotations

import contextlib
import time
import weakref

__all__ = ["ThreadChooser", "step_threads"]


class ThreadChooser:
    """The thread count of the next step, among ``1`` and ``most``, by measured step time."""

    PROBE_EVERY = 32  # steps between probes of the other count, at first
    PROBE_MOST = 512  # ... doubling after every probe that loses, up to this
    SMOOTHING = 0.3
    WARMUP = 2  # the first steps compile or load kernels: not timed

    def __init__(self, most: int):
        self.candidates = sorted({1, max(1, int(most))})
        self.cost: dict[int, float] = {}
        self.steps = 0
        self.best = self.candidates[-1]
        self.interval = self.PROBE_EVERY
        self._next_probe = self.PROBE_EVERY
        self._probing = False

    def pick(self) -> int:
        """The thread count to run the next step on (call :meth:`record` after it)."""
        self.steps += 1
        self._probing = False
        if len(self.candidates) == 1 or self.steps <= self.WARMUP:
            return self.best
        untried = [k for k in self.candidates if k not in self.cost]
        if untried:
            return untried[0]
        if self.steps >= self._next_probe:
            self._probing = True
            return next(k for k in self.candidates if k != self.best)
        return self.best

    def record(self, k: int, seconds: float) -> None:
        """The step that :meth:`pick` chose ran on ``k`` threads and took ``seconds``."""
        if self.steps <= self.WARMUP:
            return
        old = self.cost.get(k)
        if old is None or k != self.best:  # a probe: the old figure is stale, take the new one
            self.cost[k] = seconds
        else:
            self.cost[k] = old + self.SMOOTHING * (seconds - old)
        previous = self.best
        self.best = min(self.cost, key=self.cost.get)
        if self._probing:  # a lost probe waits twice as long before the next one
            won = self.best != previous
            self.interval = self.PROBE_EVERY if won else min(2 * self.interval, self.PROBE_MOST)
            self._next_probe = self.steps + self.interval


_CHOOSERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def step_threads(model):
    """``with step_threads(model):`` runs one training step on the thread count chosen for it.

    On a backend without threads (the NumPy reference), or with one usable
    CPU, it does nothing.
    """
    backend = getattr(model, "backend", None)
    most = backend.max_threads() if hasattr(backend, "max_threads") else 1
    if most <= 1 or not hasattr(backend, "threads"):
        yield
        return
    try:
        chooser = _CHOOSERS.get(model)
    except TypeError:  # not weak-referenceable
        yield
        return
    if chooser is None or chooser.candidates[-1] != most:
        chooser = _CHOOSERS[model] = ThreadChooser(most)
    k = chooser.pick()
    t0 = time.perf_counter()
    with backend.threads(k):
        yield
    chooser.record(k, time.perf_counter() - t0)


def chooser_of(model) -> ThreadChooser | None:
    """The chooser :func:`step_threads` keeps for ``model`` (None before its first step)."""
    try:
        return _CHOOSERS.get(model)
    except TypeError:
        return None
