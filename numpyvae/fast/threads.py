"""How many threads a training step runs on: chosen by timing the steps themselves.

On an idle machine every core helps: the Numba backend's kernels split each
matrix product and each elementwise pass between its threads. When another
process keeps a core busy, a parallel region on two threads waits at its
end for whichever thread the scheduler has set aside, at every one of the
step's regions (twenty-odd on the per-op path, seven in the one-call step
at batch 128), and one thread can be faster. Idle, two threads run the
default VAE's step faster than one; beside one competing CPU-bound process
one thread runs as fast as two or faster on TBB, and OpenMP's spinning
threads collapse, which one thread escapes. Measured by
``benchmarks/bench_core_share.py`` (the step on one thread and on all,
idle and beside a busy process, with the cores the process was granted:
``benchmarks/results/core_share.json``) and ``benchmarks/bench_peers.py``
(its threading table: each threading layer). Which is faster changes while
a run goes on (a notebook starts next door, a course server empties), so
the step measures it, all the time.

:class:`ThreadChooser` runs one count and now and then probes the other
for a few steps, comparing the two counts' median step times; the count
with more threads is chosen only when it is faster by a margin (10%),
so a busy machine where both run alike gets its core back. A probe that
loses costs a few slow steps, so the interval between probes doubles after
each lost probe (from :attr:`ThreadChooser.PROBE_EVERY` up to
:attr:`ThreadChooser.PROBE_MOST`) and is reset when a probe wins; and it is
at least long enough that the time lost to a probe is a small share of the
steps until the next (:attr:`ThreadChooser.PROBE_COST`): at a large batch, on
an idle machine, one thread's step takes far longer than two threads', and
frequent probes of it were a visible part of a run's time
(``benchmarks/bench_chooser.py``). A change of the machine is still answered
at once, by the slowdown rule below, whatever the interval.

:func:`step_threads` is the ``with`` block a training loop wraps each step
in: one chooser per model, kept as long as the model lives.

The thread count changes the speed, never a bit of the results: each kernel
gives every output element to one thread, whose arithmetic does not depend
on how many others there are, and the one-call step on one thread runs its
products whole only where that was checked to give the same bits
(:mod:`numpyvae.fast.whole_products`). The tests train on one and on two
threads and compare the parameters exactly.
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref

__all__ = ["ThreadChooser", "step_threads"]


class ThreadChooser:
    """The thread count of the next step, among ``1`` and ``most``, by measured step time.

    Step times are noisy (another process wakes, the cache is cold), so
    one fast step proves nothing: the count in use is judged by the median
    of its last :attr:`WINDOW` steps, a probe of the other count runs
    :attr:`PROBE_STEPS` steps in a row and is judged by their median, and
    more threads must be faster by :attr:`MARGIN` to be chosen (fewer win a
    tie). When the count
    in use runs slower by :attr:`SLOWDOWN` than its figure at the last probe
    for two windows in a row (another program started), the other count is
    probed at once, whatever the interval had grown to, and judged against
    the count in use's next :attr:`PROBE_STEPS` steps, run just before it,
    not against the window that slowed: on a shared machine a burst of
    another program's work often ends about when it is noticed, and a probe
    judged against the burst's slow steps would wrongly give up a thread.
    """

    PROBE_EVERY = 32  # steps between probes of the other count, at first
    PROBE_MOST = 512  # ... doubling after every probe that loses, up to this
    PROBE_STEPS = 3  # steps a probe runs, in a row
    PROBE_COST = 0.01  # a lost probe's extra time, as a share of the steps until the next one
    WINDOW = 9  # recent steps of the count in use that judge it
    MARGIN = 0.1  # more threads must be this much faster (as a fraction) to be chosen
    SLOWDOWN = 0.3  # the count in use this much slower than at the last probe: probe now
    WARMUP = 2  # the first steps compile or load kernels: not timed

    def __init__(self, most: int):
        self.candidates = sorted({1, max(1, int(most))})
        self.best = self.candidates[-1]
        self.steps = 0
        self.interval = self.PROBE_EVERY
        self.cost: dict[int, float] = {}  # the median step time of each count, last measured
        self._recent: list[float] = []  # the count in use: its last WINDOW step times
        self._probe: list[float] = []  # the probe running now: its step times so far
        self._reference = None  # the median of the count in use when the last probe ended
        self._slow_windows = 0  # windows in a row in which that count ran slower than it
        self._next_probe = self.WARMUP + self.WINDOW + 1  # try the other count early

    def pick(self) -> int:
        """The thread count to run the next step on (call :meth:`record` after it)."""
        self.steps += 1
        if len(self.candidates) == 1 or self.steps <= self.WARMUP:
            return self.best
        if self._probe or self.steps >= self._next_probe:
            return self._other()
        return self.best

    def record(self, k: int, seconds: float) -> None:
        """The step that :meth:`pick` chose ran on ``k`` threads and took ``seconds``."""
        if self.steps <= self.WARMUP or len(self.candidates) == 1:
            return
        if k == self.best:
            self._recent = (self._recent + [seconds])[-self.WINDOW:]
            self.cost[k] = _median(self._recent)
            if self._reference is not None and self.steps % self.WINDOW == 0:
                # judged once a window, and only two slow windows in a row count: a burst of
                # slow steps is noise, a lasting slowdown is another program
                slow = self.cost[k] > (1 + self.SLOWDOWN) * self._reference
                self._slow_windows = self._slow_windows + 1 if slow else 0
                if self._slow_windows >= 2:  # probe, judging the count in use afresh:
                    self._reference, self._slow_windows = None, 0  # its steps just before
                    self.interval = self.PROBE_EVERY
                    self._recent = []
                    self._next_probe = self.steps + self.PROBE_STEPS + 1
            return
        self._probe.append(seconds)
        if len(self._probe) < self.PROBE_STEPS:
            return
        probe, self._probe = _median(self._probe), []
        self.cost[k] = probe
        if not self._recent or self._wins(k, probe, _median(self._recent)):
            self.best, self._recent, self._reference = k, [], probe
            self.interval = self.PROBE_EVERY
        else:  # a lost probe waits twice as long before the next one, and long enough
            current = self._reference = _median(self._recent)
            self.interval = min(max(2 * self.interval, self._paid_for(probe, current)),
                                self.PROBE_MOST)
        self._next_probe = self.steps + self.interval

    def _paid_for(self, probe: float, current: float) -> int:
        """Steps of the count in use for which a probe's extra time is :attr:`PROBE_COST`.

        A probe of ``PROBE_STEPS`` steps taking ``probe`` each, where the
        count in use takes ``current``, costs ``PROBE_STEPS * (probe -
        current)`` more than running on; spread over ``n`` steps of
        ``current`` that is the share ``PROBE_STEPS * (probe - current) /
        (n * current)``, at most :attr:`PROBE_COST` when ``n`` is this.
        """
        extra = self.PROBE_STEPS * max(probe - current, 0.0)
        return math.ceil(extra / (self.PROBE_COST * current)) if current > 0 else 0

    def _wins(self, k: int, probe: float, current: float) -> bool:
        """Whether the probe of ``k`` threads (median step ``probe``) beats the count in use.

        More threads must be faster by :attr:`MARGIN` to win; fewer threads
        win unless the count in use is faster by that margin. A thread that
        does not speed the step up only takes a core from the machine's other
        programs, and under contention it makes the step's time less even
        (with one competing process on two cores, two threads and one ran
        steps of the same median, the two threads with the longer tail).
        """
        if k > self.best:
            return probe < (1 - self.MARGIN) * current
        return not current < (1 - self.MARGIN) * probe

    def _other(self) -> int:
        return next(c for c in self.candidates if c != self.best)


def _median(values) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


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
