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
import sys

#: Public name -> the module it lives in (modules themselves map to None).
_EXPORTS = {
    "VAE": "model", "Autoencoder": "model", "LossResult": "model",
    "ModelFileError": "modelfile", "load": "app.modelfile", "CVAE": "cvae",
    "Conv2d": "conv", "ConvTranspose2d": "conv",
    "conv_vae": "convnet", "conv_cvae": "convnet",
    "Bernoulli": "distributions", "DiagonalGaussian": "distributions",
    "Gaussian": "distributions", "GaussianLearnedVariance": "distributions",
    "Layer": "layers", "Linear": "layers", "Identity": "layers", "ReLU": "layers",
    "Flatten": "layers", "Reshape": "layers", "LabelChannels": "layers",
    "LeakyReLU": "layers", "Tanh": "layers", "Sigmoid": "layers", "Softplus": "layers",
    "Sequential": "layers", "mlp": "layers",
    "SGD": "optim", "Adam": "optim", "AdamW": "optim", "clip_grad_norm": "optim",
    "train_step": "fast.step",
    "get_backend": "backend", "Trace": "inspector", "inspect": "inspector",
    "gradcheck": None, "evaluate": None, "iwae": None, "latent": None,
    "ppca": None, "linear_vae": None,
}


#: Modules that moved when the package was laid out in three neighbourhoods (the
#: teaching core here, :mod:`numpyvae.fast` and :mod:`numpyvae.app`), by their old
#: name: ``import numpyvae.train`` and ``from numpyvae.data import load_dataset``
#: keep working and give the module that now does the job.
MOVED = {
    "numpyvae.train": "numpyvae.app.train", "numpyvae.data": "numpyvae.app.data",
    "numpyvae.cli": "numpyvae.app.cli", "numpyvae.run": "numpyvae.app.run",
    "numpyvae.runfolder": "numpyvae.app.runfolder", "numpyvae.plots": "numpyvae.app.plots",
    "numpyvae.safenpz": "numpyvae.app.safenpz", "numpyvae.limits": "numpyvae.app.limits",
    "numpyvae.interrupts": "numpyvae.app.interrupts", "numpyvae.fused": "numpyvae.fast.step",
    "numpyvae.threads": "numpyvae.fast.threads", "numpyvae.warmup": "numpyvae.fast.warmup",
    "numpyvae.latent_plots": "numpyvae.app.latent_plots",
    "numpyvae.inspect_catalogue": "numpyvae.inspector.catalogue",
    "numpyvae.inspect_plot": "numpyvae.inspector.plot",
    "numpyvae.buffers": "numpyvae.fast.buffers",
}


class _MovedModuleFinder:
    """Finds a module under its old name (:data:`MOVED`) and hands out the module itself."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        prefix = next((old for old in MOVED if fullname == old or fullname.startswith(old + ".")),
                      None)
        if prefix is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleFinder(MOVED[prefix] +
                                                                             fullname[len(prefix):]))

    def __init__(self, new_name=None):
        self.new_name = new_name

    def create_module(self, spec):
        module = importlib.import_module(self.new_name)
        self.own_spec = module.__spec__  # the import machinery stamps the old name's spec on it
        return module

    def exec_module(self, module):
        module.__spec__, module.__loader__ = self.own_spec, self.own_spec.loader


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name] or name}", __name__)
        value = module if _EXPORTS[name] is None else getattr(module, name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:  # e.g. numpyvae.app.train
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
    "ppca",
    "linear_vae",
    "Trace",
    "inspect",
    "__version__",
]
