"""The options of ``numpyvae train``: their defaults, their checks, and the model they build.

Options arrive from the command line (:mod:`numpyvae.app.cli`), from Python
(:func:`numpyvae.app.run.train_run`) or from a run folder's ``config.json``
(:func:`options_from_config`, when a run is resumed or read back). Here they
are checked (:func:`normalise_options`) and turned into an untrained model
(:func:`build_model`), whose sizes are checked against the memory budget
(:mod:`numpyvae.app.limits`) before anything is allocated.

What does not live here: parsing the command line (:mod:`numpyvae.app.cli`),
the jobs that use the options (:mod:`numpyvae.app.run`), and building a model
from a model file's description (:mod:`numpyvae.architecture`).
"""

from __future__ import annotations

import numpy as np

from ..convnet import check_image_shape, conv_cvae, conv_vae
from ..cvae import CVAE
from ..distributions import likelihood_from_spec
from ..model import MODEL_KINDS
from .data import DATASETS
from .data.local import data_path
from .limits import check_model_config, check_parameters

#: Defaults of ``numpyvae train``: the well-known MNIST recipe (784-400-20, ReLU,
#: Bernoulli decoder, Adam with lr 1e-3, batches of 128). ``epochs`` None means
#: :data:`DEFAULT_EPOCHS` of the dataset.
TRAIN_DEFAULTS = {
    "dataset": "shapes", "epochs": None, "batch_size": 128, "hidden": [400], "latent_dim": 20,
    "lr": 1e-3, "optimizer": "adam", "beta": 1.0, "kl_warmup": 0, "likelihood": "bernoulli",
    "binarize": "none", "dtype": "float32", "seed": 0, "model": "vae", "activation": "relu",
    "iw_train": None, "free_bits": 0.0, "conditional": False, "gaussian_var": 0.01,
    "data": None, "test_fraction": None, "arch": "mlp", "channels": [32, 64],
}
#: Network architectures of ``numpyvae train --arch``.
ARCHS = ("mlp", "conv")
#: Epochs when none are given: the recipe's 10 for the MNIST-like datasets; 30 for
#: ``shapes``, whose sprites only take shape after ~20 epochs (each epoch is a third
#: of an MNIST epoch, so this still runs in well under a minute).
DEFAULT_EPOCHS = {"shapes": 30, "mnist": 10, "fashion-mnist": 10}
#: Epochs when none are given for your own data (``--data FILE``).
DEFAULT_EPOCHS_OWN_DATA = 10


def options_from_config(config: dict) -> dict:
    """The ``numpyvae train`` options a run folder's config.json records."""
    m, t = config.get("model", {}), config.get("training", {})
    own = config.get("data") or {}
    return {"dataset": None if own else config.get("dataset"), "epochs": t.get("epochs"),
            "data": own.get("path"), "test_fraction": own.get("test_fraction"),
            "gaussian_var": m.get("gaussian_var"),
            "batch_size": t.get("batch_size"), "hidden": list(m.get("hidden_dims", [])),
            "latent_dim": m.get("latent_dim"), "lr": t.get("lr"),
            "optimizer": t.get("optimizer"), "beta": t.get("beta"),
            "kl_warmup": t.get("kl_warmup"), "likelihood": m.get("likelihood"),
            "binarize": t.get("binarize"), "dtype": m.get("dtype"), "seed": t.get("seed"),
            "model": "vae" if m.get("kind") == "cvae" else m.get("kind"),
            "activation": m.get("activation"), "conditional": m.get("kind") == "cvae",
            "iw_train": t.get("iw_train"), "free_bits": m.get("free_bits", 0.0),
            "arch": config.get("arch", "mlp"), "channels": config.get("channels")}


def normalise_options(options: dict) -> dict:
    """``numpyvae train`` options, checked and in their canonical types (None: not given)."""
    unknown = sorted(set(options) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; expected some of "
                         f"{sorted(TRAIN_DEFAULTS)}")
    out = {k: v for k, v in options.items() if v is not None}
    if "hidden" in out:
        hidden = out["hidden"]
        out["hidden"] = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
    for key in ("lr", "beta", "free_bits", "test_fraction"):
        if key in out:
            out[key] = float(out[key])
    if out.get("gaussian_var") not in (None, "learned"):
        out["gaussian_var"] = float(out["gaussian_var"])
    if "data" in out:
        if "dataset" in out:
            raise ValueError("give a dataset by name (--dataset) or your own data (--data), "
                             "not both")
        out["data"] = str(data_path(out["data"]))
    elif "test_fraction" in out:
        raise ValueError("a test fraction is held out of your own data (--data FILE); the "
                         "named datasets have their own test sets")
    if "gaussian_var" in out and out.get("likelihood", "bernoulli") != "gaussian":
        raise ValueError("--gaussian-var is the variance of a Gaussian decoder; add "
                         "--likelihood gaussian")
    if out.get("free_bits", 0) and out.get("model", "vae") != "vae":
        raise ValueError("--free-bits acts on the KL term, which only a VAE has")
    if out.get("dataset", "shapes") not in DATASETS:
        raise ValueError(f"unknown dataset {out['dataset']!r}; expected one of "
                         f"{', '.join(DATASETS)}")
    if out.get("arch", "mlp") not in ARCHS:
        raise ValueError(f"unknown architecture {out['arch']!r}; expected one of "
                         f"{', '.join(ARCHS)}")
    if "channels" in out:
        out["channels"] = [int(c) for c in out["channels"]]
        if len(out["channels"]) != 2 or min(out["channels"]) < 1:
            raise ValueError(f"channels must be two positive widths, got {out['channels']}")
    if out.get("model", "vae") not in MODEL_KINDS:
        raise ValueError(f"unknown model {out['model']!r}; expected one of "
                         f"{', '.join(MODEL_KINDS)}")
    return out


def _likelihood(value):
    """A likelihood name, or the object a model file's spec describes (a resumed conv run)."""
    if isinstance(value, dict):
        return likelihood_from_spec(value)
    return value


def build_model(options: dict, input_dim: int, backend=None, image_shape=None,
                num_classes=None):
    """The untrained model that ``numpyvae train`` options describe.

    ``arch`` ``"conv"`` builds the convolutional VAE of :mod:`numpyvae.convnet`
    for images of ``image_shape`` (height and width divisible by 4), taking
    and giving rows of pixels like the MLP; ``hidden`` and ``activation``
    then do not apply. With ``options["conditional"]``, a
    :class:`~numpyvae.CVAE` for ``num_classes`` classes, of either
    architecture (the conv one from :func:`numpyvae.convnet.conv_cvae`).
    """
    extra = {}
    if options.get("conditional"):
        if options["model"] != "vae":
            raise ValueError(f"--conditional needs --model vae, not {options['model']}")
        if not num_classes:
            raise ValueError("--conditional needs a labelled dataset (mnist, fashion-mnist, "
                             "shapes, or your own data with labels)")
        extra["num_classes"] = int(num_classes)
    if options.get("gaussian_var") is not None:
        extra["gaussian_var"] = options["gaussian_var"]
    common = dict(seed=options["seed"], dtype=options["dtype"], backend=backend,
                  free_bits=options.get("free_bits") or 0.0, **extra)
    if options.get("arch", "mlp") == "conv":
        if image_shape is None:
            raise ValueError("the convolutional VAE needs the images' shape")
        shape, channels = tuple(image_shape), tuple(options["channels"])
        _check_conv_size(options, shape, extra.get("num_classes", 0))
        likelihood = _likelihood(options["likelihood"])
        if options.get("conditional"):
            return conv_cvae(shape, options["latent_dim"], common.pop("num_classes"), channels,
                             flat=True, likelihood=likelihood, **common)
        return conv_vae(shape, options["latent_dim"], channels, flat=True,
                        autoencoder=options["model"] == "autoencoder", likelihood=likelihood,
                        **common)
    kind = "cvae" if options.get("conditional") else options["model"]
    # Refuse impossible sizes (--hidden 100000000) before allocating anything.
    check_model_config({"kind": kind, "input_dim": input_dim, "hidden_dims": options["hidden"],
                        "latent_dim": options["latent_dim"], "dtype": options["dtype"], **extra},
                       f"--hidden {_words(options['hidden'])} --latent-dim "
                       f"{options['latent_dim']}")
    cls = CVAE if options.get("conditional") else MODEL_KINDS[options["model"]]
    return cls(input_dim, hidden_dims=tuple(options["hidden"]), latent_dim=options["latent_dim"],
               likelihood=options["likelihood"], activation=options["activation"], **common)


def _check_conv_size(options, image_shape, num_classes):
    """Refuse a convolutional model whose weights and gradients exceed the memory budget.

    Counts the parameters of :func:`numpyvae.convnet.conv_networks` (its
    layout is drawn in that module's docstring): two 4 x 4 convolutions, a
    ``Linear`` to and from the flattened maps, two 4 x 4 transposed
    convolutions.
    """
    _, H, W = check_image_shape(image_shape)
    c1, c2 = (int(c) for c in options["channels"])
    L, C = int(options["latent_dim"]), int(num_classes)
    width = L if options["model"] == "autoencoder" else 2 * L
    n_flat = c2 * (H // 4) * (W // 4)
    count = ((1 + C) * c1 * 16 + c1 + c1 * c2 * 16 + c2 + n_flat * width + width      # encoder
             + (L + C) * n_flat + n_flat + c2 * c1 * 16 + c1 + c1 * 16 + 1)          # decoder
    check_parameters(count, np.dtype(options["dtype"]).itemsize,
                     f"--arch conv --channels {c1} {c2} --latent-dim {L} for {H} x {W} images")


def _words(value):
    """An option's value as it is typed: ``[400, 200]`` -> ``"400 200"``."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


__all__ = ["ARCHS", "DEFAULT_EPOCHS", "DEFAULT_EPOCHS_OWN_DATA", "TRAIN_DEFAULTS",
           "build_model", "normalise_options", "options_from_config"]
