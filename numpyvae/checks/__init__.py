"""What ``numpyvae gradcheck`` runs beyond each layer's own backward: the whole tool in one call.

:func:`numpyvae.gradcheck.standard_checks` compares every layer's and every
model's backward with central differences. A gradient check alone misses
whole classes of bugs (a gradient written with ``=`` where ``+=`` belongs
passes it; a loss written with the wrong density has gradients consistent
with the wrong loss; an optimizer has no gradient to check), so the tool
also runs, in this package:

* :mod:`.accumulation` — two backward calls without ``zero_grad`` give twice
  the gradient, and ``zero_grad`` clears what the optimizer reads;
* :mod:`.optimizers` — one step of SGD, momentum, Nesterov, Adam and AdamW
  against the textbook formulas, written out again here, at steps 1, 2 and 10;
* :mod:`.densities` — each likelihood's loss value, the posterior's sample
  and KL against the textbook densities, and every backward path of the
  likelihoods and the latent layer (``nll_backward`` too, which IWAE uses);
* :mod:`.objectives` — the importance-weighted objective's loss value and
  gradient, for each likelihood and the conditional model;
* :mod:`.fastpath` — with the Numba backend: each of its ops, and a whole
  training step, against the reference at the shapes training runs.

Every check returns :class:`~numpyvae.gradcheck.GradReport` rows that name the
parameter or op, the largest error and where it is.

The Numba backend is reached by name (:func:`numpyvae.backend.get_backend`),
never imported: this package is part of the core.
"""

from __future__ import annotations

from ..backend import get_backend


def tool_checks(backend=None, seed: int = 0, *, fast_path: bool = False) -> list:
    """Every check of ``numpyvae gradcheck`` on ``backend``: a list of reports.

    ``fast_path=True`` adds the Numba backend's comparison with the reference
    at training shapes (:func:`.fastpath.fast_path_checks`).
    """
    from ..gradcheck import standard_checks
    from .accumulation import accumulation_checks
    from .densities import density_checks
    from .objectives import objective_checks
    from .optimizers import optimizer_checks

    backend = get_backend(backend)
    reports = list(standard_checks(backend=backend, seed=seed))
    reports += density_checks(backend, seed)
    reports += objective_checks(backend, seed)
    reports += accumulation_checks(backend, seed)
    reports += optimizer_checks(backend, seed)
    if fast_path:
        from .fastpath import fast_path_checks

        reports += fast_path_checks(seed)
    return reports


__all__ = ["tool_checks"]
