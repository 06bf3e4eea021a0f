"""The ``numpyvae`` command: argument parsing and error reporting only.

Each subcommand parses its options and calls one function of
:mod:`numpyvae.app.run` (or :mod:`numpyvae.checks`), where the work is done.
Errors a user can cause (a missing, corrupt or hostile data, model or run
file, a bad option, an unknown dataset, a run folder in use, sizes beyond
the machine's memory, an unavailable backend, a full disk) arrive here as
the library's documented exceptions and leave as one line on stderr with
exit code 2, never a traceback. A NaN loss exits with 1. Ctrl-C (SIGINT)
or SIGTERM during training saves a checkpoint and exits with 130 or 143
(128 + the signal's number); at any other moment they exit the same way at
once, without a traceback, from the first line of :func:`main` on.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import math
import os
import re
import signal
import sys
import textwrap

from . import interrupts

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

EPILOG_TRAIN = """\
examples:
  numpyvae train                                   # 30 epochs on the embedded shapes dataset
  numpyvae train --dataset fashion-mnist          # downloaded once, then read from the cache
  numpyvae train --data images.npz --test-fraction 0.2   # your own (N, H, W) uint8 array
  numpyvae train --data photos/ --likelihood gaussian    # PNG/JPEG, one subfolder per class
  numpyvae train --dataset mnist --binarize dynamic --epochs 50 --out runs/mnist
  numpyvae train --latent-dim 2 --out runs/shapes-2d   # adds the 2-D manifold figure
  numpyvae train --out runs/mnist --resume --epochs 100  # continue a run

The run folder holds config.json, model.npz, checkpoint.npz (weights, optimizer
and RNG state), metrics.jsonl (one JSON object per epoch) and figures/.
Ctrl-C saves a checkpoint and stops; --resume continues exactly where it stopped.
A Gaussian decoder reports densities, so its losses can be negative. The plain
autoencoder (--model autoencoder) reports its reconstruction loss: it has no ELBO.
"""


def _dataset_choices():
    from .data import DATASETS

    return DATASETS


def _backend_default():
    from ..backend import default_backend_name

    try:
        return default_backend_name()
    except ValueError:  # a bad $NUMPYVAE_BACKEND is reported when the backend is used
        return "numpy"


def _add_backend(p, note=""):
    p.add_argument("--backend", choices=("numpy", "numba"), default=None,
                   help=f"compute backend (default: {_backend_default()}, from "
                        f"$NUMPYVAE_BACKEND or numba when installed{note})")


def _tiny_backend(args):
    """The tiny models' backend: as asked, else the NumPy reference, which compiles nothing.

    They are float64 models of a few units, there to show the specification's
    formulas; ``--backend numba`` (or ``$NUMPYVAE_BACKEND``) inspects the fast path.
    """
    if args.backend is not None or os.environ.get("NUMPYVAE_BACKEND", "").strip():
        return args.backend
    return "numpy"


def _add_data(p):
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder holding the four IDX files (train-images-idx3-ubyte.gz, ...); "
                        "searched before $NUMPYVAE_DATA/<name>/ and the user cache; it must "
                        "exist (a missing folder is an error, never a download target)")
    p.add_argument("--no-download", action="store_true",
                   help="never download: fail if the data files are not found")


def _add_own_data(p):
    p.add_argument("--data", metavar="FILE", default=None,
                   help="the run's own data file or image folder, if it has moved since "
                        "training (default: where config.json says it was)")


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _gaussian_var(text):
    if text == "learned":
        return text
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'learned', got "
                                         f"{text!r}")
    return value


def _int_at_least(minimum, description):
    """An argparse type for integers >= ``minimum``, with a one-line error otherwise."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


_positive = _int_at_least(1, "a positive integer")
_non_negative = _int_at_least(0, "an integer >= 0")


def _number(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_number(text):
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _non_negative_number(text):
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2).

    A misspelled option or command gets a suggestion (``difflib``): the
    options of the subcommand given are the candidates.
    """

    def error(self, message):
        message += _suggest_choice(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = _subparser(self, getattr(args, "command", None))
            parser = sub or self
            hints = [_suggest_option(parser, word) for word in extras]
            hints = [h for h in hints if h]
            parser.error(f"unrecognized arguments: {' '.join(extras)}"
                         + (f"; did you mean {', '.join(hints)}?" if hints else ""))
        return args


def _subparser(parser, command):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def _suggest_option(parser, word) -> str:
    """The option closest to a misspelled ``--word`` (or ``--word=value``), or ''."""
    if not word.startswith("-"):
        return ""
    flag = word.split("=", 1)[0]
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
    return close[0] if close else ""


def _suggest_choice(message) -> str:
    """'; did you mean X?' for argparse's "invalid choice: 'trian' (choose from ...)"."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2)) or [
        c.strip() for c in found.group(2).split(",")]
    close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    from .options import DEFAULT_EPOCHS, DEFAULT_EPOCHS_OWN_DATA
    from .options import TRAIN_DEFAULTS as D

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="numpyvae", formatter_class=fmt,
        description="Variational autoencoders in pure NumPy: train, evaluate, sample, and "
                    "check gradients.",
        epilog="example:\n  numpyvae train            # then look at runs/shapes-*/figures/\n"
               "Run 'numpyvae COMMAND --help' for a command's options.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"numpyvae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train", formatter_class=fmt, epilog=EPILOG_TRAIN,
        help="train a model and write a run folder with checkpoints, metrics and figures",
        description="Train a VAE (or a plain autoencoder) with minibatch Adam, evaluate the "
                    "test-set ELBO after every epoch, and keep a run folder with "
                    "checkpoints, metrics and figures.")
    p.add_argument("--dataset", choices=_dataset_choices(), default=None,
                   help=f"dataset (default: {D['dataset']}, generated by the package, no "
                        f"download)")
    _add_data(p)
    p.add_argument("--data", metavar="FILE", default=None,
                   help="your own data instead of --dataset: a .npy/.npz array of images (N, H, "
                        "W), (N, C, H, W) or vectors (N, D), with labels 'y' in a .npz, or a "
                        "folder of PNG/JPEG images with one subfolder per class; 8-bit values "
                        "are scaled to [0, 1]")
    p.add_argument("--test-fraction", type=_fraction, metavar="F", default=None,
                   help="with --data and no test set in it: the share of the examples held "
                        "out as the test set (default: 0.1)")
    p.add_argument("--epochs", type=_positive, default=None,
                   help="epochs to train in total (default: "
                        + ", ".join(f"{n} for {d}" for d, n in DEFAULT_EPOCHS.items())
                        + f", {DEFAULT_EPOCHS_OWN_DATA} for --data)")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help=f"minibatch size (default: {D['batch_size']})")
    p.add_argument("--hidden", type=_positive, nargs="+", metavar="WIDTH", default=None,
                   help="widths of the encoder's hidden layers; the decoder mirrors them "
                        f"(default: {' '.join(map(str, D['hidden']))})")
    p.add_argument("--arch", choices=("mlp", "conv"), default=None,
                   help="network: 'mlp' (default; --hidden, --activation) or 'conv', the "
                        "convolutional VAE (two stride-2 convolutions, mirrored by transposed "
                        "ones; images with height and width divisible by 4)")
    p.add_argument("--channels", type=_positive, nargs=2, metavar=("C1", "C2"), default=None,
                   help=f"with --arch conv: widths of the two convolutions (default: "
                        f"{' '.join(map(str, D['channels']))})")
    p.add_argument("--latent-dim", type=_positive, default=None,
                   help=f"latent dimensions (default: {D['latent_dim']}; 2 adds the manifold "
                        f"figure)")
    p.add_argument("--lr", type=_positive_number, default=None,
                   help=f"learning rate (default: {D['lr']:g}; with --resume, a new one "
                        f"applies from the checkpoint on)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default=None,
                   help=f"optimizer (default: {D['optimizer']})")
    p.add_argument("--beta", type=_non_negative_number, default=None,
                   help=f"weight of the KL term, beta-VAE (default: {D['beta']:g})")
    p.add_argument("--kl-warmup", type=_non_negative, metavar="STEPS", default=None,
                   help="raise the KL weight linearly to beta over this many steps "
                        f"(default: {D['kl_warmup']}, none)")
    p.add_argument("--free-bits", type=_number, metavar="NATS", default=None,
                   help="nats per latent dimension below which the KL is not penalised, "
                        "against posterior collapse (default: 0, off)")
    p.add_argument("--conditional", action="store_true", default=None,
                   help="a conditional VAE: encoder q(z|x,y) and decoder p(x|z,y) see the "
                        "one-hot class label (mnist, fashion-mnist, shapes by shape, or your "
                        "own labelled data); with --arch conv the label enters the encoder "
                        "as constant channels")
    p.add_argument("--iw-train", type=_positive, metavar="K", default=None,
                   help="train on the importance-weighted bound (IWAE) with K samples per "
                        "example instead of the ELBO (default: off)")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=None,
                   help=f"decoder likelihood (default: {D['likelihood']}); a Gaussian one "
                        "reports densities, so its losses can be negative")
    p.add_argument("--gaussian-var", type=_gaussian_var, metavar="VAR", default=None,
                   help="with --likelihood gaussian: the decoder's fixed variance, or "
                        f"'learned' for a learned one per pixel (default: {D['gaussian_var']:g})")
    p.add_argument("--activation", choices=("relu", "leaky_relu", "tanh", "sigmoid",
                                            "softplus"), default=None,
                   help=f"hidden activation (default: {D['activation']})")
    p.add_argument("--binarize", choices=("none", "dynamic", "static"), default=None,
                   help="binarize pixels: dynamic = a fresh Bernoulli draw each epoch, static "
                        f"= once (default: {D['binarize']})")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help=f"floating-point type (default: {D['dtype']})")
    p.add_argument("--model", choices=("vae", "autoencoder"), default=None,
                   help=f"model (default: {D['model']})")
    p.add_argument("--seed", type=_non_negative, default=None,
                   help=f"seed of the initial weights, data order and noise "
                        f"(default: {D['seed']})")
    p.add_argument("--out", metavar="RUN_DIR", default=None,
                   help="run folder (default: runs/<dataset>-<date>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-figures", action="store_true",
                   help="draw no figures at the end (numpyvae figures RUN_DIR draws them later)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    _add_backend(p, "; with --resume, the run's own")

    p = sub.add_parser(
        "evaluate", formatter_class=fmt,
        help="test-set ELBO, reconstruction, KL and importance-weighted log-likelihood",
        description="Evaluate a trained run on its test set: the ELBO and its two terms "
                    "(nats per example) and, with --iw-samples K, the importance-weighted "
                    "estimate of log p(x) (Burda et al.).",
        epilog="examples:\n  numpyvae evaluate runs/mnist\n"
               "  numpyvae evaluate runs/mnist --iw-samples 5000 --limit 1000 --json")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--iw-samples", type=_non_negative, default=0, metavar="K",
                   help="importance samples per image for log p(x) (default: 0, skip)")
    p.add_argument("--limit", type=_positive, default=None, metavar="N",
                   help="evaluate the first N test images only")
    p.add_argument("--batch-size", type=_positive, default=1000)
    p.add_argument("--seed", type=_non_negative, default=0, help="seed of the noise")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (shown for --iw-samples)")
    p.add_argument("--disentanglement", action="store_true",
                   help="shapes runs: the Mutual Information Gap (Chen et al., 2018) of the "
                        "posterior means against the known generating factors, and the "
                        "active units")
    _add_data(p)
    _add_own_data(p)
    _add_backend(p)

    p = sub.add_parser(
        "sample", formatter_class=fmt, help="decode draws from the prior into a grid of images",
        description="Decode N draws z ~ N(0, I) of a trained run into a grid of images "
                    "(PNG, JPEG, PDF or SVG, by the suffix of --out).",
        epilog="example:\n  numpyvae sample runs/mnist -n 64 --out samples.png")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-n", type=_positive, default=100, help="number of samples (default: 100)")
    p.add_argument("--seed", type=_non_negative, default=0)
    p.add_argument("--out", metavar="FILE", default=None,
                   help="output image, .png, .jpg, .pdf or .svg (default: "
                        "RUN_DIR/figures/samples.png)")
    p.add_argument("--label", metavar="CLASS", default=None,
                   help="a conditional run only: draw every sample of this class, by index or "
                        "name (default: one row per class)")
    _add_backend(p)

    p = sub.add_parser(
        "reconstruct", formatter_class=fmt, help="test images above their reconstructions",
        description="Draw N test images above their reconstructions (the decoded posterior "
                    "mean) into a PNG.",
        epilog="example:\n  numpyvae reconstruct runs/mnist -n 30")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-n", type=_positive, default=20, help="number of test images (default: 20)")
    p.add_argument("--seed", type=_non_negative, default=0, help="seed of the image choice")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="output image, .png, .jpg, .pdf or .svg (default: "
                        "RUN_DIR/figures/reconstructions.png)")
    _add_data(p)
    _add_own_data(p)
    _add_backend(p)

    p = sub.add_parser(
        "interpolate", formatter_class=fmt,
        help="decode straight lines in latent space between pairs of test images",
        description="Encode pairs of test images and decode evenly spaced points on the line "
                    "between their codes: one strip of images per pair.",
        epilog="example:\n  numpyvae interpolate runs/mnist --pairs 5 --steps 12")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--pairs", type=_positive, default=8, help="strips (default: 8)")
    p.add_argument("--steps", type=_positive, default=10, help="images per strip (default: 10)")
    p.add_argument("--seed", type=_non_negative, default=0, help="seed of the image choice")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="output image, .png, .jpg, .pdf or .svg (default: "
                        "RUN_DIR/figures/interpolation.png)")
    _add_data(p)
    _add_own_data(p)
    _add_backend(p)

    p = sub.add_parser(
        "figures", formatter_class=fmt, help="(re)draw every figure of a run folder",
        description="Write every figure of a run into RUN_DIR/figures/ again.",
        epilog="example:\n  numpyvae figures runs/mnist")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_data(p)
    _add_own_data(p)
    _add_backend(p)

    p = sub.add_parser(
        "export", formatter_class=fmt,
        help="write a web page to move through the latent space of a run (opens from a file)",
        description="Write one self-contained HTML page (no server, no network: the "
                    "decoder's weights and a small JavaScript forward pass are in it) where "
                    "you drag a point over the latent space, or move the sliders of its most "
                    "active dimensions, and see the decoded image change at once; a class "
                    "picker for a conditional run; the test set's codes drawn beneath.",
        epilog="examples:\n  numpyvae export runs/mnist --html explorer.html\n"
               "  then open explorer.html in a web browser")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--html", metavar="FILE", required=True,
                   help="the page to write, a file name ending in .html")
    p.add_argument("--seed", type=_non_negative, default=0,
                   help="seed of the test codes drawn on the page (a subsample)")
    _add_data(p)
    _add_own_data(p)
    _add_backend(p)

    p = sub.add_parser(
        "gradcheck", formatter_class=fmt,
        help="check every hand-written gradient, loss and update against an independent answer",
        description="Compare the backward pass of every layer type (Linear with each "
                    "activation, each activation, Flatten, Reshape, LabelChannels, Sequential, "
                    "Conv2d, ConvTranspose2d) and of the whole models (the VAE with each "
                    "likelihood, the autoencoder, the conditional VAE, the conv VAE) with "
                    "central differences in float64; each likelihood's loss value, the "
                    "posterior's sample and KL against the textbook densities, and every "
                    "backward path of the likelihoods (nll_backward too) and the latent "
                    "layer; the importance-weighted objective's value and gradient; that "
                    "gradients accumulate and zero_grad clears them; and one step of SGD, "
                    "momentum, Nesterov, Adam and AdamW against the textbook formulas. "
                    "On the numpy reference by default (seconds). With --backend numba the "
                    "same on the Numba backend, then its ops, a whole training step and the "
                    "one-call step against the reference at training shapes; --all runs "
                    "both backends. Prints a table per check and one line per failure "
                    "(the parameter or op, the largest error and where). Exits with 1 if "
                    "any check fails.",
        epilog="examples:\n  numpyvae gradcheck                  # the reference, in seconds\n"
               "  numpyvae gradcheck --backend numba  # and the fast path at training shapes\n"
               "  numpyvae gradcheck --all")
    p.add_argument("--seed", type=_non_negative, default=0)
    p.add_argument("--backend", choices=("numpy", "numba"), default="numpy",
                   help="the backend whose gradients are checked (default: numpy, the "
                        "reference); numba also compares it with the reference at training "
                        "shapes")
    p.add_argument("--all", action="store_true",
                   help="check both backends, and the fast path against the reference")

    p = sub.add_parser(
        "inspect", formatter_class=fmt,
        help="step through one forward/backward pass node by node, checking each node",
        description="Run one forward and backward pass with the noise held fixed and print "
                    "every node (each layer, the mu/logvar split, the reparameterization, "
                    "the KL, the likelihood, the loss; for a conditional model also the "
                    "label joined to x and to z): shapes, statistics, gradient norms "
                    "and a central-difference check of its backward in float64. A "
                    "conditional run is inspected on its test images' own labels. --bug "
                    "plants a known-wrong backward formula in one node; the check points at "
                    "it. The model's own loss_and_grads is compared with the trace: gradients "
                    "that differ beyond rounding are a wiring bug, and the parameter that "
                    "differs most is named. --tiny alone steps through a few tiny models "
                    "that between them have every node type; --activation, --likelihood, "
                    "--arch, --conditional and --beta build the one model asked for, and the "
                    "output says which node types that run did not cover. Exits with 1 if "
                    "any node's check fails or the model's gradients differ from the trace's.",
        epilog="examples:\n  numpyvae inspect --tiny                 # tiny models with every "
               "node type\n  numpyvae inspect --tiny --conditional   # a 6-5-3 float64 CVAE\n"
               "  numpyvae inspect --tiny --activation tanh --likelihood gaussian --beta 0.5\n"
               "  numpyvae inspect --tiny --arch conv\n"
               "  numpyvae inspect runs/mnist -n 4 --figure graph.png\n"
               "  numpyvae inspect --tiny --bug reparam-dropped-half\n"
               "  numpyvae inspect --tiny --mystery          # a hidden bug to find\n"
               "  numpyvae inspect --tiny --reveal 1234      # which bug seed 1234 planted\n"
               "  numpyvae inspect --list-bugs")
    p.add_argument("run_dir", nargs="?", help="a run folder (or use --tiny)")
    p.add_argument("--tiny", action="store_true",
                   help="small float64 models on random data: alone, a few that between them "
                        "have every node type; with the options below, the one asked for")
    p.add_argument("--conditional", action="store_true",
                   help="with --tiny: a small conditional VAE (2 classes) and random labels")
    p.add_argument("--activation", choices=("identity", "relu", "leaky_relu", "tanh", "sigmoid",
                                            "softplus"), default=None,
                   help="with --tiny: the MLP's activation (default relu)")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=None,
                   help="with --tiny: the decoder's likelihood (default bernoulli)")
    p.add_argument("--gaussian-var", type=_gaussian_var, metavar="VAR", default=None,
                   help="with --tiny --likelihood gaussian: the fixed variance (default 0.5) "
                        "or 'learned'")
    p.add_argument("--arch", choices=("mlp", "conv"), default=None,
                   help="with --tiny: an MLP (default) or a small convolutional model")
    p.add_argument("-n", type=_positive, default=4, help="test images (default: 4)")
    p.add_argument("--beta", type=_non_negative_number, default=None,
                   help="KL weight (default: the run's, or 1 with --tiny)")
    p.add_argument("--bug", default=None, help="plant this bug of the catalogue (--list-bugs)")
    p.add_argument("--node", default=None, help="the node to plant --bug in")
    p.add_argument("--list-bugs", action="store_true", help="print the catalogue and exit")
    p.add_argument("--mystery", action="store_true",
                   help="with --tiny: plant one bug of the catalogue, drawn by --seed (default: "
                        "a random seed, printed), in one tiny model; the table shows which node "
                        "fails and by how much, but not the bug's name or formulas")
    p.add_argument("--reveal", type=_non_negative, metavar="SEED", default=None,
                   help="with --tiny (and the same model options): say which bug and node "
                        "--mystery --seed SEED planted, and its wrong formula")
    p.add_argument("--figure", default=None, help="also draw the graph into this PNG")
    p.add_argument("--seed", type=_non_negative, default=None,
                   help="seed of the noise and of the checks (default: 0); with --mystery "
                        "also of the bug drawn")
    _add_data(p)
    _add_own_data(p)
    _add_backend(p, "; with --tiny, numpy: the reference")

    p = sub.add_parser(
        "course", formatter_class=fmt,
        help="the course kit: students' notebooks with stubs, and grading of their work",
        description="For teachers. 'course student OUT_DIR' writes the students' version of "
                    "every teaching notebook; 'course grade PATH...' runs students' notebooks "
                    "and prints who passed which exercise.",
        epilog="examples:\n  numpyvae course student handout/\n"
               "  numpyvae course grade submitted/ --json gradebook.json")
    course = p.add_subparsers(dest="course_command", metavar="ACTION", required=True)
    q = course.add_parser(
        "student", formatter_class=fmt,
        help="write the students' notebooks: each solution replaced by a stub",
        description="Write the student version of every notebook: each region between "
                    "'### BEGIN SOLUTION' and '### END SOLUTION' replaced by nbgrader's stub "
                    "('# YOUR CODE HERE' and 'raise NotImplementedError()'), outputs "
                    "cleared, the check cells kept. Other files beside the notebooks are "
                    "copied too. nbgrader's own generate_assignment makes the same stubs "
                    "from the same notebooks.",
        epilog="example:\n  numpyvae course student handout/")
    q.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (new or empty)")
    q.add_argument("--from", dest="source", metavar="DIR", default=None,
                   help="the solved notebooks (default: the checkout's notebooks/ folder)")
    q.add_argument("--force", action="store_true",
                   help="write into a folder that is not empty, replacing notebooks of the "
                        "same names")
    q = course.add_parser(
        "grade", formatter_class=fmt,
        help="run students' notebooks headless and print who passed which exercise",
        description="Run each notebook in a fresh kernel of this Python (quick mode, errors "
                    "allowed, so every check cell runs) and print one row per exercise: "
                    "student, exercise, passed or FAILED, and the diagnosis (the exception "
                    "and the first line of its message; a stub not yet replaced reads 'not "
                    "written yet'), then each student's total. A notebook that cannot be "
                    "read, runs past its time limit or kills its kernel gets failed rows "
                    "saying so. Whose is a notebook: a notebook given as a file, or lying "
                    "directly in a folder given, is the student named by its file name "
                    "(alice.ipynb); one in a subfolder is the student named by the first "
                    "subfolder (submitted/alice/01_linear_layer.ipynb); --student names "
                    "them all. Exits with 0 when the grading ran, whatever the students' "
                    "results (they are in the table); 2 when it could not run (a path "
                    "that does not exist, no notebook found).",
        epilog="examples:\n  numpyvae course grade submitted/\n"
               "  numpyvae course grade alice.ipynb bob.ipynb --timeout 300\n"
               "  numpyvae course grade submitted/ --checks handout/\n"
               "  numpyvae course grade submitted/ --json gradebook.json")
    q.add_argument("paths", nargs="+", metavar="PATH", help="notebooks or folders of them")
    q.add_argument("--student", default=None,
                   help="the student every notebook given belongs to")
    q.add_argument("--checks", metavar="DIR", default=None,
                   help="the course's notebooks (solved, or the students' versions): the check "
                        "cells of the notebook of the same file name replace the student's, "
                        "so an edited or deleted check is graded as it was handed out")
    q.add_argument("--timeout", type=_positive_number, metavar="SECONDS", default=None,
                   help="time limit of each notebook in all (default: 600)")
    q.add_argument("--cell-timeout", type=_positive_number, metavar="SECONDS", default=None,
                   help="time limit of each cell (default: 300)")
    q.add_argument("--json", metavar="FILE", default=None,
                   help="also write the gradebook as JSON, a list of {student, notebook, "
                        "exercise, points, max_points, passed, diagnosis}, to FILE ('-': "
                        "print it instead of the table)")
    q.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _say(args):
    if getattr(args, "quiet", False):
        return None
    return lambda text: print(text, file=sys.stderr)


def _train(args):
    from .run import train_run

    result = train_run(
        args.out, resume=args.resume, data_dir=args.data_dir, download=not args.no_download,
        backend=args.backend, progress=not args.quiet, log=_say(args),
        figures=not args.no_figures,
        dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
        hidden=args.hidden, latent_dim=args.latent_dim, lr=args.lr, optimizer=args.optimizer,
        beta=args.beta, kl_warmup=args.kl_warmup, likelihood=args.likelihood,
        binarize=args.binarize, dtype=args.dtype, seed=args.seed, model=args.model,
        activation=args.activation, iw_train=args.iw_train, free_bits=args.free_bits,
        data=args.data, test_fraction=args.test_fraction, gaussian_var=args.gaussian_var,
        conditional=args.conditional, arch=args.arch, channels=args.channels)
    if result.history and not args.quiet:
        last = result.history[-1]
        what = "-ELBO" if last.get("train_kl") is not None else "reconstruction loss"
        test = "" if last["test_loss"] is None else f", test {what} {last['test_loss']:.2f}"
        print(f"{result.run_dir}: {_count(last['epoch'], 'epoch')}, train {what} "
              f"{last['train_loss']:.2f}{test} nats")
    if result.interrupted:
        return 128 + (result.stop_signal or signal.SIGINT)
    return 0


def _evaluate(args):
    from .run import evaluate_run

    r = evaluate_run(args.run_dir, iw_samples=args.iw_samples, limit=args.limit,
                     batch_size=args.batch_size, seed=args.seed, data_dir=args.data_dir,
                     download=not args.no_download, backend=args.backend, data=args.data,
                     progress=not args.quiet, disentanglement=args.disentanglement)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['run']}: {r['model']} on {r['dataset']}, {_count(r['epochs'], 'epoch')}, "
          f"{r['n_test']} test images (nats per example)")
    if r["elbo"] is None:
        print(f"  reconstruction loss {r['recon']:10.3f}   (-log p(x|z) at the code; an "
              f"autoencoder has no ELBO and no KL)")
    else:
        print(f"  ELBO            {r['elbo']:10.3f}")
        print(f"  reconstruction  {r['recon']:10.3f}   (-log p(x|z))")
        print(f"  KL              {r['kl']:10.3f}")
    if "log_likelihood" in r:
        print(f"  log p(x) >=     {r['log_likelihood']:10.3f}   (importance-weighted, "
              f"K={r['iw_samples']})")
    if "mig" in r:
        print(f"  MIG             {r['mig']:10.3f}   (Mutual Information Gap, 0 to 1; "
              f"{r['active_units']} of {r['latent_dim']} units active)")
        for name, gap in r["mig_per_factor"].items():
            print(f"    {name:<12}  {gap:8.3f}   (best: z[{r['mig_top_dim'][name]}])")
    if r["likelihood"] == "gaussian":
        from .run import GAUSSIAN_NOTE

        print(f"  note: {GAUSSIAN_NOTE}")
    return 0


def _print_path(path):
    print(path)
    return 0


def _sample(args):
    from .run import sample_run

    return _print_path(sample_run(args.run_dir, n=args.n, seed=args.seed, out=args.out,
                                  backend=args.backend, label=args.label))


def _reconstruct(args):
    from .run import reconstruct_run

    return _print_path(reconstruct_run(args.run_dir, n=args.n, seed=args.seed, out=args.out,
                                       data_dir=args.data_dir, download=not args.no_download,
                                       backend=args.backend, data=args.data))


def _interpolate(args):
    from .run import interpolate_run

    return _print_path(interpolate_run(args.run_dir, pairs=args.pairs, steps=args.steps,
                                       seed=args.seed, out=args.out, data_dir=args.data_dir,
                                       download=not args.no_download, backend=args.backend,
                                       data=args.data))


def _figures(args):
    from .run import figures_run

    for path in figures_run(args.run_dir, data_dir=args.data_dir,
                            download=not args.no_download, backend=args.backend,
                            data=args.data):
        print(path)
    return 0


def _export(args):
    from .run import export_run

    return _print_path(export_run(args.run_dir, args.html, seed=args.seed,
                                  data_dir=args.data_dir, download=not args.no_download,
                                  backend=args.backend, data=args.data))


def _gradcheck(args):
    from ..checks import tool_checks
    from ..checks.compare import failures

    backends = ("numpy", "numba") if args.all else (args.backend,)
    reports = []
    for backend in backends:
        reports += tool_checks(backend, args.seed, fast_path=backend == "numba")
    if "numba" in backends:
        from ..fast.step_checks import step_checks

        reports += step_checks(args.seed)
    for report in reports:
        print(report)
        print()
    failed = [r.title for r in reports if not r.passed]
    worst = max(r.max_error for r in reports)
    if failed:
        print("\n".join(failures(reports)))
        print(f"FAILED: {len(failed)} of {len(reports)} checks: {'; '.join(failed)}")
        return EXIT_FAILED
    print(f"all {len(reports)} checks passed on {' and '.join(backends)} "
          f"(largest relative error {worst:.1e})")
    return 0


def _inspect(args):
    from ..inspector.catalogue import BUGS
    from ..inspector.coverage import not_covered, tiny_models
    from ..inspector.trace import inspect
    from .run import inspect_run

    if args.list_bugs:
        for bug in BUGS.values():
            print(f"{bug.name:<31} {bug.formula}")
        return 0
    puzzle = args.mystery or args.reveal is not None
    if puzzle:
        if args.mystery and args.reveal is not None:
            raise ValueError("give --mystery (plant a hidden bug) or --reveal SEED (say which "
                             "one it was), not both")
        if args.run_dir is not None:
            raise ValueError("--mystery and --reveal go with --tiny (the tiny models), not "
                             "with a run folder")
        if args.bug is not None or args.node is not None:
            raise ValueError("--mystery and --reveal draw their own bug and node; drop --bug "
                             "and --node")
        args.tiny = True
    if args.tiny == (args.run_dir is not None):
        raise ValueError("give either a run folder or --tiny")
    built = {"--conditional": args.conditional, "--activation": args.activation,
             "--likelihood": args.likelihood, "--gaussian-var": args.gaussian_var,
             "--arch": args.arch}
    given = [name for name, value in built.items() if value not in (None, False)]
    if given and not args.tiny:
        raise ValueError(f"{given[0]} goes with --tiny (a run folder's model is built as it "
                         f"was trained)")
    if puzzle:
        return _inspect_mystery(args)
    if args.seed is None:
        args.seed = 0
    if not args.tiny:
        trace = inspect_run(args.run_dir, n=args.n, seed=args.seed, bug=args.bug,
                            node=args.node, beta=args.beta, data_dir=args.data_dir,
                            download=not args.no_download, backend=args.backend,
                            data=args.data)
        print(trace)
        _inspect_figure(args, trace)
        return 0 if trace.passed else EXIT_FAILED
    models = tiny_models(activation=args.activation, likelihood=args.likelihood,
                         gaussian_var=args.gaussian_var, arch=args.arch,
                         conditional=args.conditional, beta=args.beta,
                         backend=_tiny_backend(args))
    if args.bug is not None and not given:
        models = models[:1]  # a planted bug goes into the first tiny model
    traces = []
    for title, model, x, labels, beta in models:
        if len(models) > 1:
            print(textwrap.fill(f"== {title}", 100, subsequent_indent="   "))
        beta = beta if args.beta is None else args.beta
        trace = inspect(model, x, beta=beta, labels=labels, bug=args.bug, bug_node=args.node,
                        seed=args.seed)
        print(trace.table(explain=not traces))  # what the columns mean: once
        traces.append(trace)
        print()
    _inspect_figure(args, traces[0])
    missing = not_covered(traces)
    print("node types not covered by this run: " + ", ".join(missing) if missing else
          "every node type of the library was covered")
    failed = [title for (title, *_), t in zip(models, traces, strict=True) if not t.passed]
    if failed:
        print(f"FAILED: {len(failed)} of {len(traces)} models: {'; '.join(failed)}")
    return EXIT_FAILED if failed else 0


def _inspect_mystery(args):
    """``inspect --tiny --mystery`` (a hidden bug to find) and ``--reveal SEED`` (the answer)."""
    import secrets

    from ..inspector.catalogue import BUGS, mystery
    from ..inspector.coverage import tiny_models
    from ..inspector.trace import build_graph, inspect

    models = tiny_models(activation=args.activation, likelihood=args.likelihood,
                         gaussian_var=args.gaussian_var, arch=args.arch,
                         conditional=args.conditional, beta=args.beta,
                         backend=_tiny_backend(args))
    betas = [beta if args.beta is None else args.beta for *_, beta in models]
    graphs = [build_graph(model, beta) for (_, model, *_), beta in zip(models, betas,
                                                                          strict=True)]
    seed = args.reveal if args.reveal is not None else args.seed
    if seed is None:
        seed = secrets.randbelow(10_000)
    index, bug, node = mystery(graphs, seed)
    title, model, x, labels, _ = models[index]
    if args.reveal is not None:
        print(textwrap.fill(f"seed {seed} planted {bug} in the node {node} of {title}", 100,
                            subsequent_indent="   "))
        print(textwrap.fill(f"wrong backward: {BUGS[bug].formula}", 100,
                            initial_indent="  ", subsequent_indent="    "))
        return 0
    options = [word for flag, value in (("--conditional", args.conditional),
                                        ("--activation", args.activation),
                                        ("--likelihood", args.likelihood),
                                        ("--gaussian-var", args.gaussian_var),
                                        ("--arch", args.arch), ("--beta", args.beta))
               if value not in (None, False)
               for word in ((flag,) if value is True else (flag, f"{value:g}" if isinstance(
                   value, float) else str(value)))]
    reveal = " ".join(["numpyvae inspect --tiny", *options, "--reveal", str(seed)])
    for line in (f"== mystery {seed}: one node of {title} has a wrong backward formula "
                 f"from the catalogue of common mistakes (numpyvae inspect --list-bugs). Find "
                 f"the node, derive its backward, and say what the code gets wrong.",
                 f"== the answer: {reveal}"):
        print(textwrap.fill(line, 100, subsequent_indent="   "))
    trace = inspect(model, x, beta=betas[index], labels=labels, bug=bug, bug_node=node,
                    seed=seed)
    trace.bug = None
    for n in trace.nodes.values():  # nothing printed or drawn names the bug
        n.bug = None
    print(trace.table(mystery=True))
    _inspect_figure(args, trace)
    if trace.failed:
        print(f"FAILED: the check of {', '.join(trace.failed)} (the largest relative error "
              f"{max(trace[n].check.max_error for n in trace.failed):.1e})")
    return 0 if trace.passed else EXIT_FAILED


def _inspect_figure(args, trace):
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        fig = trace.plot()
        fig.savefig(args.figure, dpi=120, bbox_inches="tight")
        print(args.figure)


def _course(args):
    if args.course_command == "student":
        from .course import write_student_versions

        written = write_student_versions(args.out_dir, args.source, force=args.force)
        print(f"{len(written)} student notebooks in {args.out_dir}")
        return 0
    from .grading import CELL_TIMEOUT, NOTEBOOK_TIMEOUT, format_table, grade, gradebook

    rows = grade(args.paths, student=args.student, checks=args.checks,
                 timeout=args.timeout or NOTEBOOK_TIMEOUT,
                 cell_timeout=args.cell_timeout or CELL_TIMEOUT, log=_say(args))
    if args.json is not None:
        text = json.dumps(gradebook(rows), indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
            return 0
        from ..fileio import atomic_write_text

        atomic_write_text(args.json, text)
    print(format_table(rows))
    if args.json is not None:
        print(f"gradebook: {args.json}")
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "sample": _sample,
            "reconstruct": _reconstruct, "interpolate": _interpolate, "figures": _figures,
            "export": _export, "gradcheck": _gradcheck, "inspect": _inspect, "course": _course}


class _Stop(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised where the program is (as Python raises KeyboardInterrupt)."""


def main(argv=None) -> int:
    """Run the ``numpyvae`` command; return its exit code."""
    command = "numpyvae"
    received = []
    interrupts.pending.clear()
    _printable(sys.stdout, sys.stderr)

    def on_signal(signum, frame):
        received.append(signum)
        interrupts.pending.append(signum)  # for training to see, should _Stop be swallowed
        interrupts.raise_when_safe(frame, _Stop)  # not inside an import

    previous = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, on_signal)
        try:
            from .train import NonFiniteLossError
        except ImportError as exc:  # a broken installation, or an import the signal broke off
            if received:
                raise _Stop from None
            print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        try:
            parser = build_parser()
            if not (sys.argv[1:] if argv is None else argv):  # no command: what there is to run
                parser.print_help()
                return 0
            args = parser.parse_args(argv)
            command = f"numpyvae {args.command}"
            code = COMMANDS[args.command](args)
            if received and code not in (128 + s for s in received):
                raise _Stop  # the signal's exception was swallowed where it landed
            return code
        except NonFiniteLossError as exc:
            print(f"{command}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except (ValueError, OSError, ImportError, MemoryError) as exc:
            if received:  # an import or a read that the signal broke off
                raise _Stop from None
            print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
    except KeyboardInterrupt:
        signum = received[0] if received else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
        print(f"{command}: {what}", file=sys.stderr)
        return 128 + signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        interrupts.cancel_raise()
        interrupts.pending.clear()


def command() -> None:
    """The ``numpyvae`` console command (and ``python -m numpyvae``): :func:`main`, then exit.

    A command stopped by Ctrl-C or SIGTERM has said so, closed its files and
    released its run folder by the time :func:`main` returns; it then exits
    at once (``os._exit``), without the interpreter's shutdown. A signal can
    land anywhere in start-up, halfway through loading Numba, its threading
    layer or a BLAS library, and the shutdown of such a half-loaded native
    library was seen to abort the process (``Fatal Python error:
    PyThreadState_Get``) or hang it, a few times in a few hundred
    interruptions. Any other exit goes through the normal shutdown. In a
    notebook, call :func:`main`, which only returns.
    """
    code = main()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _printable(*streams) -> None:
    """Print a name that is not UTF-8 (a file name is bytes) with ``\\xNN`` escapes, never fail."""
    for stream in streams:
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def _count(n, noun) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _one_line(exc) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    command()
