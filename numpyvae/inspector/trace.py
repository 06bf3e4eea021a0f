"""Step through one forward and backward pass of a model, node by node, and check each node.

:func:`inspect` runs a model on a batch with the noise held fixed, as a graph
of small nodes: each layer of the encoder and the decoder, the split of the
encoder's output into ``mu`` and ``logvar``, the reparameterization, the KL,
the likelihood and the loss. A conditional model (:class:`~numpyvae.CVAE`)
has two more: the one-hot label joined to the encoder's input
(``condition.x``) and to the code ``z`` before the decoder (``condition.z``).
Every model the library builds is covered: MLP and convolutional VAEs and
autoencoders, conditional VAEs of either kind, and any network of layers.
For every node it records

* its name (``"encoder.0"``, ``"posterior.reparameterize"``, ...), its kind
  and its formula (taken from the docstring that derives it);
* what went in and what came out (shapes and summary statistics);
* the upstream gradient ``dout`` (the loss's gradient with respect to the
  node's output) and the downstream gradients ``dx`` it sends back to its
  inputs, and ``dparams`` for its parameters;
* a central-difference check of the node's vector-Jacobian product with a
  random upstream gradient, in float64: the relative error for each input
  and parameter, and pass or fail.

The result (:class:`Trace`) can be indexed in a notebook
(``trace["decoder.0"].dout``), printed as a table, and drawn as a graph
(:meth:`Trace.plot`). The trace's gradients are also compared with the
model's own ``loss_and_grads``, so the node-by-node story is the model's
computation.

Teaching mode: ``inspect(model, x, bug="reparam-dropped-half")`` replaces one
node's backward by a known-wrong formula from :mod:`numpyvae.inspector.catalogue`.
Only the node objects of that one trace change (nothing in the library or the
model does), and the trace shows which node's check fails and by how much.

Nodes work on float64 copies of the model's layers, so a float32 model (a
trained run) is inspected at float64 precision and is left untouched.
What does not live here: the layers' and distributions' math (their modules,
and :mod:`numpyvae.ops`), the whole-model gradient check
(:mod:`numpyvae.gradcheck`).
"""

from __future__ import annotations

import copy
import inspect as _pyinspect
import math
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..gradcheck import numerical_vjp, rel_error
from .formulas import backward_formula

F64 = np.dtype(np.float64)

#: A node's check passes when every relative error is below this (float64; a
#: correct backward agrees with central differences to about 1e-8).
TOLERANCE = 1e-6
#: The verdict also fails when the model's own gradients (``loss_and_grads``)
#: differ from the trace's by more than the rounding of the model's dtype (a
#: float32 model agrees to about 1e-5): then the model does not compute what
#: its nodes do, a wiring bug that no single node's check can see.
MODEL_TOLERANCE = {"float64": 1e-7, "float32": 1e-3}
#: Arrays up to this many elements are checked element by element; larger ones
#: along random directions (see :func:`check_vjp`).
FULL_CHECK_LIMIT = 4096
#: Random directions per large array.
DIRECTIONS = 3


# --------------------------------------------------------------------------
# Formulas from docstrings
# --------------------------------------------------------------------------


def formula_of(obj) -> str:
    """The first ``.. math::`` block of ``obj``'s docstring (or its first line), as one line."""
    doc = _pyinspect.getdoc(obj) or ""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*\.\. math::\s*(.*)$", line)
        if m:
            body = [m.group(1)]
            indent = None
            for nxt in lines[i + 1:]:
                if not nxt.strip():
                    if indent is not None:
                        break
                    continue
                cur = len(nxt) - len(nxt.lstrip())
                if indent is None:
                    indent = cur
                if cur < indent or cur <= len(line) - len(line.lstrip()):
                    break
                body.append(nxt.strip())
            return " ".join(s for s in body if s)
    return lines[0].replace("``", "") if lines else ""


# --------------------------------------------------------------------------
# Operations: a pure forward and backward per node
# --------------------------------------------------------------------------


class Op:
    """One node's computation as pure functions of its inputs and parameters.

    ``forward(**inputs) -> {output: array}`` and
    ``backward(douts, **inputs) -> ({input: dx}, {param: dparam})``; ``params``
    are the arrays ``forward`` reads (perturbed in place by the check).
    ``inputs`` are differentiable, ``constants`` (noise, data) are not.
    """

    kind = ""
    inputs: tuple[str, ...] = ("x",)
    constants: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("out",)
    formula = ""
    math = ""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}

    def forward(self, **inputs) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, douts, **inputs):  # pragma: no cover - abstract
        raise NotImplementedError


def _twin(obj):
    """A deep copy of ``obj`` that shares its backend (a module, which cannot be copied)."""

    memo = {id(v): v for v in vars(obj).values() if isinstance(v, types.ModuleType)}
    return copy.deepcopy(obj, memo)


def _float64_layer(layer):
    """A float64 copy of ``layer`` that owns its arrays, for the inspector's own use.

    Layers that describe themselves (``spec()``) are rebuilt in float64 from
    their spec and given the original's parameter values; others are deep-copied
    and their arrays converted. Either way the model's own layer is untouched.
    """
    from .. import layers as layers_module

    rebuild = getattr(layers_module, "layer_from_spec", None)
    if rebuild is not None and hasattr(layer, "spec"):
        twin = rebuild(layer.spec(), rng=np.random.default_rng(0), dtype=F64,
                       backend=layer.backend)
        for key, value in layer.params.items():
            twin.params[key][...] = value
    else:
        twin = _twin(layer)
        twin.params = {k: np.array(v, dtype=F64) for k, v in layer.params.items()}
        if hasattr(twin, "dtype"):
            twin.dtype = F64
    twin.grads = {k: np.zeros_like(v) for k, v in twin.params.items()}
    if hasattr(twin, "skip_input_grad"):
        twin.skip_input_grad = False  # the check covers dx of the first layer too
    return twin


class LayerOp(Op):
    """Any layer: ``forward(x)`` and ``backward(dout)`` of a float64 twin of it."""

    def __init__(self, layer):
        super().__init__()
        self.layer = _float64_layer(layer)
        self.params = self.layer.params
        self.kind = type(layer).__name__
        self.activation = getattr(layer, "activation", None)
        if self.activation not in (None, "identity") and self.kind == "Linear":
            self.kind = f"Linear({self.activation})"
        self.formula = formula_of(type(layer))
        self.math = self.formula
        summary = (_pyinspect.getdoc(type(layer)) or "").splitlines()
        self.summary = summary[0].replace("``", "") if summary else self.kind

    def forward(self, x):
        return {"out": np.array(self.layer.forward(x), copy=True)}

    def backward(self, douts, x):
        self.layer.zero_grad()
        self.layer.forward(x)
        dx = self.layer.backward(douts["out"])
        return ({"x": np.array(dx, copy=True)},
                {k: g.copy() for k, g in self.layer.grads.items()})


class SplitOp(Op):
    """``h = [mu | logvar]``: the encoder's output read as the posterior's two halves."""

    kind = "Split"
    inputs = ("h",)
    outputs = ("mu", "logvar")
    formula = "h = [mu | logvar],  mu = h[:, :L],  logvar = h[:, L:]"
    summary = formula

    def __init__(self, latent_dim):
        super().__init__()
        self.L = latent_dim

    def forward(self, h):
        return {"mu": h[:, :self.L].copy(), "logvar": h[:, self.L:].copy()}

    def backward(self, douts, h):
        return {"h": np.concatenate([douts["mu"], douts["logvar"]], axis=1)}, {}


class ConcatLabelOp(Op):
    """``[a | e_y]``: a conditional model's one-hot label joined to a node's input.

    For a flat input ``a`` of shape (B, n) the label's ``C`` columns are
    appended, (B, n + C); for an image input (B, n, H, W) the one-hot vector
    is broadcast to ``C`` constant feature maps and appended as channels,
    (B, n + C, H, W) (as :meth:`numpyvae.CVAE.encoder_input` does).

    The label ``e_y`` is data, a constant. The backward of a concatenation is
    the split: since ``[a | e_y]`` copies ``a`` into its first ``n`` columns
    (or channels), ``da = d[a | e_y][:, :n]``, and the label's part is dropped.
    Before the decoder ``a = z`` and ``da`` is ``dz``, which flows on into the
    posterior; before the encoder ``a = x`` is the data, so the model skips
    this gradient, and the inspector computes it only to check the node (as
    it checks the first layer's ``dx``).
    """

    kind = "ConcatLabel"
    constants = ("y",)
    outputs = ("out",)

    def __init__(self, input_name, n, num_classes, image=False):
        super().__init__()
        self.inputs = (input_name,)
        a, C = input_name, num_classes
        part = f"{C} label {'channels' if image else 'columns'}"
        self.summary = f"out = [{a} | e_y] ({part});  d{a} = dout[:, :{n}]"
        self.formula = (f"out = [{a} | e_y] with the one-hot label's {part}, "
                        f"d{a} = dout[:, :{n}] (the label's part dropped)")
        self.math = self.formula

    def forward(self, y, **inputs):
        a = inputs[self.inputs[0]]
        if a.ndim == 2:
            return {"out": np.concatenate([a, y], axis=1)}
        maps = np.broadcast_to(y.reshape(*y.shape, *([1] * (a.ndim - 2))),
                               (a.shape[0], y.shape[1], *a.shape[2:]))
        return {"out": np.concatenate([a, maps], axis=1)}

    def backward(self, douts, y, **inputs):
        name = self.inputs[0]
        n = inputs[name].shape[1]
        return {name: np.array(douts["out"][:, :n], copy=True)}, {}


class ReparameterizeOp(Op):
    """``z = mu + exp(logvar / 2) * eps`` with ``eps`` held fixed (the backend's op)."""

    kind = "Reparameterize"
    inputs = ("mu", "logvar")
    constants = ("eps",)
    outputs = ("z",)

    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        self.formula = formula_of(backend.reparameterize_backward) or formula_of(
            backend.reparameterize)
        self.summary = "z = mu + exp(logvar/2) * eps"

    def forward(self, mu, logvar, eps):
        return {"z": np.array(self.backend.reparameterize(mu, logvar, eps), copy=True)}

    def backward(self, douts, mu, logvar, eps):
        dmu, dlogvar = self.backend.reparameterize_backward(douts["z"], logvar, eps)
        return {"mu": np.array(dmu, copy=True), "logvar": np.array(dlogvar, copy=True)}, {}


class KLOp(Op):
    """Each latent dimension's ``KL(N(mu, sigma^2) || N(0, 1))``, shape (B, L).

    The backend's ``gaussian_kl`` sums over the columns it is given; called on
    ``(B*L, 1)`` views it gives the KL of every (example, dimension) pair, which
    the loss then sums (or, with free bits, clamps per dimension).
    """

    kind = "KL"
    inputs = ("mu", "logvar")
    outputs = ("kl",)

    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        self.formula = formula_of(backend.gaussian_kl)
        self.summary = "kl = (mu^2 + exp(logvar) - 1 - logvar) / 2"

    def forward(self, mu, logvar):
        kl = self.backend.gaussian_kl(mu.reshape(-1, 1), logvar.reshape(-1, 1))
        return {"kl": np.array(kl, copy=True).reshape(mu.shape)}

    def backward(self, douts, mu, logvar):
        dmu, dlogvar = self.backend.gaussian_kl_backward(
            np.ascontiguousarray(douts["kl"]).reshape(-1), mu.reshape(-1, 1),
            logvar.reshape(-1, 1))
        return {"mu": np.array(dmu, copy=True).reshape(mu.shape),
                "logvar": np.array(dlogvar, copy=True).reshape(mu.shape)}, {}


class LikelihoodOp(Op):
    """``nll = -log p(x | out)`` per example, for the model's likelihood (x is data)."""

    kind = "Likelihood"
    inputs = ("out",)
    constants = ("x",)
    outputs = ("nll",)

    def __init__(self, model):
        super().__init__()
        self.backend = model.backend
        lik = model.likelihood
        if isinstance(lik, str):  # models that name their likelihood
            self.name = lik
            self.kind = f"Likelihood({lik})"
            logvar = model._obs_logvar() if lik == "gaussian" else None
            self.learned = isinstance(logvar, np.ndarray) and logvar.ndim > 0
            if self.learned:
                self.params = {"logvar": np.array(logvar, dtype=F64)}
            self._logvar = None if self.learned else (
                None if logvar is None else float(logvar))
            self._object = None
        else:  # a Likelihood object: a float64 twin of it
            self.name = getattr(lik, "name", type(lik).__name__.lower())
            self.kind = type(lik).__name__
            self._object = _twin(lik)
            if hasattr(self._object, "setup"):
                self._object.setup(lik.data_shape, F64)
            for key, value in lik.params.items():
                self._object.params[key][...] = value
            self.params = self._object.params
            self.learned = bool(self.params)
        source = (self.backend.bernoulli_nll if self.name == "bernoulli"
                  else self.backend.gaussian_nll)
        self.formula = formula_of(type(lik)) if self._object is not None else ""
        if not self.formula or not self.formula.strip():
            self.formula = formula_of(source)
        self.summary = ("nll = sum log(1 + e^out) - x * out" if self.name == "bernoulli"
                        else "nll = sum ((x - out)^2 / var + log 2 pi var) / 2")

    def _logvar_now(self):
        return self.params["logvar"] if self.learned else self._logvar

    def forward(self, out, x):
        if self._object is not None:
            return {"nll": np.array(self._object.nll(out, x), copy=True)}
        if self.name == "bernoulli":
            nll = self.backend.bernoulli_nll(out, x)
        else:
            nll = self.backend.gaussian_nll(out, self._logvar_now(), x)
        return {"nll": np.array(nll, copy=True)}

    def backward(self, douts, out, x):
        """Per example, so each example's upstream gradient is its own scale."""
        dnll = douts["nll"]
        if self._object is not None and hasattr(self._object, "nll_backward"):
            for g in self._object.grads.values():
                g.fill(0)
            dout = self._object.nll_backward(out, x, np.ascontiguousarray(dnll))
            return ({"out": np.array(dout, copy=True)},
                    {k: g.copy() for k, g in self._object.grads.items()})
        dout = np.zeros_like(out)
        dparams = {k: np.zeros_like(v) for k, v in self.params.items()}
        for b in range(out.shape[0]):
            ob, xb, scale = out[b:b + 1], x[b:b + 1], float(dnll[b])
            if self._object is not None:
                for g in self._object.grads.values():
                    g.fill(0)
                _, d = self._object.nll_and_grad(ob, xb, scale)
                for k, g in self._object.grads.items():
                    dparams[k] += g
            elif self.name == "bernoulli":
                _, d = self.backend.bernoulli_nll_and_grad(ob, xb, scale)
            else:
                dlogvar = np.zeros_like(self.params["logvar"]) if self.learned else None
                _, d = self.backend.gaussian_nll_and_grad(ob, self._logvar_now(), xb, scale,
                                                          dlogvar)
                if self.learned:
                    dparams["logvar"] += dlogvar
            dout[b] = d[0]
        return {"out": dout}, dparams


class LossOp(Op):
    """``loss = mean(nll) + beta * KL term``: the negative ELBO, nats per example.

    The KL term is ``mean_n sum_j kl[n, j]``; with free bits ``lambda`` it is
    ``sum_j max(lambda, mean_n kl[n, j])``, and dimensions under ``lambda``
    get no gradient. Without a KL (the autoencoder) the loss is ``mean(nll)``.
    """

    kind = "Loss"
    outputs = ("loss",)

    def __init__(self, beta, free_bits=0.0, has_kl=True):
        super().__init__()
        self.beta, self.free_bits = float(beta), float(free_bits)
        self.inputs = ("nll", "kl") if has_kl else ("nll",)
        self.summary = ("loss = mean(nll) + beta * mean(sum_j kl)" if has_kl
                        else "loss = mean(nll)")
        self.formula = self.summary

    def _kl_term(self, kl):
        if self.free_bits > 0:
            return np.maximum(kl.mean(axis=0), self.free_bits).sum()
        return kl.sum(axis=1).mean()

    def forward(self, nll, kl=None):
        loss = nll.mean() + (0.0 if kl is None else self.beta * self._kl_term(kl))
        return {"loss": np.asarray(loss, dtype=F64)}

    def backward(self, douts, nll, kl=None):
        g = float(douts["loss"])
        B = nll.shape[0]
        d = {"nll": np.full(nll.shape, g / B)}
        if kl is not None:
            dkl = np.full(kl.shape, g * self.beta / B)
            if self.free_bits > 0:
                dkl *= kl.mean(axis=0) > self.free_bits
            d["kl"] = dkl
        return d, {}


# --------------------------------------------------------------------------
# Checking one node
# --------------------------------------------------------------------------


@dataclass
class Check:
    """The central-difference check of one node's vector-Jacobian product.

    ``errors`` maps each input and parameter to its relative error
    (:func:`numpyvae.gradcheck.rel_error` for an element-by-element check;
    for a directional one, the largest relative error of ``<g, v>`` over the
    random directions ``v``); ``methods`` says which was used.
    """

    errors: dict[str, float]
    methods: dict[str, str]
    tolerance: float = TOLERANCE

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def worst(self) -> str | None:
        return max(self.errors, key=self.errors.get) if self.errors else None

    @property
    def passed(self) -> bool:
        return all(np.isfinite(e) and e <= self.tolerance for e in self.errors.values())


def check_vjp(op: Op, values: dict, rng: np.random.Generator, h: float = 1e-6,
              full_limit: int = FULL_CHECK_LIMIT, directions: int = DIRECTIONS) -> Check:
    """Check ``op.backward`` against central differences of ``op.forward``.

    A random upstream gradient ``r`` (one per output, standard normal) is
    drawn; the analytic vector-Jacobian product is ``op.backward(r)``, the
    numerical one the central difference of ``sum(r * forward)``. Arrays of up
    to ``full_limit`` elements are checked element by element; larger ones
    along ``directions`` random directions ``v``, comparing
    ``(f(a + h v) - f(a - h v)) / 2h`` with ``<g, v>``: a wrong gradient shows
    in any direction it is not orthogonal to.
    """
    values = {k: np.array(v, dtype=F64, copy=True) for k, v in values.items()}
    outs = op.forward(**values)
    r = {name: rng.standard_normal(np.shape(outs[name])) for name in op.outputs}
    dinputs, dparams = op.backward(r, **values)
    analytic = {**{n: dinputs[n] for n in op.inputs}, **dparams}
    arrays = {**{n: values[n] for n in op.inputs}, **op.params}

    def weighted():
        o = op.forward(**values)
        return np.concatenate([np.ravel(o[name]) for name in op.outputs])

    r_flat = np.concatenate([np.ravel(r[name]) for name in op.outputs])
    errors, methods = {}, {}
    for name, arr in arrays.items():
        g = np.asarray(analytic[name], dtype=F64)
        if g.shape != arr.shape:
            errors[name], methods[name] = np.inf, f"shape {g.shape} != {arr.shape}"
            continue
        if arr.size <= full_limit:
            errors[name] = rel_error(g, numerical_vjp(weighted, arr, r_flat, h))
            methods[name] = "full"
            continue
        worst, saved = 0.0, arr.copy()
        for _ in range(directions):
            v = rng.standard_normal(arr.shape)
            arr[...] = saved + h * v
            plus = weighted()
            arr[...] = saved - h * v
            minus = weighted()
            arr[...] = saved
            numeric = float(np.sum((plus - minus) * r_flat) / (2 * h))
            exact = float(np.sum(g * v))
            worst = max(worst, abs(numeric - exact) / max(abs(numeric), abs(exact), 1e-12))
        errors[name], methods[name] = worst, f"{directions} directions"
    return Check(errors, methods)


# --------------------------------------------------------------------------
# The trace
# --------------------------------------------------------------------------


def _stats(a) -> dict:
    a = np.asarray(a, dtype=F64)
    return {"shape": a.shape, "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "norm": float(np.linalg.norm(a))}


@dataclass
class Node:
    """One node of the trace: what went in and out, the gradients, and the check.

    ``inputs``/``outputs``/``params`` are float64 arrays by name; ``douts`` the
    upstream gradient of each output, ``dinputs`` the downstream gradient sent
    to each input, ``dparams`` each parameter's gradient. ``wiring`` names the
    ``(node, output)`` feeding each input (``("data", "x")`` for the batch).
    The shortcuts ``x``, ``out``, ``dout`` and ``dx`` are the first of each.
    """

    name: str
    kind: str
    summary: str
    formula: str
    wiring: dict[str, tuple[str, str]]
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    douts: dict[str, np.ndarray] = field(default_factory=dict)
    dinputs: dict[str, np.ndarray] = field(default_factory=dict)
    dparams: dict[str, np.ndarray] = field(default_factory=dict)
    check: Check | None = None
    bug: str | None = None

    @property
    def x(self):
        return next(iter(self.inputs.values()))

    @property
    def out(self):
        return next(iter(self.outputs.values()))

    @property
    def dout(self):
        return next(iter(self.douts.values()))

    @property
    def dx(self):
        return next(iter(self.dinputs.values()))

    def stats(self) -> dict:
        """Summary statistics of every input, output and gradient, by name."""
        named = {**{f"in:{k}": v for k, v in self.inputs.items()},
                 **{f"out:{k}": v for k, v in self.outputs.items()},
                 **{f"dout:{k}": v for k, v in self.douts.items()},
                 **{f"dx:{k}": v for k, v in self.dinputs.items()},
                 **{f"d{k}": v for k, v in self.dparams.items()}}
        return {k: _stats(v) for k, v in named.items()}

    def __repr__(self):
        status = "?" if self.check is None else (
            "ok" if self.check.passed else f"WRONG ({self.check.worst})")
        return f"Node({self.name!r}, {self.kind}, check={status})"


class Trace(Mapping):
    """Every node of one forward/backward pass, in the order they ran.

    Index it by node name (``trace["encoder.0"]``); ``str(trace)`` is the
    table; :meth:`plot` draws the graph. ``model_errors`` holds, per
    parameter, the relative difference between the trace's gradient and the
    model's own ``loss_and_grads``, and ``model_loss`` that call's loss (the
    trace is the model's computation). ``labels`` are a conditional model's
    class labels (None for any other model); ``notes`` are lines printed
    under the table (say, what a run was trained on that the trace does not show).
    """

    def __init__(self, nodes, loss, beta, bug=None, model_errors=None, model_dtype=None,
                 model_loss=None, labels=None, notes=()):
        self.nodes = {n.name: n for n in nodes}
        self.loss, self.beta, self.bug = float(loss), beta, bug
        self.model_errors = model_errors or {}
        self.model_dtype = model_dtype
        self.model_loss = model_loss
        self.labels = labels
        self.notes = list(notes)

    def __getitem__(self, name) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; the nodes are {list(self.nodes)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    @property
    def failed(self) -> list[str]:
        """Names of the nodes whose check failed, in order."""
        return [n.name for n in self.nodes.values() if n.check and not n.check.passed]

    @property
    def model_failed(self) -> list[str]:
        """Parameters whose model gradient differs from the trace's beyond rounding, worst first."""
        tol = MODEL_TOLERANCE.get(str(self.model_dtype), max(MODEL_TOLERANCE.values()))
        wrong = [k for k, e in self.model_errors.items() if not e <= tol]
        return sorted(wrong, key=self.model_errors.get, reverse=True)

    @property
    def passed(self) -> bool:
        return not self.failed and not self.model_failed

    def table(self, formulas: bool = True, explain: bool = True, mystery: bool = False) -> str:
        """One row per node: output statistics, gradient norms and the check (within 100 columns).

        Under each row, with ``formulas``: the node's kind and shapes, its
        forward formula and the local backward formula that the check holds
        it to. Long lines wrap; nothing is cut. ``explain`` prints what the
        columns mean above the table. With ``mystery`` (a student hunting a
        planted bug) the table does not give the answer away: no planted bug
        is named, and a node whose check fails shows no backward formula.
        """
        head = (f"{'node':<24} {'kind':<23} {'out mean/std':>17} {'|dout|':>9} {'|dx|':>9}"
                f"  check")
        lines = [*(_wrap(COLUMNS, WIDTH) + [""] if explain else []), head, "-" * WIDTH]
        for n in self.nodes.values():
            shapes = (",".join(_shape(v) for v in n.inputs.values()) + " -> "
                      + ",".join(_shape(v) for v in n.outputs.values()))
            o = np.asarray(n.out, dtype=F64)
            dout = sum(float(np.linalg.norm(g)) for g in n.douts.values())
            dx = sum(float(np.linalg.norm(g)) for g in n.dinputs.values() if g is not None)
            if n.check is None:
                status = "-"
            elif n.check.passed:
                status = f"ok {n.check.max_error:.1e}"
            else:
                status = f"WRONG {n.check.max_error:.1e} in {n.check.worst}"
            name = n.name
            if len(name) > 24:  # a long name gets a line of its own; the columns stay put
                lines.append(name)
                name = ""
            stats = f"{o.mean():.3g}/{o.std():.3g}"
            lines.extend(_wrap(f"{name:<24} {n.kind:<23} {stats:>17} {dout:>9.2e} {dx:>9.2e}"
                               f"  {status}", WIDTH, "", " " * 4))
            if formulas:
                lines.extend(_wrap(f"shapes    {shapes}", WIDTH, "    ", " " * 14))
                if n.summary:
                    lines.extend(_wrap(f"forward   {n.summary}" + (
                        f"   [planted bug: {n.bug}]" if n.bug and not mystery else ""),
                        WIDTH, "    ", " " * 14))
                backward = backward_formula(n.kind)
                if mystery and n.check is not None and not n.check.passed:
                    lines.extend(_wrap("backward  ?  (the mystery: derive this node's backward "
                                       "and find what its code gets wrong)", WIDTH, "    ",
                                       " " * 14))
                elif backward:
                    lines.extend(_wrap(f"backward  {backward}", WIDTH, "    ", " " * 14))
        lines.append("-" * WIDTH)
        summary = [f"loss {self.loss:.6g} (beta {self.beta:g});  "
                   + (f"{len(self.failed)} node(s) failed: {', '.join(self.failed)}"
                      if self.failed else "every node's backward agrees with central "
                      "differences (float64)")]
        if self.model_errors:
            worst = max(self.model_errors, key=self.model_errors.get)
            loss = "" if self.model_loss is None else f"loss {self.model_loss:.6g}, "
            summary.append(f"the model's own loss_and_grads ({self.model_dtype}): {loss}"
                           f"largest relative gradient difference "
                           f"{self.model_errors[worst]:.1e} ({worst})")
            if self.model_failed and not self.failed:  # every node right, the sum of them wrong
                summary.append(f"WRONG: the model's own gradients differ from the trace's "
                               f"beyond rounding in {len(self.model_failed)} parameter(s), "
                               f"most in {worst}: loss_and_grads does not compute what its "
                               f"nodes do")
        lines.extend(line for text in summary for line in _wrap(text, WIDTH, "", "    "))
        lines.extend(self.notes)
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def __repr__(self):
        return f"Trace({len(self)} nodes, loss={self.loss:.4g}, failed={self.failed})"

    def plot(self, ax=None):
        """Draw the graph: one box per node, edges labelled with shape and gradient norm."""
        from .plot import plot_trace

        return plot_trace(self, ax=ax)


#: The width the table keeps to (a terminal, a notebook's output, the website's column).
WIDTH = 100
#: What the table's columns mean, printed once above it.
COLUMNS = ("Columns: out mean/std of the node's output; |dout| the size (L2 norm) of the loss's "
           "gradient arriving at that output; |dx| the size of the gradients the node's backward "
           "sends to its inputs; check: the largest relative error of that backward against "
           "central differences in float64 with a random upstream gradient (ok below 1e-6), and "
           "where it lies. Under each node: its shapes, its forward formula, and the backward "
           "formula the check holds it to (dout: the gradient arriving at its output).")


def _wrap(text, width, indent="", subsequent=None):
    """``text`` as lines of at most ``width`` columns (indented), broken at spaces, never cut."""
    import textwrap

    return textwrap.wrap(text, width, initial_indent=indent,
                         subsequent_indent=indent if subsequent is None else subsequent,
                         break_long_words=False, break_on_hyphens=False) or [indent]


def _shape(a) -> str:
    s = np.shape(a)
    return "()" if s == () else "(" + ",".join(str(d) for d in s) + ")"


# --------------------------------------------------------------------------
# Building and running the graph of a model
# --------------------------------------------------------------------------


def _leaves(network, prefix):
    """``(qualified_name, layer)`` for every working layer, named as its parameters are."""
    children = getattr(network, "children", None)
    if children is None:
        yield prefix.rstrip("."), network
        return
    for i, child in enumerate(children):
        yield from _leaves(child, f"{prefix}{i}.")


def _has_posterior(model) -> bool:
    """A VAE's encoder outputs [mu | logvar] (two widths per latent dimension)."""
    return getattr(model, "latent_widths", 1) == 2


def _is_conditional(model) -> bool:
    """A conditional model (:class:`~numpyvae.CVAE`) has a number of classes."""
    return getattr(model, "num_classes", None) is not None


def build_graph(model, beta=1.0):
    """The model's nodes as ``(name, op, wiring)`` in execution order.

    ``wiring`` maps each of the op's inputs and constants to ``(node, output)``;
    ``"data"`` provides ``x`` (the batch), ``eps`` (the noise) and, for a
    conditional model, ``y`` (the one-hot labels).
    """
    graph = []
    src = ("data", "x")
    conditional = _is_conditional(model)
    if conditional:
        C, shape = model.num_classes, model.input_shape
        graph.append(("condition.x", ConcatLabelOp("x", shape[0], C, image=len(shape) > 1),
                      {"x": src, "y": ("data", "y")}))
        src = ("condition.x", "out")
    for name, layer in _leaves(model.encoder, "encoder."):
        graph.append((name, LayerOp(layer), {"x": src}))
        src = (name, "out")
    has_posterior = _has_posterior(model)
    if has_posterior:
        be = model.backend
        graph.append(("posterior.split", SplitOp(model.latent_dim), {"h": src}))
        halves = {"mu": ("posterior.split", "mu"), "logvar": ("posterior.split", "logvar")}
        graph.append(("posterior.reparameterize", ReparameterizeOp(be),
                      {**halves, "eps": ("data", "eps")}))
        graph.append(("posterior.kl", KLOp(be), dict(halves)))
        src = ("posterior.reparameterize", "z")
    if conditional:
        graph.append(("condition.z", ConcatLabelOp("z", model.latent_dim, C),
                      {"z": src, "y": ("data", "y")}))
        src = ("condition.z", "out")
    for name, layer in _leaves(model.decoder, "decoder."):
        graph.append((name, LayerOp(layer), {"x": src}))
        src = (name, "out")
    graph.append(("likelihood", LikelihoodOp(model), {"out": src, "x": ("data", "x")}))
    loss_wiring = {"nll": ("likelihood", "nll")}
    if has_posterior:
        loss_wiring["kl"] = ("posterior.kl", "kl")
    graph.append(("loss", LossOp(beta, getattr(model, "free_bits", 0.0), has_posterior),
                  loss_wiring))
    return graph


def _likelihood_param_name(model, key):
    """The model's name of a likelihood parameter: the one ending in ``.key`` no layer owns."""
    layer_owned = re.compile(r"^(encoder|decoder)\.\d")
    for name in model.params:
        if name.endswith("." + key) and not layer_owned.match(name):
            return name
    return f"likelihood.{key}"


def inspect(model, x, eps=None, beta=1.0, *, labels=None, bug=None, bug_node=None, seed=0,
            check=True, compare_model=True) -> Trace:
    """Run one forward and backward pass of ``model`` on ``x`` and record every node.

    Parameters
    ----------
    model : VAE, Autoencoder or CVAE
        Any model with ``encoder`` and ``decoder`` networks of layers (MLP,
        convolutional, or any other); it is not modified (its gradient arrays
        are restored after the comparison).
    x : ndarray
        The batch, shape ``(B, *input_shape)``.
    eps : ndarray, shape (B, latent_dim), optional
        The reparameterization noise, held fixed; drawn from ``seed`` if omitted.
    beta : float
        Weight of the KL term.
    labels : int array, shape (B,), or int
        The class of each example: required for a conditional model
        (:class:`~numpyvae.CVAE`), refused for any other. One int labels
        every row, as in the CVAE's own methods.
    bug : str, optional
        A name from :data:`numpyvae.inspector.catalogue.BUGS`: that bug's wrong
        backward replaces the correct one in this trace only.
    bug_node : str, optional
        The node to plant the bug in (default: the first node it applies to).
    seed : int
        Seeds ``eps`` (when not given) and the checks' random upstream gradients.
    check : bool
        Run the central-difference check of every node.
    compare_model : bool
        Compare the trace's parameter gradients with ``model.loss_and_grads``.

    Returns
    -------
    Trace

    Notes
    -----
    The forward pass runs the nodes in order; the backward pass visits them in
    reverse, each node's upstream gradient being the sum of what its consumers
    sent back (``mu`` and ``logvar`` feed both the reparameterization and the
    KL, so their gradients add). With a planted bug the wrong gradient flows
    on, as it would in a real model: downstream nodes receive it, but their
    own checks still pass, so the failing check points at the bug.
    """
    from .catalogue import plant

    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    x64 = np.array(x, dtype=F64)
    if x64.ndim < 2:
        raise ValueError(f"inspect: expected a batch x of shape (B, *input_shape), got shape "
                         f"{x64.shape}")
    labels, y = _labels(model, labels, x64.shape[0])
    if isinstance(beta, bool) or not (isinstance(beta, (int, float, np.number))
                                      and math.isfinite(beta) and beta >= 0):
        raise ValueError(f"inspect: beta must be a finite number >= 0, got {beta!r}")
    graph = build_graph(model, beta)
    if _has_posterior(model):
        shape = (x64.shape[0], model.latent_dim)
        eps = rng.standard_normal(shape) if eps is None else np.array(eps, dtype=F64)
        if eps.shape != shape:
            raise ValueError(f"inspect: expected eps of shape {shape}, got {eps.shape}")
    planted = planted_at = None
    if bug is not None:
        graph, planted_at = plant(graph, bug, bug_node)
        planted = bug

    values = {("data", "x"): x64, ("data", "eps"): eps, ("data", "y"): y}
    nodes = []
    for name, op, wiring in graph:
        ins = {k: values[wiring[k]] for k in (*op.inputs, *op.constants)}
        outs = op.forward(**ins)
        for k, v in outs.items():
            values[(name, k)] = v
        nodes.append(Node(name, op.kind, getattr(op, "summary", ""), op.formula,
                          dict(wiring), ins, outs, {k: v.copy() for k, v in op.params.items()},
                          bug=planted if name == planted_at else None))

    grads: dict[tuple[str, str], np.ndarray] = {("loss", "loss"): np.asarray(1.0)}
    for (name, op, wiring), node in zip(reversed(graph), reversed(nodes), strict=True):
        node.douts = {k: grads.get((name, k), np.zeros_like(v)) for k, v in node.outputs.items()}
        dinputs, dparams = op.backward(node.douts, **node.inputs)
        node.dinputs, node.dparams = dinputs, dparams
        for k, g in dinputs.items():
            if g is not None and wiring[k][0] != "data":
                key = wiring[k]
                grads[key] = grads[key] + g if key in grads else g
    loss = float(nodes[-1].out)

    if check:
        for (_, op, _), node in zip(graph, nodes, strict=True):
            node.check = check_vjp(op, node.inputs, rng)

    model_errors, model_loss = (_compare_with_model(model, x, eps, beta, labels, nodes)
                                if compare_model else ({}, None))
    return Trace(nodes, loss, beta, bug=planted, model_errors=model_errors,
                 model_dtype=str(np.dtype(getattr(model, "dtype", F64))),
                 model_loss=model_loss, labels=labels)


def _labels(model, labels, batch):
    """``(labels, one_hot)`` for a conditional model, checked; ``(None, None)`` for another.

    ``labels`` (B,) class indices, or one int for every row, become (B,) ints
    and their float64 one-hot rows (B, C).
    """
    name = type(model).__name__
    if not _is_conditional(model):
        if labels is not None:
            raise ValueError(f"inspect: labels are for a conditional model (CVAE); this "
                             f"{name} takes none")
        return None, None
    if labels is None:
        raise ValueError(f"inspect: this {name} is conditional; pass labels=, the class of "
                         f"each of the {batch} examples (ints in [0, {model.num_classes}))")
    from ..cvae import batch_labels, one_hot

    labels = batch_labels(labels, batch, "inspect: ", "example of x")
    try:
        y = one_hot(labels, model.num_classes, F64)
    except ValueError as exc:
        raise ValueError(f"inspect: {exc}") from None
    return labels.astype(np.int64), y


def _compare_with_model(model, x, eps, beta, labels, nodes) -> tuple[dict[str, float], float]:
    """Per parameter, the relative difference of the trace's gradient from the model's own.

    Runs ``model.loss_and_grads`` with the same batch, noise, ``beta`` and
    labels, and returns ``(errors, loss)``: the differences by qualified
    parameter name, and the model's loss.
    """
    saved = {k: np.array(g, copy=True) for k, g in model.grads.items()}
    try:
        kwargs = {"beta": beta}
        if eps is not None:
            kwargs["eps"] = np.asarray(eps, dtype=model.dtype)
        if labels is not None:
            kwargs["labels"] = labels
        result = model.loss_and_grads(np.asarray(x, dtype=model.dtype), **kwargs)
        ours = {}
        for n in nodes:
            for k, g in n.dparams.items():
                qualified = (_likelihood_param_name(model, k) if n.name == "likelihood"
                             else f"{n.name}.{k}")
                ours[qualified] = g
        errors = {k: rel_error(np.asarray(model.grads[k], dtype=F64), ours[k])
                  for k in model.grads if k in ours}
        return errors, float(result.loss)
    finally:
        for k, g in model.grads.items():
            g[...] = saved[k]


def tiny_model(backend=None, likelihood="bernoulli"):
    """A small float64 VAE (6-5-3) and a batch of 4, for an instant inspection."""
    from ..model import VAE

    model = VAE(6, hidden_dims=(5,), latent_dim=3, likelihood=likelihood, dtype="float64",
                seed=0, backend=backend)
    x = np.random.default_rng(1).random((4, 6))
    return model, x


def tiny_conditional_model(backend=None, likelihood="bernoulli"):
    """A small float64 CVAE (6 + 2 classes, 5, 3) and a batch of 4 with its labels.

    Returns ``(model, x, labels)``: ``inspect(model, x, labels=labels)``.
    """
    from ..cvae import CVAE

    model = CVAE(6, num_classes=2, hidden_dims=(5,), latent_dim=3, likelihood=likelihood,
                 dtype="float64", seed=0, backend=backend)
    x = np.random.default_rng(1).random((4, 6))
    return model, x, np.array([0, 1, 1, 0])


__all__ = ["inspect", "Trace", "Node", "Check", "check_vjp", "build_graph",
           "formula_of", "tiny_model", "tiny_conditional_model", "TOLERANCE", "MODEL_TOLERANCE"]
