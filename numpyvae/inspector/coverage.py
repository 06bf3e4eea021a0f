"""The tiny models of ``numpyvae inspect --tiny``, and which node types a set of traces covered.

A trace checks only the nodes its model has: the 6-5-3 ReLU VAE with a
Bernoulli decoder and ``beta = 1`` never runs a tanh, a Gaussian
likelihood, a label or a convolution. So ``--tiny`` alone steps through a
few tiny float64 models that between them have every node type of the
library (:data:`NODE_TYPES`: each activation, fused into a ``Linear`` and
as a layer of its own, each likelihood, the reshaping layers, the
convolutions, the label joined to ``x`` and to ``z``) and a KL weight other
than 1; with options (:func:`tiny_models`) it builds the one model a
student is studying, and :func:`not_covered` says what that run left out.

What does not live here: the trace itself (:mod:`.trace`).
"""

from __future__ import annotations

import numpy as np

from ..ops import ACTIVATIONS

#: Every node type a trace can have (a :class:`~.trace.Node`'s ``kind``), and "beta != 1".
NODE_TYPES = (
    *(f"Linear({a})" if a != "identity" else "Linear" for a in ACTIVATIONS),
    "Identity", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softplus",
    "Flatten", "Reshape", "LabelChannels", "Conv2d", "ConvTranspose2d",
    "Split", "Reparameterize", "KL", "ConcatLabel",
    "Bernoulli", "Gaussian", "GaussianLearnedVariance", "Loss", "beta != 1",
)

LIKELIHOODS = ("bernoulli", "gaussian")


def covered(traces) -> set[str]:
    """The node types (and ``"beta != 1"``) that ``traces`` stepped through."""
    kinds = set()
    for trace in traces:
        kinds.update(node.kind for node in trace.nodes.values())
        if any(node.kind == "KL" for node in trace.nodes.values()) and trace.beta != 1:
            kinds.add("beta != 1")
    return kinds


def not_covered(traces) -> list[str]:
    """The entries of :data:`NODE_TYPES` that no trace of ``traces`` has, in that order."""
    seen = covered(traces)
    return [kind for kind in NODE_TYPES if kind not in seen]


def _likelihood(likelihood, gaussian_var):
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"inspect: unknown likelihood {likelihood!r}; expected one of "
                         f"{LIKELIHOODS}")
    if likelihood == "bernoulli":
        return {"likelihood": "bernoulli"}
    return {"likelihood": "gaussian", "gaussian_var": 0.5 if gaussian_var is None
            else gaussian_var}


def _set_logvar(model, rng):
    """A learned log-variance away from its initial zeros, so its gradient is not special."""
    if "logvar" in model.likelihood.params:
        lv = model.likelihood.params["logvar"]
        lv[...] = rng.uniform(-1.0, 0.5, lv.shape)


def tiny_model_for(*, activation=None, likelihood=None, gaussian_var=None, arch=None,
                   conditional=False, beta=None, backend=None, seed=0):
    """One tiny float64 model built as asked: ``(title, model, x, labels, beta)``.

    ``arch`` "mlp" (default: 6-5-3, ``activation`` default "relu") or "conv"
    (8 x 8 images as rows, channels 2 2, latent 2; its layers' activations
    are the conv VAE's own); ``conditional`` a CVAE of 2 classes.
    """
    from ..convnet import conv_cvae, conv_vae
    from ..cvae import CVAE
    from ..model import VAE

    rng = np.random.default_rng(1)
    arch = arch or "mlp"
    lik = _likelihood(likelihood or "bernoulli", gaussian_var)
    beta = 1.0 if beta is None else float(beta)
    labels = np.array([0, 1, 1, 0]) if conditional else None
    if arch == "conv":
        if activation is not None:
            raise ValueError("inspect: --activation goes with the MLP (--arch mlp); the conv "
                             "model's activations are its own (ReLU between the convolutions)")
        if conditional:
            model = conv_cvae((8, 8), 2, 2, channels=(2, 2), seed=seed, dtype="float64",
                              backend=backend, flat=True, **lik)
        else:
            model = conv_vae((8, 8), 2, channels=(2, 2), seed=seed, dtype="float64",
                             backend=backend, flat=True, **lik)
        x = rng.random((4, 64))
        what = "conv CVAE (8 x 8, 2 classes" if conditional else "conv VAE (8 x 8"
        title = f"{what}, channels 2 2, latent 2)"
    elif arch == "mlp":
        activation = activation or "relu"
        if activation not in ACTIVATIONS:
            raise ValueError(f"inspect: unknown activation {activation!r}; expected one of "
                             f"{ACTIVATIONS}")
        common = dict(hidden_dims=(5,), latent_dim=3, activation=activation, dtype="float64",
                      seed=seed, backend=backend, **lik)
        model = (CVAE(6, num_classes=2, **common) if conditional else VAE(6, **common))
        x = rng.random((4, 6))
        title = (f"{'CVAE(6, 2 classes' if conditional else 'VAE(6'}, hidden 5, latent 3, "
                 f"{activation})")
    else:
        raise ValueError(f"inspect: unknown arch {arch!r}; expected 'mlp' or 'conv'")
    _set_logvar(model, rng)
    title += f", {lik['likelihood']}"
    if "gaussian_var" in lik:
        title += f" (variance {lik['gaussian_var']})"
    return title + f", beta {beta:g}", model, x, labels, beta


def _mixed_models(backend, seed):
    """Two VAEs of composed networks: every activation, fused and as a layer, both Gaussians."""
    from ..distributions import Gaussian, GaussianLearnedVariance
    from ..layers import (
        Flatten,
        Identity,
        LeakyReLU,
        Linear,
        ReLU,
        Reshape,
        Sequential,
        Sigmoid,
        Softplus,
        Tanh,
    )
    from ..model import VAE

    rng = np.random.default_rng(seed)

    def linear(n_in, n_out, activation="identity"):
        return Linear(n_in, n_out, activation, rng=rng, dtype="float64", backend=backend)

    b = {"backend": backend}
    first = VAE(Sequential(linear(6, 5, "leaky_relu"), linear(5, 4, "sigmoid"), Tanh(**b),
                           linear(4, 6)),
                Sequential(linear(3, 5, "softplus"), Sigmoid(**b), linear(5, 4, "tanh"),
                           LeakyReLU(**b), linear(4, 6)),
                latent_dim=3, likelihood=GaussianLearnedVariance(), seed=seed, backend=backend)
    second = VAE(Sequential(Flatten(**b), linear(6, 5), ReLU(**b), linear(5, 6)),
                 Sequential(linear(3, 5), Softplus(**b), Identity(**b), linear(5, 6, "sigmoid"),
                            Reshape(1, 2, 3, **b)),
                 latent_dim=3, likelihood=Gaussian(0.5), seed=seed, backend=backend)
    r = np.random.default_rng(2)
    _set_logvar(first, r)
    return [
        ("VAE(encoder: Linear leaky_relu, Linear sigmoid, Tanh, Linear; decoder: Linear "
         "softplus, Sigmoid, Linear tanh, LeakyReLU, Linear), learned-variance Gaussian, "
         "beta 0.5", first, r.random((4, 6)), None, 0.5),
        ("VAE(encoder: Flatten, Linear, ReLU, Linear; decoder: Linear, Softplus, "
         "Identity, Linear sigmoid, Reshape(1, 2, 3)), Gaussian (variance 0.5), beta 2",
         second, r.random((4, 1, 2, 3)), None, 2.0),
    ]


def tiny_models(*, activation=None, likelihood=None, gaussian_var=None, arch=None,
                conditional=False, beta=None, backend=None, seed=0) -> list:
    """The models of ``numpyvae inspect --tiny``: ``[(title, model, x, labels, beta), ...]``.

    With no option, a few that between them have every node type
    (:data:`NODE_TYPES`); with any, the one model :func:`tiny_model_for` builds.
    """
    asked = dict(activation=activation, likelihood=likelihood, gaussian_var=gaussian_var,
                 arch=arch, conditional=conditional, beta=beta)
    if any(v not in (None, False) for v in asked.values()):
        return [tiny_model_for(**asked, backend=backend, seed=seed)]
    return [tiny_model_for(backend=backend, seed=seed),
            *_mixed_models(backend, seed),
            tiny_model_for(arch="conv", conditional=True, beta=0.5, backend=backend, seed=seed)]


__all__ = ["NODE_TYPES", "covered", "not_covered", "tiny_models", "tiny_model_for"]
