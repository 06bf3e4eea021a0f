"""One training step, written once: the loss and its gradients, then the optimizer's step.

:func:`step` is the whole of it::

    result = objective.loss_and_grads(model, x, labels=labels, eps=eps, beta=beta, rng=rng)
    if math.isfinite(result.loss):
        optimizer.step(result.grads)

for every model (:class:`~numpyvae.VAE`, :class:`~numpyvae.CVAE`,
:class:`~numpyvae.Autoencoder`) and every objective. A batch whose loss
overflowed is not stepped on: the caller sees the loss and decides.

An *objective* is an object with a method
``loss_and_grads(model, x, *, labels, eps, beta, rng)`` that returns a result
with ``loss``, ``recon``, ``kl`` and ``grads`` (the model's gradient arrays),
and a method ``check(model)`` that refuses a model it cannot train. Two exist:

* :class:`ELBO` (the default): the model's own loss, ``model.loss_and_grads``
  (the negative ELBO with the KL weighted by ``beta``; an autoencoder's
  reconstruction loss);
* :class:`numpyvae.iwae.ImportanceWeighted`: the importance-weighted bound
  with ``k`` samples per example.

Which function takes the step is the backend's choice (:func:`step_of`): the
NumPy reference has none of its own, so :func:`step` itself runs; the Numba
backend offers ``train_step``, the same step on the fastest thread count, with
the forward and backward pass as one kernel call where it can.

What does not live here: the fast path's one-call step
(:func:`numpyvae.fast.step.train_step`, the same step with the forward and
backward pass fused into one kernel call, and the thread count), the
training loop (:mod:`numpyvae.app.train`), the optimizers (:mod:`numpyvae.optim`).
"""

from __future__ import annotations

import math

__all__ = ["ELBO", "step", "step_of"]


class ELBO:
    """The default objective: the model's own loss, ``model.loss_and_grads``.

    For a VAE (or CVAE) the negative evidence lower bound with the KL weighted
    by ``beta``; for an autoencoder the reconstruction loss (``beta`` and
    ``eps`` unused). ``labels`` are passed on for a conditional model only.
    """

    def check(self, model) -> None:
        """Every model has its own loss: nothing to refuse."""

    def loss_and_grads(self, model, x, *, labels=None, eps=None, beta=1.0, rng=None):
        """``model.loss_and_grads(x, ...)``: the loss of the batch and every gradient."""
        given = {} if labels is None else {"labels": labels}
        return model.loss_and_grads(x, eps=eps, beta=beta, rng=rng, **given)

    def __repr__(self):
        return "ELBO()"


def step(model, optimizer, x, *, labels=None, objective=None, eps=None, beta=1.0, rng=None):
    """One optimizer step on batch ``x``: the loss before the step, and the gradients.

    Parameters
    ----------
    model : VAE, CVAE or Autoencoder
    optimizer : an optimizer of :mod:`numpyvae.optim` built on ``model.params``
    x : ndarray, shape ``(B, *input_shape)``
    labels : int array, shape (B,), optional
        The class of each example, for a conditional model.
    objective : optional
        :class:`ELBO` when None, or e.g. :class:`numpyvae.iwae.ImportanceWeighted`.
    eps, beta, rng :
        As :meth:`numpyvae.VAE.loss_and_grads`: the noise (or the generator
        it is drawn from) and the weight of the KL term.

    Returns
    -------
    The objective's result (``loss``, ``recon``, ``kl``, ``grads``). When the
    loss is not finite the parameters are left as they were.
    """
    if objective is None:  # the ELBO: the model's own loss (its labels, if it is conditional)
        given = {} if labels is None else {"labels": labels}
        result = model.loss_and_grads(x, eps=eps, beta=beta, rng=rng, **given)
    else:
        result = objective.loss_and_grads(model, x, labels=labels, eps=eps, beta=beta, rng=rng)
    if math.isfinite(result.loss):
        optimizer.step(result.grads)
    return result


def step_of(backend):
    """The function that takes a training step on ``backend``: its own, or :func:`step`.

    A backend may offer ``train_step`` with :func:`step`'s signature (the Numba
    backend does); the training loop calls what this returns, whatever the model.
    """
    return getattr(backend, "train_step", step)
