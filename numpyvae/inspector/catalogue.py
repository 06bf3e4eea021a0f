"""A catalogue of known-wrong backward formulas, for the inspector's teaching mode.

Each :class:`Bug` is a mistake people make when they write a VAE's backward
pass by hand: the wrong formula, the node kinds it can be planted in, and a
function computing the wrong gradients. :func:`plant` returns a copy of an
inspection graph in which one node's op is wrapped so that its backward
gives the wrong answer. The wrapper is a new object used by that one trace:
the library, the model and every other trace keep the correct formulas.

=============================  ===================  ==========================================
bug                            planted in           wrong formula (correct one in brackets)
=============================  ===================  ==========================================
reparam-dropped-half           Reparameterize       dlogvar = dz·σ·ε  (½·dz·σ·ε)
reparam-exp-logvar-as-sigma    Reparameterize       dlogvar = ½·dz·exp(logvar)·ε  (½·dz·σ·ε)
kl-dropped-half                KL                   dlogvar = dkl·(exp(logvar) − 1)  (½·dkl·(…))
kl-mu-sign                     KL                   dmu = −dkl·mu  (dkl·mu)
transposed-weight-grad         layers with W        dW = (daᵀ·x) reshaped to W's shape  (xᵀ·da)
missing-bias-grad              layers with b        db = 0  (Σₙ daₙ)
bias-grad-mean                 layers with b        db = mean over the batch  (sum)
missing-activation-derivative  Linear(activation)   da = dy  (dy ⊙ f′(a))
relu-inverted-mask             ReLU                 dx = dy·[y ≤ 0]  (dy·[y > 0])
bernoulli-sign                 Likelihood           dout = x − sigmoid(out)  (sigmoid(out) − x)
loss-missing-batch-mean        Loss                 dnll = 1, dkl = β  (1/B, β/B)
concat-wrong-slice             ConcatLabel          dz = d[z|e_y][:, −L:]  (d[z|e_y][:, :L])
=============================  ===================  ==========================================

The last one is a conditional model's (:class:`~numpyvae.CVAE`): the
gradient of ``[z | e_y]`` read from the wrong end, its last ``L`` columns
(partly the label's) instead of its first ``L``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bug:
    """One wrong backward: where it applies and what it computes.

    ``wrong(op, douts, inputs, correct)`` gets the op, the upstream gradients,
    the op's inputs and the correct ``(dinputs, dparams)``, and returns the
    wrong ``(dinputs, dparams)`` (new dicts).
    """

    name: str
    applies: Callable[[object], bool]
    formula: str
    wrong: Callable


def _kind(*kinds):
    return lambda op: getattr(op, "kind", "") in kinds


def _has_param(key):
    return lambda op: getattr(op, "layer", None) is not None and key in op.params


def _reparam_dropped_half(op, douts, inputs, correct):
    dz, logvar, eps = douts["z"], inputs["logvar"], inputs["eps"]
    return {**correct[0], "logvar": dz * np.exp(0.5 * logvar) * eps}, correct[1]


def _reparam_exp_logvar(op, douts, inputs, correct):
    dz, logvar, eps = douts["z"], inputs["logvar"], inputs["eps"]
    return {**correct[0], "logvar": 0.5 * dz * np.exp(logvar) * eps}, correct[1]


def _kl_dropped_half(op, douts, inputs, correct):
    return {**correct[0], "logvar": douts["kl"] * (np.exp(inputs["logvar"]) - 1)}, correct[1]


def _kl_mu_sign(op, douts, inputs, correct):
    return {**correct[0], "mu": -douts["kl"] * inputs["mu"]}, correct[1]


def _transposed_weight(op, douts, inputs, correct):
    dW = correct[1]["W"]
    wrong = np.ascontiguousarray(np.swapaxes(dW, 0, -1)).reshape(dW.shape)
    return correct[0], {**correct[1], "W": wrong}


def _missing_bias(op, douts, inputs, correct):
    return correct[0], {**correct[1], "b": np.zeros_like(correct[1]["b"])}


def _bias_mean(op, douts, inputs, correct):
    B = np.shape(douts["out"])[0]
    return correct[0], {**correct[1], "b": correct[1]["b"] / B}


def _missing_activation_derivative(op, douts, inputs, correct):
    x, dy, W = inputs["x"], douts["out"], op.params["W"]
    return ({"x": dy @ W.T}, {**correct[1], "W": x.T @ dy, "b": dy.sum(axis=0)})


def _relu_inverted(op, douts, inputs, correct):
    y = op.forward(**inputs)["out"]
    return {"x": douts["out"] * (y <= 0)}, correct[1]


def _bernoulli_sign(op, douts, inputs, correct):
    return {"out": -correct[0]["out"]}, correct[1]


def _loss_missing_mean(op, douts, inputs, correct):
    B = np.shape(inputs["nll"])[0]
    return {k: g * B for k, g in correct[0].items()}, correct[1]


def _concat_wrong_slice(op, douts, inputs, correct):
    name = op.inputs[0]
    n = np.shape(inputs[name])[1]
    return {name: np.array(douts["out"][:, -n:], copy=True)}, correct[1]


BUGS: dict[str, Bug] = {b.name: b for b in (
    Bug("reparam-dropped-half", _kind("Reparameterize"),
        "dlogvar = dz * sigma * eps  (correct: dz * sigma * eps / 2)", _reparam_dropped_half),
    Bug("reparam-exp-logvar-as-sigma", _kind("Reparameterize"),
        "dlogvar = dz * exp(logvar) * eps / 2  (correct: sigma = exp(logvar / 2))",
        _reparam_exp_logvar),
    Bug("kl-dropped-half", _kind("KL"),
        "dlogvar = dkl * (exp(logvar) - 1)  (correct: dkl * (exp(logvar) - 1) / 2)",
        _kl_dropped_half),
    Bug("kl-mu-sign", _kind("KL"), "dmu = -dkl * mu  (correct: dkl * mu)", _kl_mu_sign),
    Bug("transposed-weight-grad", _has_param("W"),
        "dW = (da^T x) reshaped to W's shape  (correct: x^T da)", _transposed_weight),
    Bug("missing-bias-grad", _has_param("b"), "db = 0  (correct: sum over the batch of da)",
        _missing_bias),
    Bug("bias-grad-mean", _has_param("b"),
        "db = mean over the batch of da  (correct: the sum)", _bias_mean),
    Bug("missing-activation-derivative",
        lambda op: getattr(op, "kind", "").startswith("Linear(")
        and getattr(op, "activation", "identity") != "identity",
        "da = dy, forgetting f'(a)  (correct: da = dy * f'(a))",
        _missing_activation_derivative),
    Bug("relu-inverted-mask", _kind("ReLU"), "dx = dy * [y <= 0]  (correct: dy * [y > 0])",
        _relu_inverted),
    Bug("bernoulli-sign", lambda op: getattr(op, "name", None) == "bernoulli"
        and "Likelihood" in getattr(op, "kind", "") or getattr(op, "kind", "") == "Bernoulli",
        "dout = x - sigmoid(out)  (correct: sigmoid(out) - x)", _bernoulli_sign),
    Bug("loss-missing-batch-mean", _kind("Loss"),
        "dnll = 1, dkl = beta  (correct: 1/B and beta/B)", _loss_missing_mean),
    Bug("concat-wrong-slice", _kind("ConcatLabel"),
        "dz = d[z | e_y][:, -L:], the last L columns  (correct: the first L, [:, :L])",
        _concat_wrong_slice),
)}


class _Planted:
    """An op whose backward is one bug's wrong formula; everything else is the op's."""

    def __init__(self, op, bug: Bug):
        self._op, self._bug = op, bug

    def __getattr__(self, name):
        return getattr(self._op, name)

    def forward(self, **inputs):
        return self._op.forward(**inputs)

    def backward(self, douts, **inputs):
        correct = self._op.backward(douts, **inputs)
        return self._bug.wrong(self._op, douts, inputs, correct)


def plant(graph, bug: str, node: str | None = None):
    """A copy of ``graph`` with ``bug`` planted in ``node`` (default: the first it fits).

    Returns ``(graph, node_name)``. Raises ``ValueError`` naming the catalogue
    for an unknown bug, or the nodes it fits for a node it does not fit.
    """
    if bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; the catalogue has {sorted(BUGS)}")
    entry = BUGS[bug]
    fits = [name for name, op, _ in graph if entry.applies(op)]
    if not fits:
        raise ValueError(f"bug {bug!r} fits no node of this model")
    target = fits[0] if node is None else node
    if target not in fits:
        raise ValueError(f"bug {bug!r} cannot be planted in node {target!r}; it fits {fits}")
    return ([(name, _Planted(op, entry) if name == target else op, wiring)
             for name, op, wiring in graph], target)


def mystery(graphs, seed: int) -> tuple[int, str, str]:
    """One bug of the catalogue and a node it fits, drawn by ``seed``: a mystery to solve.

    ``graphs`` are inspection graphs (:func:`~numpyvae.inspector.trace.build_graph`
    of each candidate model). A bug is drawn uniformly among those that fit a
    node of some graph, then one of the nodes it fits. Returns
    ``(graph index, bug name, node name)``; the same seed and graphs give the
    same answer, so a seed can be handed out and the answer revealed later.
    """
    rng = np.random.default_rng(seed)
    fits = {name: [(i, node) for i, graph in enumerate(graphs)
                   for node, op, _ in graph if bug.applies(op)]
            for name, bug in sorted(BUGS.items())}
    names = [name for name, where in fits.items() if where]
    if not names:
        raise ValueError("no bug of the catalogue fits these models")
    name = names[int(rng.integers(len(names)))]
    index, node = fits[name][int(rng.integers(len(fits[name])))]
    return index, name, node


__all__ = ["Bug", "BUGS", "plant", "mystery"]
