"""numpyvae: variational autoencoders in pure NumPy with hand-written backpropagation.

>>> import numpyvae
>>> model = numpyvae.VAE(784, hidden_dims=(400,), latent_dim=20)   # doctest: +SKIP

Importing the package is cheap: Numba is imported (and its kernels compiled,
or loaded from the on-disk cache) only when the ``numba`` backend is chosen.

The public names below are imported on first use (PEP 562), not when the
package is imported: ``numpyvae.VAE`` imports :mod:`numpyvae.model` then.
So the ``numpyvae`` command starts, and installs its signal handlers (a
Ctrl-C at any moment exits with one line, never a traceback), before NumPy
is imported.
"""

import importlib
import importlib.util

#: Public name -> the module it lives in (modules themselves map to None).
_EXPORTS = {
    "VAE": "model", "Autoencoder": "model", "LossResult": "model", "ModelFileError": "model",
    "load": "model", "CVAE": "cvae", "Conv2d": "conv", "ConvTranspose2d": "conv",
    "conv_vae": "convnet", "conv_cvae": "convnet",
    "Bernoulli": "distributions", "DiagonalGaussian": "distributions",
    "Gaussian": "distributions", "GaussianLearnedVariance": "distributions",
    "Layer": "layers", "Linear": "layers", "Identity": "layers", "ReLU": "layers",
    "Flatten": "layers", "Reshape": "layers", "LabelChannels": "layers",
    "LeakyReLU": "layers", "Tanh": "layers", "Sigmoid": "layers", "Softplus": "layers",
    "Sequential": "layers", "mlp": "layers",
    "SGD": "optim", "Adam": "optim", "AdamW": "optim", "clip_grad_norm": "optim",
    "train_step": "fused",
    "get_backend": "backend", "Trace": "inspect",
    "gradcheck": None, "evaluate": None, "iwae": None, "latent": None,
}


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name] or name}", __name__)
        value = module if _EXPORTS[name] is None else getattr(module, name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:  # e.g. numpyvae.train
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "VAE",
    "CVAE",
    "Autoencoder",
    "LossResult",
    "ModelFileError",
    "load",
    "Layer",
    "Linear",
    "Identity",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "Sequential",
    "Conv2d",
    "ConvTranspose2d",
    "conv_vae",
    "conv_cvae",
    "Flatten",
    "Reshape",
    "LabelChannels",
    "mlp",
    "Bernoulli",
    "Gaussian",
    "GaussianLearnedVariance",
    "DiagonalGaussian",
    "SGD",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "train_step",
    "get_backend",
    "gradcheck",
    "evaluate",
    "iwae",
    "latent",
    "Trace",
    "__version__",
]
