"""The work-buffer helpers: the same array while shape and dtype hold, one set per thread."""

from __future__ import annotations

import threading

import numpy as np

from numpyvae.fast.buffers import ThreadLocalBuffers, WorkBuffers, out_or_empty


def test_work_buffers_are_reused_until_shape_or_dtype_change():
    work = WorkBuffers()
    a = work.get("y", (2, 3), np.float32)
    assert a.shape == (2, 3) and a.dtype == np.float32
    assert work.get("y", (2, 3), np.float32) is a
    assert work.get("dx", (2, 3), np.float32) is not a  # another name, another array
    b = work.get("y", (4, 3), np.float32)
    assert b is not a and b.shape == (4, 3)
    c = work.get("y", (4, 3), np.float64)
    assert c is not b and c.dtype == np.float64
    work.clear()
    assert work.get("y", (4, 3), np.float64) is not c


def test_out_or_empty_writes_into_the_callers_array():
    out = np.zeros(3)
    assert out_or_empty(out, (3,), np.float64) is out
    fresh = out_or_empty(None, (2, 2), np.float32)
    assert fresh.shape == (2, 2) and fresh.dtype == np.float32


def test_thread_local_buffers_give_each_thread_its_own_arrays():
    work = ThreadLocalBuffers()
    mine = work.get("t", (3,), np.float64)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(work.get("t", (3,), np.float64)))
    thread.start()
    thread.join()
    assert work.get("t", (3,), np.float64) is mine
    assert theirs[0] is not mine and theirs[0].shape == (3,)
