"""Building an untrained model from its description: a config or architecture dict.

A model describes itself two ways (:mod:`numpyvae.model`): :meth:`VAE.config
<numpyvae.model.VAE.config>`, the convenience constructor's arguments
(``{"kind": "vae", "input_dim": 784, "hidden_dims": [400], ...}``), and
:meth:`VAE.architecture <numpyvae.model.VAE.architecture>`, every layer's
``spec()``. :func:`build_model` turns either back into a model with fresh
weights; a model file (:mod:`numpyvae.modelfile`) holds one of them and the
weights that go in.

A description may name any kind of model (:data:`numpyvae.model.MODEL_KINDS`,
to which :mod:`numpyvae.cvae` adds ``"cvae"``) and any layer
(:data:`numpyvae.layers.LAYER_TYPES`, to which :mod:`numpyvae.conv` adds the
convolutions). This module imports them all, so the lookups below know every
kind and layer; :mod:`numpyvae.model` itself imports none of them, so there is
no import circle.

What does not live here: reading a model file and checking its sizes
against the memory budget (:mod:`numpyvae.app.modelfile`).
"""

from __future__ import annotations

import numpy as np

from . import conv, cvae  # noqa: F401  (imported for the kinds and layer types they add)
from .distributions import likelihood_from_spec
from .layers import as_float_dtype, layer_from_spec
from .model import MODEL_KINDS
from .modelfile import ModelFileError


def build_model(config: dict, backend=None):
    """Construct an untrained model from a :meth:`~numpyvae.model.VAE.config` or
    :meth:`~numpyvae.model.VAE.architecture` dict.

    Raises :class:`~numpyvae.modelfile.ModelFileError` for an unknown kind,
    and the constructors' own errors (``ValueError``, ``TypeError``) for
    invalid arguments.
    """
    config = dict(config)
    config.pop("format", None)
    kind = config.pop("kind", "vae")
    if kind not in MODEL_KINDS:
        raise ModelFileError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    cls = MODEL_KINDS[kind]
    if "encoder" not in config:
        return cls(**config, backend=backend)
    dtype = as_float_dtype(config.pop("dtype", "float32"))
    rng = np.random.default_rng(0)  # initial weights, to be overwritten
    encoder = layer_from_spec(config.pop("encoder"), rng=rng, dtype=dtype, backend=backend)
    decoder = layer_from_spec(config.pop("decoder"), rng=rng, dtype=dtype, backend=backend)
    likelihood = likelihood_from_spec(config.pop("likelihood", None), backend=backend)
    return cls(encoder, decoder, likelihood=likelihood, **config, backend=backend)


__all__ = ["build_model"]
