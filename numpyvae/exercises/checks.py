"""The check cells' functions: one per exercise, each grading a student's function.

Every ``check_<exercise>(fn)`` calls the student's ``fn`` on several shapes
(a batch of 1 and non-square sizes among them) with random float64 inputs and
a random upstream gradient, and compares each returned array with the right
answer twice: with central differences of the forward pass
(:func:`numpyvae.gradcheck.numerical_vjp`) and with the library's own op in
:mod:`numpyvae.ops`. On success it prints one ``passed: ...`` line; otherwise
it raises :class:`~numpyvae.exercises.diagnosis.ExerciseFailed` saying, in
the student's terms, what is wrong (:func:`~numpyvae.exercises.diagnosis.diagnose`).
A function still raising ``NotImplementedError`` (an unsolved stub) fails with
:class:`~numpyvae.exercises.diagnosis.NotWritten`, an ``ExerciseFailed`` whose
message names it.

The inputs are drawn from a fixed seed, so a check gives the same verdict each
time it runs.
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..gradcheck import numerical_vjp, rel_error
from .diagnosis import ExerciseFailed, NotWritten, diagnose

#: Central differences and the library's op must agree to this before a student is judged.
ORACLE_TOL = 1e-6


def _shape_text(**arrays) -> str:
    return ", ".join(f"{k} of shape {tuple(np.shape(v))}" for k, v in arrays.items())


def _call(fn, name, case, *args):
    """``fn(*args)`` on copies of the arrays, turning the student's exceptions into verdicts."""
    args = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]
    try:
        return fn(*args)
    except NotImplementedError:
        raise NotWritten(
            f"not written yet: {name} raises NotImplementedError. Replace "
            "`raise NotImplementedError()` between ### BEGIN SOLUTION and ### END SOLUTION "
            "with your code, run that cell, then run this check again.") from None
    except ExerciseFailed:
        raise
    except Exception as exc:
        raise ExerciseFailed(f"{name} raised {type(exc).__name__} ({exc}) with {case}: "
                             "check the shapes in each product and sum") from exc


def _unpack(result, name, names):
    if len(names) == 1:
        return [result]
    if not isinstance(result, (tuple, list)) or len(result) != len(names):
        raise ExerciseFailed(f"{name} must return a tuple ({', '.join(names)}); it returned "
                             f"{type(result).__name__}")
    return list(result)


def _judge(exercise, case, items, batch=None):
    """``items``: (name, got, want, numeric or None, hints). Raises on the first wrong one."""
    for name, got, want, numeric, hints in items:
        if numeric is not None and rel_error(want, numeric) > ORACLE_TOL:  # pragma: no cover
            raise RuntimeError(f"{exercise}: the library's op and central differences "
                               f"disagree on {name}; this is the library's bug, not yours")
        message = diagnose(name, got, want, hints, batch)
        if message:
            raise ExerciseFailed(f"{exercise}, with {case}: {message}")


def _passed(exercise, n, against, smallest="a batch of 1"):
    print(f"passed: {exercise}, on {n} cases ({smallest} among them), against {against}")


def _rng():
    return np.random.default_rng(20_24)


# --------------------------------------------------------------------------
# Notebook 1: the linear layer
# --------------------------------------------------------------------------


def check_linear_backward(fn):
    """``fn(dout, x, W) -> (dx, dW, db)`` for ``out = x @ W + b``."""
    rng = _rng()
    shapes = [(1, 3, 4), (5, 3, 7), (4, 6, 2), (3, 5, 5)]
    for B, n_in, n_out in shapes:
        x, W = rng.standard_normal((B, n_in)), rng.standard_normal((n_in, n_out))
        b, dout = rng.standard_normal(n_out), rng.standard_normal((B, n_out))
        case = _shape_text(x=x, W=W, dout=dout)
        got = _unpack(_call(fn, "linear_backward", case, dout, x, W), "linear_backward",
                      ("dx", "dW", "db"))
        dW, db = np.zeros_like(W), np.zeros_like(b)
        dx = ops.linear_backward(dout, x, W, ops.linear_forward(x, W, b), dW, db)
        numeric = [numerical_vjp(lambda x=x, W=W, b=b: ops.linear_forward(x, W, b), a, dout)
                   for a in (x, W, b)]
        _judge("linear_backward", case, [
            ("dx", got[0], dx, numeric[0],
             [("multiplies dout by W where W.T belongs: dx = dout @ W.T, shape (B, in)",
               dout @ W)] if n_in == n_out else []),
            ("dW", got[1], dW, numeric[1],
             [("is dout.T @ x reshaped to W's shape, the transposed product laid out "
               "as W (the catalogue's transposed-weight-grad): dW = x.T @ dout",
               np.ascontiguousarray(dout.T @ x).reshape(W.shape))]),
            ("db", got[2], db, numeric[2],
             [("is summed over the wrong axis: over the features (axis 1) instead of the batch "
               "(axis 0): "
               "db = dout.sum(axis=0)", dout.sum(axis=1)),
              ("is zero: the bias's gradient is missing (the catalogue's missing-bias-grad); "
               "db = dout.sum(axis=0)", np.zeros_like(db)),
              ("is the mean over the batch: the bias is added to every example, so its "
               "gradient is the sum of the examples' (the catalogue's bias-grad-mean)",
               dout.mean(axis=0))]),
        ], batch=B)
    _passed("linear_backward", len(shapes),
            "central differences and numpyvae.ops.linear_backward")


# --------------------------------------------------------------------------
# Notebook 2: activations, from their output
# --------------------------------------------------------------------------


def _check_activation(fn, activation, wrongs):
    rng = _rng()
    shapes = [(1, 4), (3, 5), (5, 2)]
    name = f"{activation}_backward"
    for shape in shapes:
        x = rng.standard_normal(shape) * 2
        x[np.abs(x) < 1e-3] = 0.5  # keep the kink of relu out of central differences' reach
        dout = rng.standard_normal(shape)
        y = ops.activation_forward(x, activation)
        case = _shape_text(y=y, dout=dout)
        got = _call(fn, name, case, dout, y)
        want = ops.activation_backward(dout, y, activation)
        numeric = numerical_vjp(lambda x=x: ops.activation_forward(x, activation), x, dout)
        hints = [("is the upstream gradient unchanged: the activation's derivative f'(y) "
                  "is missing (the catalogue's missing-activation-derivative)", dout)]
        hints += [(text, wrong(dout, y, x)) for text, wrong in wrongs]
        _judge(name, case, [("dx", got, want, numeric, hints)], batch=shape[0])
    _passed(name, len(shapes),
            f"central differences and numpyvae.ops.activation_backward(..., '{activation}')")


def check_relu_backward(fn):
    """``fn(dout, y) -> dx`` for ``y = max(x, 0)``, written with the output ``y``."""
    _check_activation(fn, "relu", [
        ("lets the gradient through where y <= 0 instead of y > 0: the mask is inverted "
         "(the catalogue's relu-inverted-mask)", lambda d, y, x: d * (y <= 0)),
        ("is dout * y: the derivative of relu is the indicator [y > 0], not y",
         lambda d, y, x: d * y),
    ])


def check_tanh_backward(fn):
    """``fn(dout, y) -> dx`` for ``y = tanh(x)``: ``dout * (1 - y**2)``."""
    _check_activation(fn, "tanh", [
        ("applies tanh again: 1 - tanh(y)**2 is the derivative at the input; in terms of "
         "the output it is 1 - y**2", lambda d, y, x: d * (1 - np.tanh(y) ** 2)),
        ("is dout * (1 - y): the square in 1 - y**2 is missing", lambda d, y, x: d * (1 - y)),
    ])


def check_sigmoid_backward(fn):
    """``fn(dout, y) -> dx`` for ``y = sigmoid(x)``: ``dout * y * (1 - y)``."""
    _check_activation(fn, "sigmoid", [
        ("applies sigmoid again: sigmoid(y)(1 - sigmoid(y)) is the derivative at the "
         "input; in terms of the output it is y (1 - y)",
         lambda d, y, x: d * ops.sigmoid(y) * (1 - ops.sigmoid(y))),
        ("is dout * (1 - y): the factor y of y (1 - y) is missing",
         lambda d, y, x: d * (1 - y)),
    ])


# --------------------------------------------------------------------------
# Notebook 3: the reparameterization
# --------------------------------------------------------------------------


def check_reparameterize_backward(fn):
    """``fn(dz, logvar, eps) -> (dmu, dlogvar)`` for ``z = mu + exp(logvar / 2) * eps``."""
    rng = _rng()
    shapes = [(1, 3), (4, 2), (6, 5)]
    for shape in shapes:
        mu, logvar = rng.standard_normal(shape), rng.standard_normal(shape)
        eps, dz = rng.standard_normal(shape), rng.standard_normal(shape)
        case = _shape_text(dz=dz, logvar=logvar, eps=eps)
        got = _unpack(_call(fn, "reparameterize_backward", case, dz, logvar, eps),
                      "reparameterize_backward", ("dmu", "dlogvar"))
        dmu, dlogvar = ops.reparameterize_backward(dz, logvar, eps)

        def f(mu=mu, logvar=logvar, eps=eps):
            return ops.reparameterize(mu, logvar, eps)

        _judge("reparameterize_backward", case, [
            ("dmu", got[0], dmu, numerical_vjp(f, mu, dz),
             [("is dz * sigma * eps: z depends on mu with slope 1, so dmu = dz",
               dz * np.exp(0.5 * logvar) * eps)]),
            ("dlogvar", got[1], dlogvar, numerical_vjp(f, logvar, dz),
             [("uses exp(logvar), the variance, as sigma: sigma = exp(logvar / 2), so "
               "dlogvar = dz * eps * exp(logvar / 2) / 2 (the catalogue's "
               "reparam-exp-logvar-as-sigma)", 0.5 * dz * np.exp(logvar) * eps),
              ("is missing the ½ of d exp(logvar / 2) / dlogvar = exp(logvar / 2) / 2 "
               "(the catalogue's reparam-dropped-half)", dz * np.exp(0.5 * logvar) * eps),
              ("ignores eps: z = mu + sigma * eps, so the slope in logvar carries eps",
               0.5 * dz * np.exp(0.5 * logvar))]),
        ], batch=shape[0])
    _passed("reparameterize_backward", len(shapes),
            "central differences and numpyvae.ops.reparameterize_backward")


# --------------------------------------------------------------------------
# Notebook 4: the KL term
# --------------------------------------------------------------------------


def check_gaussian_kl(fn):
    """``fn(mu, logvar) -> kl`` of shape (B,): KL(N(mu, exp(logvar)) || N(0, I)) per example."""
    rng = _rng()
    shapes = [(1, 3), (4, 2), (5, 6)]
    for shape in shapes:
        mu, logvar = rng.standard_normal(shape), rng.standard_normal(shape)
        case = _shape_text(mu=mu, logvar=logvar)
        got = _call(fn, "gaussian_kl", case, mu, logvar)
        terms = mu ** 2 + np.exp(logvar) - 1 - logvar
        _judge("gaussian_kl", case, [("kl", got, ops.gaussian_kl(mu, logvar), None, [
            ("is summed over the wrong axis: over the batch (axis 0) instead of the latent "
             "dimensions (axis 1)",
             0.5 * terms.sum(axis=0)),
            ("is averaged over the latent dimensions: the KL of independent dimensions is "
             "their sum", 0.5 * terms.mean(axis=1)),
            ("uses sigma = exp(logvar / 2) where the variance exp(logvar) belongs",
             0.5 * (mu ** 2 + np.exp(0.5 * logvar) - 1 - logvar).sum(axis=1)),
            ("is the whole batch's sum, one number: return one KL per example, shape (B,)",
             np.full(1, 0.5 * terms.sum())),
        ])], batch=None)
    _passed("gaussian_kl", len(shapes), "numpyvae.ops.gaussian_kl")


def check_gaussian_kl_backward(fn):
    """``fn(dkl, mu, logvar) -> (dmu, dlogvar)``, ``dkl`` of shape (B,)."""
    rng = _rng()
    shapes = [(1, 3), (4, 2), (5, 6)]
    for B, L in shapes:
        mu, logvar = rng.standard_normal((B, L)), rng.standard_normal((B, L))
        dkl = rng.standard_normal(B)
        case = _shape_text(dkl=dkl, mu=mu, logvar=logvar)
        got = _unpack(_call(fn, "gaussian_kl_backward", case, dkl, mu, logvar),
                      "gaussian_kl_backward", ("dmu", "dlogvar"))
        dmu, dlogvar = ops.gaussian_kl_backward(dkl, mu, logvar)

        def f(mu=mu, logvar=logvar):
            return ops.gaussian_kl(mu, logvar)

        _judge("gaussian_kl_backward", case, [
            ("dmu", got[0], dmu, numerical_vjp(f, mu, dkl),
             [("ignores the upstream gradient dkl: multiply by dkl[:, None]", mu),
              ("is -dkl * mu: the catalogue's kl-mu-sign", -dkl[:, None] * mu)]),
            ("dlogvar", got[1], dlogvar, numerical_vjp(f, logvar, dkl),
             [("ignores the upstream gradient dkl: multiply by dkl[:, None]",
               0.5 * np.expm1(logvar)),
              ("is dkl * (exp(logvar) - 1), the catalogue's kl-dropped-half: the KL "
               "carries a ½", dkl[:, None] * np.expm1(logvar)),
              ("forgets the -1 from the -logvar term: d/dlogvar of "
               "½(exp(logvar) - logvar) is ½(exp(logvar) - 1)",
               0.5 * dkl[:, None] * np.exp(logvar))]),
        ], batch=B)
    _passed("gaussian_kl_backward", len(shapes),
            "central differences and numpyvae.ops.gaussian_kl_backward")


# --------------------------------------------------------------------------
# Notebook 5: the likelihoods, Adam and the conditional VAE's label
# --------------------------------------------------------------------------


def check_bernoulli_nll_backward(fn):
    """``fn(dnll, logits, x) -> dlogits`` for the per-example Bernoulli NLL, ``dnll`` (B,)."""
    rng = _rng()
    shapes = [(1, 4), (3, 7), (6, 5)]
    for B, D in shapes:
        logits = rng.standard_normal((B, D)) * 2
        x = (rng.random((B, D)) < 0.5).astype(float)
        dnll = rng.standard_normal(B)
        case = _shape_text(dnll=dnll, logits=logits, x=x)
        got = _call(fn, "bernoulli_nll_backward", case, dnll, logits, x)
        want = ops.bernoulli_nll_backward(dnll, logits, x)
        numeric = numerical_vjp(lambda logits=logits, x=x: ops.bernoulli_nll(logits, x),
                                logits, dnll)
        p = ops.sigmoid(logits)
        _judge("bernoulli_nll_backward", case, [("dlogits", got, want, numeric, [
            ("ignores the upstream gradient dnll: multiply by dnll[:, None]", p - x),
            ("is x - sigmoid(logits) times dnll: the sign is flipped (the catalogue's "
             "bernoulli-sign); the NLL falls as the logit moves toward x",
             (x - p) * dnll[:, None]),
            ("multiplies by sigmoid'(logits) = p (1 - p): that factor cancels against the "
             "log's 1/p, leaving sigmoid(logits) - x", (p - x) * p * (1 - p) * dnll[:, None]),
        ])], batch=B)
    _passed("bernoulli_nll_backward", len(shapes),
            "central differences and numpyvae.ops.bernoulli_nll_backward")


def check_gaussian_nll_backward(fn):
    """``fn(dnll, mean, logvar, x) -> (dmean, dlogvar_each)``, a learned per-value ``logvar``.

    ``logvar`` has shape (D,) (one learned variance per value); ``dlogvar_each``
    is each example's contribution, shape (B, D), which the caller sums over the
    batch.
    """
    rng = _rng()
    shapes = [(1, 4), (3, 7), (6, 5)]
    for B, D in shapes:
        mean, x = rng.standard_normal((B, D)), rng.standard_normal((B, D))
        logvar, dnll = rng.standard_normal(D) * 0.5, rng.standard_normal(B)
        case = _shape_text(dnll=dnll, mean=mean, logvar=logvar, x=x)
        got = _unpack(_call(fn, "gaussian_nll_backward", case, dnll, mean, logvar, x),
                      "gaussian_nll_backward", ("dmean", "dlogvar"))
        dmean, dlogvar = ops.gaussian_nll_backward(dnll, mean, logvar, x)

        def f(mean=mean, logvar=logvar, x=x):
            return ops.gaussian_nll(mean, logvar, x)

        numeric_logvar = numerical_vjp(f, logvar, dnll)
        assert rel_error(dlogvar.sum(axis=0), numeric_logvar) < ORACLE_TOL
        g, r, var = dnll[:, None], mean - x, np.exp(logvar)
        _judge("gaussian_nll_backward", case, [
            ("dmean", got[0], dmean, numerical_vjp(f, mean, dnll),
             [("multiplies by the variance exp(logvar) where it divides: (mean - x) / var",
               g * r * var),
              ("ignores the upstream gradient dnll: multiply by dnll[:, None]", r / var)]),
            ("dlogvar", got[1], dlogvar, None,
             [("is summed over the batch: return each example's contribution, shape "
               "(B, D); the caller sums it into the learned logvar's gradient",
               dlogvar.sum(axis=0)),
              ("multiplies the squared residual by the variance where it divides: "
               "½(1 - (x - mean)² / var)", g * 0.5 * (1 - r * r * var)),
              ("forgets the 1 from the ½·logvar term of the NLL: ½(1 - (x - mean)² / var)",
               -g * 0.5 * r * r / var)]),
        ], batch=B)
    _passed("gaussian_nll_backward", len(shapes),
            "central differences and numpyvae.ops.gaussian_nll_backward")


def check_adam_step(fn):
    """``fn(param, grad, m, v, t, lr, beta1, beta2, eps) -> (param, m, v)``, new arrays.

    One bias-corrected Adam step (``t`` counts from 1), compared with
    :func:`numpyvae.ops.adam_update` without weight decay.
    """
    rng = _rng()
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.999, 1e-8
    cases = [((1, 3), 1), ((4, 5), 1), ((7,), 3), ((2, 6), 10)]
    for shape, t in cases:
        param, grad = rng.standard_normal(shape), rng.standard_normal(shape)
        m = np.zeros(shape) if t == 1 else rng.standard_normal(shape) * 0.1
        v = np.zeros(shape) if t == 1 else rng.random(shape) * 0.1
        case = f"{_shape_text(param=param)} at step t = {t}"
        got = _unpack(_call(fn, "adam_step", case, param, grad, m, v, t, lr, beta1, beta2,
                            eps), "adam_step", ("param", "m", "v"))
        want = [param.copy(), m.copy(), v.copy()]
        ops.adam_update(*want[:1], grad, *want[1:], lr, beta1, beta2, eps, 0.0, t, False)
        m1, v1 = want[1], want[2]
        _judge("adam_step", case, [
            ("m", got[1], m1, None, [("mixes in (1 - beta1) of the old m and beta1 of the "
                                      "gradient: swapped weights",
                                      (1 - beta1) * m + beta1 * grad)]),
            ("v", got[2], v1, None, [("averages the gradient, not its square: v tracks g²",
                                      beta2 * v + (1 - beta2) * grad)]),
            ("param", got[0], want[0], None, [
                ("is stepped without the bias correction: divide m by 1 - beta1**t and v by "
                 "1 - beta2**t", param - lr * m1 / (np.sqrt(v1) + eps)),
                ("is stepped with v where sqrt(v) belongs",
                 param - lr * (m1 / (1 - beta1 ** t)) / (v1 / (1 - beta2 ** t) + eps)),
                ("moves uphill: subtract the step, param - lr * m_hat / (sqrt(v_hat) + eps)",
                 param + lr * (m1 / (1 - beta1 ** t)) / (np.sqrt(v1 / (1 - beta2 ** t)) + eps)),
            ]),
        ], batch=None)
    _passed("adam_step", len(cases), "numpyvae.ops.adam_update", "the first step, t = 1,")


def check_concat_label_backward(fn):
    """``fn(dout, latent_dim) -> dz`` for the CVAE's ``out = [z | one_hot(y)]``."""
    rng = _rng()
    cases = [(5, 2, 10), (1, 3, 4), (4, 6, 3)]
    for B, L, C in cases:
        z = rng.standard_normal((B, L))
        y = np.eye(C)[rng.integers(0, C, B)]
        dout = rng.standard_normal((B, L + C))
        case = f"{_shape_text(dout=dout)}, latent_dim = {L}"
        got = _call(fn, "concat_label_backward", case, dout, L)
        numeric = numerical_vjp(lambda z=z, y=y: np.concatenate([z, y], axis=1), z, dout)
        _judge("concat_label_backward", case, [("dz", got, dout[:, :L], numeric, [
            ("is the last latent_dim columns: z comes first in [z | e_y], so its gradient "
             "is dout[:, :latent_dim] (the catalogue's concat-wrong-slice)", dout[:, -L:]),
            *([("slices the rows (the batch) instead of the columns: dout[:, :latent_dim]",
                dout[:L])] if B > L else []),
        ])], batch=B)
    _passed("concat_label_backward", len(cases), "central differences of the concatenation")


# --------------------------------------------------------------------------
# Notebook 8: the ROC AUC
# --------------------------------------------------------------------------


def reference_auc(scores, is_anomaly) -> float:
    """P(an anomaly outscores a normal example) + ½ P(a tie), over every pair."""
    scores, is_anomaly = np.asarray(scores, dtype=float), np.asarray(is_anomaly, dtype=bool)
    a, n = scores[is_anomaly][:, None], scores[~is_anomaly][None, :]
    return float(np.mean((a > n) + 0.5 * (a == n)))


def check_roc_auc(fn):
    """``fn(scores, is_anomaly) -> auc``, a float: higher scores should mean anomalous."""
    rng = _rng()
    cases = [(1, 1), (5, 3), (20, 7), (40, 40)]
    for n_normal, n_anomaly in cases:
        labels = np.r_[np.zeros(n_normal, bool), np.ones(n_anomaly, bool)]
        order = rng.permutation(labels.size)
        scores = np.round(rng.standard_normal(labels.size) + labels, 1)[order]  # ties too
        labels = labels[order]
        if n_normal == n_anomaly == 1:
            scores = np.array([0.5, 0.5])  # one tie: worth exactly ½
        case = f"{n_normal} normal and {n_anomaly} anomalous scores"
        got = _call(fn, "roc_auc", case, scores, labels)
        a, n = scores[labels][:, None], scores[~labels][None, :]
        want = reference_auc(scores, labels)
        _judge("roc_auc", case, [("the AUC", got, want, None, [
            ("is 1 - AUC: the classes are swapped (a high score should mean anomalous)",
             1 - want),
            ("counts a tie as a loss: a tie is worth ½", float(np.mean(a > n))),
            ("counts a tie as a win: a tie is worth ½", float(np.mean(a >= n))),
        ])], batch=None)
    _passed("roc_auc", len(cases), "the fraction of (anomaly, normal) pairs ranked right",
            "one pair, tied,")


# --------------------------------------------------------------------------
# Notebook 10: the convolution
# --------------------------------------------------------------------------

_CONV_CASES = [  # (B, C, H, W), (O, kh, kw), stride, padding
    ((1, 1, 4, 4), (2, 3, 3), 1, 0),
    ((3, 2, 5, 6), (3, 3, 2), 1, 1),
    ((4, 3, 7, 5), (2, 3, 3), 2, 1),
]


def _check_conv_backward(fn, name):
    rng = _rng()
    for xs, (O, kh, kw), stride, padding in _CONV_CASES:
        x = rng.standard_normal(xs)
        W, b = rng.standard_normal((O, xs[1], kh, kw)), rng.standard_normal(O)

        def f(x=x, W=W, b=b, stride=stride, padding=padding):
            return ops.conv2d_forward(x, W, b, stride, padding)

        dout = rng.standard_normal(f().shape)
        case = f"{_shape_text(x=x, W=W, dout=dout)}, stride {stride}, padding {padding}"
        got = _unpack(_call(fn, name, case, dout, x, W, stride, padding), name,
                      ("dx", "dW", "db"))
        dx, dW, db = ops.conv2d_backward_naive(dout, x, W, stride, padding)
        _judge(name, case, [
            ("dx", got[0], dx, numerical_vjp(f, x, dout),
             [("uses the kernel flipped: in the backward pass each window receives "
               "dout * W[o] as it is, not W[o, :, ::-1, ::-1]",
               ops.conv2d_backward_naive(dout, x, W[:, :, ::-1, ::-1], stride, padding)[0])]),
            ("dW", got[1], dW, numerical_vjp(f, W, dout),
             [("has its (O, C) axes swapped", np.swapaxes(dW, 0, 1))]),
            ("db", got[2], db, numerical_vjp(f, b, dout),
             [("is summed over the wrong axes: over the channels and positions instead of the "
               "batch and positions, db = dout.sum(axis=(0, 2, 3))", dout.sum(axis=(1, 2, 3))),
              ("is summed over the batch only: sum over the positions (axes 2, 3) too",
               dout.sum(axis=0))]),
        ], batch=xs[0])
    _passed(name, len(_CONV_CASES),
            "central differences and numpyvae.ops.conv2d_backward_naive")


def check_conv2d_backward_loops(fn):
    """``fn(dout, x, W, stride, padding) -> (dx, dW, db)``, written as loops."""
    _check_conv_backward(fn, "conv2d_backward_loops")


def check_conv2d_backward_im2col(fn):
    """``fn(dout, x, W, stride, padding) -> (dx, dW, db)``, written with im2col and col2im."""
    _check_conv_backward(fn, "conv2d_backward_im2col")


def check_conv_transpose2d_forward(fn):
    """``fn(x, W, b, stride, padding) -> y``: the convolution's input-gradient as a layer.

    ``W`` has shape (C, O, kh, kw): the transposed convolution of ``x`` is the
    ``dx`` of a convolution with weights ``W`` whose upstream gradient is ``x``.
    """
    rng = _rng()
    cases = [((1, 2, 3, 3), (1, 3, 3), 1, 0), ((3, 2, 4, 5), (3, 3, 2), 2, 1),
             ((2, 3, 4, 4), (2, 4, 4), 2, 1)]
    for xs, (O, kh, kw), stride, padding in cases:
        x = rng.standard_normal(xs)
        W, b = rng.standard_normal((xs[1], O, kh, kw)), rng.standard_normal(O)
        case = f"{_shape_text(x=x, W=W, b=b)}, stride {stride}, padding {padding}"
        got = _call(fn, "conv_transpose2d_forward", case, x, W, b, stride, padding)
        want = ops.conv_transpose2d_forward(x, W, b, stride, padding)
        _judge("conv_transpose2d_forward", case, [("y", got, want, None, [
            ("lacks the bias b (add b[None, :, None, None])", want - b[None, :, None, None]),
            ("uses the kernel flipped: a transposed convolution stamps x * W[c] as it is",
             ops.conv_transpose2d_forward(x, W[:, :, ::-1, ::-1], b, stride, padding)),
        ])], batch=xs[0])
    _passed("conv_transpose2d_forward", len(cases), "numpyvae.ops.conv_transpose2d_forward")


# --------------------------------------------------------------------------
# Notebook 11: importance weights and the IWAE gradient
# --------------------------------------------------------------------------


def _log_weights(rng, B, K, offset):
    return rng.standard_normal((B, K)) * 3 + offset


def check_importance_weights(fn):
    """``fn(log_w) -> w_tilde``: each row's softmax over its ``K`` samples, shape (B, K)."""
    rng = _rng()
    cases = [(1, 4, 0.0), (3, 5, 0.0), (6, 2, 0.0), (4, 7, -1e4)]
    for B, K, offset in cases:
        log_w = _log_weights(rng, B, K, offset)
        case = _shape_text(log_w=log_w) + (f", log-weights near {offset:g}" if offset else "")
        got = _call(fn, "importance_weights", case, log_w)
        e = np.exp(log_w - log_w.max())
        _judge("importance_weights", case, [("w_tilde", got, ops.importance_weights(log_w),
                                             None, [
            ("is normalised over the wrong axis: over the batch (axis 0) instead of the K "
             "samples (axis 1)",
             e / e.sum(axis=0, keepdims=True)),
            ("is not normalised: divide each row by its sum so it sums to 1",
             np.exp(log_w)),
        ])], batch=None)
    _passed("importance_weights", len(cases),
            "numpyvae.ops.importance_weights (log-weights of -1e4 among them)")


def check_iwae_backward(fn):
    """``fn(dloss, log_w) -> dlog_w`` for the per-example loss ``log K - logsumexp(log_w)``."""
    rng = _rng()
    cases = [(1, 4), (3, 5), (6, 2), (5, 5)]
    for B, K in cases:
        log_w, dloss = _log_weights(rng, B, K, 0.0), rng.standard_normal(B)
        case = _shape_text(dloss=dloss, log_w=log_w)
        got = _call(fn, "iwae_backward", case, dloss, log_w)
        w = ops.importance_weights(log_w, axis=1)
        numeric = numerical_vjp(lambda K=K, log_w=log_w: math.log(K) - ops.logsumexp(log_w, axis=1),
                                log_w, dloss)
        _judge("iwae_backward", case, [("dlog_w", got, -dloss[:, None] * w, numeric, [
            ("ignores the upstream gradient dloss: multiply by dloss[:, None]", -w),
            ("divides by K: log K is a constant, and the weights are already normalised",
             -dloss[:, None] * w / K),
            ("uses the unnormalised weights exp(log_w): the gradient of logsumexp is the "
             "softmax", -dloss[:, None] * np.exp(log_w)),
        ])], batch=B)
    _passed("iwae_backward", len(cases), "central differences of numpyvae.iwae's bound")


def solved(name: str, fn) -> bool:
    """Whether ``fn`` passes exercise ``name``'s check (quietly): for cells that build on it."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            CHECKS[name](fn)
        except ExerciseFailed:
            return False
    return True


def written(name: str, fn) -> bool:
    """Whether ``fn`` is written, right or wrong: it no longer raises NotImplementedError."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            CHECKS[name](fn)
        except ExerciseFailed as failure:
            return not isinstance(failure, NotWritten)
    return True


#: Every exercise's check, by the name of the function the student writes.
CHECKS = {
    "linear_backward": check_linear_backward,
    "relu_backward": check_relu_backward,
    "tanh_backward": check_tanh_backward,
    "sigmoid_backward": check_sigmoid_backward,
    "reparameterize_backward": check_reparameterize_backward,
    "gaussian_kl": check_gaussian_kl,
    "gaussian_kl_backward": check_gaussian_kl_backward,
    "bernoulli_nll_backward": check_bernoulli_nll_backward,
    "gaussian_nll_backward": check_gaussian_nll_backward,
    "adam_step": check_adam_step,
    "concat_label_backward": check_concat_label_backward,
    "roc_auc": check_roc_auc,
    "conv2d_backward_loops": check_conv2d_backward_loops,
    "conv2d_backward_im2col": check_conv2d_backward_im2col,
    "conv_transpose2d_forward": check_conv_transpose2d_forward,
    "importance_weights": check_importance_weights,
    "iwae_backward": check_iwae_backward,
}

__all__ = ["CHECKS", "reference_auc", "solved", "written", *(f.__name__ for f in CHECKS.values())]
