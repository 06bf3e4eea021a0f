"""numpyvae: variational autoencoders in pure NumPy with hand-written backpropagation.

>>> import numpyvae
>>> model = numpyvae.VAE(784, hidden_dims=(400,), latent_dim=20)   # doctest: +SKIP

Importing the package is cheap: Numba is imported (and its kernels compiled,
or loaded from the on-disk cache) only when the ``numba`` backend is chosen.
"""

from . import evaluate, gradcheck, iwae, latent
from .backend import get_backend
from .cvae import CVAE
from .distributions import Bernoulli, DiagonalGaussian, Gaussian, GaussianLearnedVariance
from .inspect import Trace, inspect
from .layers import (
    Flatten,
    Identity,
    Layer,
    LeakyReLU,
    Linear,
    ReLU,
    Reshape,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
    mlp,
)
from .model import VAE, Autoencoder, LossResult, ModelFileError, load
from .optim import SGD, Adam, AdamW, clip_grad_norm

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
    "Flatten",
    "Reshape",
    "mlp",
    "Bernoulli",
    "Gaussian",
    "GaussianLearnedVariance",
    "DiagonalGaussian",
    "SGD",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "get_backend",
    "gradcheck",
    "evaluate",
    "iwae",
    "latent",
    "inspect",
    "Trace",
    "__version__",
]
