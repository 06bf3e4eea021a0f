"""How every Numba kernel of the backend is compiled: the options, and the one call that jits.

Each kernel module (:mod:`.numba_math`, :mod:`.numba_blas`,
:mod:`.numba_kernels`, :mod:`.numba_step`) defines its kernels as plain
Python functions and, at its bottom, hands a table of their names to
:func:`jit_kernels`. With ``NUMBA_DISABLE_JIT=1`` Numba's ``njit`` returns the
function unchanged, so the same code runs as plain Python and can be stepped
through in a debugger (slowly).

* ``cache=True`` keeps the compiled machine code on disk (in ``__pycache__``
  next to the module), so a second run loads instead of compiling. Numba
  checks only the file that defines a kernel: after editing a module whose
  functions other modules' kernels call (:mod:`.numba_math`,
  :mod:`.numba_blas`, :mod:`.numba_kernels`), delete
  ``numpyvae/backend/__pycache__`` so that those kernels compile again.
* ``error_model="numpy"`` makes ``x / 0`` give inf or nan, as NumPy does,
  instead of raising; the check for it would also stop loops from vectorising.
* No ``fastmath``: exp and log stay exact to the last bit or two. The
  exceptions are named where they are made (:func:`.numba_math.reassoc_add`,
  and ``contract`` for the polynomials of :func:`.numba_math.exp_neg` and
  :func:`.numba_math.log1p_small`).
"""

from __future__ import annotations

import numba

SERIAL = {"cache": True, "nogil": True, "error_model": "numpy"}
PARALLEL = {**SERIAL, "parallel": True}


def jit_kernels(namespace: dict, kernels: dict) -> None:
    """Replace each function named in ``kernels`` by its jitted form, in ``namespace``.

    ``kernels`` maps a name to whether the kernel runs its ``prange`` loops
    on several threads (``parallel=True``) or serially.
    """
    for name, parallel in kernels.items():
        namespace[name] = numba.njit(**(PARALLEL if parallel else SERIAL))(namespace[name])
