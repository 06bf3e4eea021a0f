"""The inspector on every model the library builds: conv, conditional (MLP and conv), IWAE runs.

For each model every node's check must pass and the trace must be the
model's computation: the same loss, and the same gradient of every parameter,
as ``loss_and_grads`` with the same noise (and labels). A conditional model
adds two nodes, the label joined to ``x`` and to ``z``, whose backward is the
split that drops the label's part. Planted bugs must fail exactly the node
they were planted in, in these models too.
"""

from __future__ import annotations

import numpy as np
import pytest

import numpyvae
from numpyvae.app.cli import main
from numpyvae.app.run import inspect_run
from numpyvae.conv import Conv2d, ConvTranspose2d
from numpyvae.convnet import conv_vae
from numpyvae.cvae import CVAE, one_hot
from numpyvae.inspector.trace import inspect, tiny_conditional_model
from numpyvae.layers import Flatten, Linear, Reshape, Sequential

H = W = 8          # small images: H and W divisible by 4
CHANNELS = (2, 3)
L, C, B = 3, 2, 3  # latent size, classes, batch

CVAE_NODES = ["condition.x", "encoder.0", "encoder.1", "posterior.split",
              "posterior.reparameterize", "posterior.kl", "condition.z", "decoder.0",
              "decoder.1", "likelihood", "loss"]


def _images(rows=B, seed=1):
    return np.random.default_rng(seed).random((rows, 1, H, W))


def _eps(rows=B, seed=2):
    return np.random.default_rng(seed).standard_normal((rows, L))


def _labels(rows=B):
    return np.arange(rows) % C


def _mlp_cvae(backend, likelihood="bernoulli", **kw):
    return CVAE(6, num_classes=C, hidden_dims=(5,), latent_dim=L, likelihood=likelihood,
                dtype="float64", seed=0, backend=backend, **kw)


def _conv_cvae(backend, seed=0):
    """The conv VAE's networks with room for the label: 1 + C input channels, L + C code inputs.

    The encoder sees the one-hot label as C constant channels, the decoder
    as C more inputs of its first ``Linear`` (see :mod:`numpyvae.cvae`).
    """
    c1, c2 = CHANNELS
    n_flat = c2 * (H // 4) * (W // 4)
    kw = dict(rng=np.random.default_rng(seed), dtype="float64", backend=backend)
    encoder = Sequential(Conv2d(1 + C, c1, 4, 2, 1, activation="relu", **kw),
                         Conv2d(c1, c2, 4, 2, 1, activation="relu", **kw),
                         Flatten(backend=backend), Linear(n_flat, 2 * L, **kw))
    decoder = Sequential(Linear(L + C, n_flat, "relu", **kw),
                         Reshape(c2, H // 4, W // 4, backend=backend),
                         ConvTranspose2d(c2, c1, 4, 2, 1, activation="relu", **kw),
                         ConvTranspose2d(c1, 1, 4, 2, 1, **kw))
    return CVAE(encoder, decoder, num_classes=C, latent_dim=L, input_shape=(1, H, W),
                seed=seed, backend=backend)


def _assert_is_the_model(trace, model, x, eps, beta=1.0, labels=None):
    """Every check passes; the loss and every parameter's gradient are the model's own."""
    assert trace.passed, trace.table()
    for node in trace.values():
        assert node.check.max_error < 1e-7, (node.name, node.check.errors)
    given = {} if labels is None else {"labels": labels}
    result = model.loss_and_grads(x, eps=eps, beta=beta, **given)
    assert trace.loss == pytest.approx(result.loss, rel=1e-12)
    assert trace.model_loss == pytest.approx(result.loss, rel=1e-12)
    assert set(trace.model_errors) == set(model.params)
    assert max(trace.model_errors.values()) < 1e-10


# --------------------------------------------------------------------------
# Convolutional models
# --------------------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True], ids=["images", "rows"])
def test_conv_vae_every_node_passes_and_is_the_model(backend_name, flat):
    model = conv_vae((H, W), L, CHANNELS, dtype="float64", backend=backend_name, flat=flat)
    x = _images()
    if flat:  # what the command line trains: rows of pixels, reshaped inside
        x = x.reshape(B, H * W)
    trace = inspect(model, x, eps=_eps(), beta=0.7)
    _assert_is_the_model(trace, model, x, _eps(), beta=0.7)
    kinds = [node.kind for node in trace.values()]
    assert kinds.count("Conv2d") == 2 and kinds.count("ConvTranspose2d") == 2
    conv = trace["encoder.1" if flat else "encoder.0"]
    assert conv.x.shape == (B, 1, H, W) and conv.out.shape == (B, CHANNELS[0], H // 2, W // 2)
    assert set(conv.dparams) == {"W", "b"}
    assert trace["likelihood"].x.shape == x.shape


def test_conv_autoencoder_every_node_passes_and_is_the_model(backend_name):
    model = conv_vae((H, W), L, CHANNELS, dtype="float64", backend=backend_name,
                     autoencoder=True)
    assert isinstance(model, numpyvae.Autoencoder)
    x = _images()
    trace = inspect(model, x)
    assert not any(name.startswith("posterior") for name in trace)
    assert trace["encoder.3"].out.shape == (B, L)  # the code itself, no [mu | logvar]
    _assert_is_the_model(trace, model, x, None)


@pytest.mark.parametrize("bug, node", [
    ("transposed-weight-grad", "encoder.0"),      # Conv2d
    ("missing-bias-grad", "decoder.2"),            # ConvTranspose2d
    ("bias-grad-mean", "decoder.3"),
    ("reparam-exp-logvar-as-sigma", "posterior.reparameterize"),
])
def test_a_bug_planted_in_a_conv_model_fails_exactly_its_node(backend_name, bug, node):
    model = conv_vae((H, W), L, CHANNELS, dtype="float64", backend=backend_name)
    x = _images()
    trace = inspect(model, x, bug=bug, bug_node=node)
    assert trace.failed == [node], trace.table()
    assert trace[node].bug == bug and trace[node].check.max_error > 1e-3
    assert inspect(model, x).passed  # the bug lived in that trace only


# --------------------------------------------------------------------------
# Conditional models
# --------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood, options", [
    ("bernoulli", {}),
    ("gaussian", {"gaussian_var": "learned", "free_bits": 0.01}),
], ids=["bernoulli", "gaussian-learned-free-bits"])
def test_mlp_cvae_every_node_passes_and_is_the_model(backend_name, likelihood, options):
    model = _mlp_cvae(backend_name, likelihood, **options)
    x, labels, eps = np.random.default_rng(1).random((B, 6)), _labels(), _eps()
    trace = numpyvae.inspect(model, x, labels=labels, eps=eps, beta=0.5)
    assert list(trace) == CVAE_NODES
    _assert_is_the_model(trace, model, x, eps, beta=0.5, labels=labels)
    np.testing.assert_array_equal(trace.labels, labels)


def test_the_label_nodes_are_the_models_concatenations_and_their_split(backend_name):
    model = _mlp_cvae(backend_name)
    x, labels, eps = np.random.default_rng(1).random((B, 6)), _labels(), _eps()
    trace = inspect(model, x, eps=eps, labels=labels)
    y = one_hot(labels, C)

    cx = trace["condition.x"]
    assert cx.kind == "ConcatLabel" and set(cx.inputs) == {"x", "y"}
    np.testing.assert_array_equal(cx.out, model.encoder_input(x, labels))
    np.testing.assert_array_equal(cx.dx, trace["encoder.0"].dx[:, :6])
    assert set(cx.dinputs) == {"x"}, "the label is data: it gets no gradient"

    cz = trace["condition.z"]
    z = trace["posterior.reparameterize"].out
    np.testing.assert_array_equal(cz.out, np.concatenate([z, y], axis=1))
    assert cz.wiring["z"] == ("posterior.reparameterize", "z")
    # The split: dz is the first L columns of d[z | e_y]; the label's C columns are dropped.
    np.testing.assert_array_equal(cz.dout, trace["decoder.0"].dx)
    np.testing.assert_array_equal(cz.dinputs["z"], cz.dout[:, :L])
    np.testing.assert_array_equal(trace["posterior.reparameterize"].dout, cz.dinputs["z"])
    assert "dz = dout[:, :3]" in cz.summary


def test_conv_cvae_joins_the_label_as_channels_and_is_the_model(backend_name):
    model = _conv_cvae(backend_name)
    x, labels, eps = _images(), _labels(), _eps()
    trace = inspect(model, x, eps=eps, labels=labels)
    cx = trace["condition.x"]
    assert cx.out.shape == (B, 1 + C, H, W)
    np.testing.assert_array_equal(cx.out, model.encoder_input(x, labels))
    for b, label in enumerate(labels):  # channel 1 + c is constant, 1 where c is the label
        np.testing.assert_array_equal(cx.out[b, 1:], np.broadcast_to(
            np.eye(C)[label][:, None, None], (C, H, W)))
    assert cx.dx.shape == x.shape and "channels" in cx.summary
    assert trace["condition.z"].out.shape == (B, L + C)
    assert trace["encoder.0"].kind == "Conv2d"
    _assert_is_the_model(trace, model, x, eps, labels=labels)


def test_labels_are_required_and_checked():
    model = _mlp_cvae("numpy")
    x = np.random.default_rng(1).random((4, 6))
    with pytest.raises(ValueError, match=r"conditional; pass labels=.*4 examples"):
        inspect(model, x)
    with pytest.raises(ValueError, match=r"expected 4 labels \(one per example of x\), got "
                                         r"shape \(3,\)"):
        inspect(model, x, labels=[0, 1, 1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got values from 0 to 5"):
        inspect(model, x, labels=[0, 1, 5, 0])
    with pytest.raises(ValueError, match="class indices"):
        inspect(model, x, labels=[0, 0.5, 1, 1])
    vae = numpyvae.VAE(6, hidden_dims=(5,), latent_dim=L, dtype="float64", backend="numpy")
    with pytest.raises(ValueError, match="labels are for a conditional model"):
        inspect(vae, x, labels=[0, 1, 1, 0])
    # One int labels every row, as in the CVAE's own methods.
    one = inspect(model, x, labels=1)
    np.testing.assert_array_equal(one.labels, [1, 1, 1, 1])
    assert one.loss == inspect(model, x, labels=[1, 1, 1, 1]).loss


CVAE_BUGS = [  # (bug, node, model): every catalogue entry that fits a conditional model
    ("reparam-dropped-half", "posterior.reparameterize", "mlp"),
    ("kl-mu-sign", "posterior.kl", "mlp"),
    ("transposed-weight-grad", "encoder.0", "mlp"),
    ("missing-bias-grad", "decoder.1", "mlp"),
    ("missing-activation-derivative", "decoder.0", "mlp"),
    ("bernoulli-sign", "likelihood", "mlp"),
    ("loss-missing-batch-mean", "loss", "mlp"),
    ("concat-wrong-slice", "condition.z", "mlp"),
    ("concat-wrong-slice", "condition.x", "mlp"),
    ("concat-wrong-slice", "condition.x", "conv"),
    ("concat-wrong-slice", "condition.z", "conv"),
    ("transposed-weight-grad", "encoder.0", "conv"),
]


@pytest.mark.parametrize("bug, node, kind", CVAE_BUGS)
def test_a_bug_planted_in_a_cvae_fails_exactly_its_node(backend_name, bug, node, kind):
    if kind == "mlp":
        model, x, labels = tiny_conditional_model(backend=backend_name)
    else:
        model, x, labels = _conv_cvae(backend_name), _images(), _labels()
    trace = inspect(model, x, labels=labels, bug=bug, bug_node=node)
    assert trace.failed == [node], trace.table()
    assert trace[node].check.max_error > 1e-3, trace.table()
    assert inspect(model, x, labels=labels).passed


def test_the_wrong_slice_reaches_the_posterior_but_only_its_node_fails():
    """dz read from the wrong columns flows on into the encoder, whose checks still pass."""
    model, x, labels = tiny_conditional_model(backend="numpy")
    clean = inspect(model, x, labels=labels)
    bad = inspect(model, x, labels=labels, bug="concat-wrong-slice", bug_node="condition.z")
    dzy = bad["condition.z"].dout
    np.testing.assert_array_equal(bad["condition.z"].dinputs["z"], dzy[:, -L:])
    assert not np.allclose(bad["encoder.0"].dparams["W"], clean["encoder.0"].dparams["W"])
    assert max(bad.model_errors.values()) > 1e-3  # and the trace no longer is the model
    assert bad.failed == ["condition.z"]
    with pytest.raises(ValueError, match="fits no node"):
        inspect(numpyvae.VAE(6, hidden_dims=(5,), latent_dim=L, backend="numpy"),
                x, bug="concat-wrong-slice")


def test_cvae_table_and_graph_show_the_label_nodes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model, x, labels = tiny_conditional_model(backend="numpy")
    trace = inspect(model, x, labels=labels, bug="concat-wrong-slice", bug_node="condition.z")
    text = trace.table()
    assert "condition.x" in text and "ConcatLabel" in text
    assert "out = [x | e_y] (2 label columns);  dx = dout[:, :6]" in text
    assert "out = [z | e_y] (2 label columns);  dz = dout[:, :3]" in text
    assert "1 node(s) failed: condition.z" in text
    fig = trace.plot()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "data x, y" in texts
    assert any(t.startswith("condition.x: ConcatLabel") for t in texts)
    assert any(t.startswith("condition.z") and "bug: concat-wrong-slice" in t for t in texts)
    fig.savefig(tmp_path / "graph.png")
    assert (tmp_path / "graph.png").stat().st_size > 10_000


def test_cli_tiny_conditional(capsys):
    assert main(["inspect", "--tiny", "--conditional", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "condition.z" in out and "every node's backward agrees" in out
    assert main(["inspect", "--tiny", "--conditional", "--backend", "numpy",
                 "--bug", "concat-wrong-slice", "--node", "condition.z"]) == 1
    assert "1 node(s) failed: condition.z" in capsys.readouterr().out
    assert main(["inspect", "some-run", "--conditional"]) == 2
    err = capsys.readouterr().err
    assert "--conditional goes with --tiny" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------
# Run folders: conditional runs and runs trained on the importance-weighted bound
# --------------------------------------------------------------------------


def test_a_conditional_run_is_inspected_on_its_test_images_labels(tmp_path):
    """A run trained from Python keeps its labelled test set in the run folder."""
    from numpyvae.app.train import fit

    rng = np.random.default_rng(0)
    x, y = rng.random((40, 6)), rng.integers(0, C, 40)
    model = CVAE(6, num_classes=C, hidden_dims=(5,), latent_dim=L, backend="numpy")
    fit(model, x[:30], x[30:], y_train=y[:30], y_test=y[30:], epochs=1, batch_size=10,
        progress=False, out_dir=tmp_path / "run")
    trace = inspect_run(tmp_path / "run", n=4, seed=5, backend="numpy")
    rows = np.sort(np.random.default_rng(5).choice(10, size=4, replace=False))
    np.testing.assert_array_equal(trace.labels, y[30:][rows])
    np.testing.assert_allclose(trace["condition.x"].x, x[30:][rows], rtol=1e-6)
    np.testing.assert_array_equal(trace["condition.x"].inputs["y"], one_hot(y[30:][rows], C))
    assert trace.passed, trace.table()
    assert max(trace.model_errors.values()) < 1e-4  # the run's float32 model


def test_the_command_trains_and_inspects_a_conditional_run_in_fresh_processes(tmp_path):
    """A new process has not imported the CVAE's module: building and loading must still work."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.random((60, 6)).astype(np.float32), y=rng.integers(0, 3, 60))
    env = {**os.environ, "NUMPYVAE_BACKEND": "numpy"}

    def numpyvae_command(*args):
        return subprocess.run([sys.executable, "-m", "numpyvae", *args], capture_output=True,
                              text=True, timeout=300, env=env)

    run = str(tmp_path / "run")
    trained = numpyvae_command("train", "--data", str(data), "--conditional", "--epochs", "1",
                               "--out", run, "--hidden", "5", "--latent-dim", "2",
                               "--no-figures", "--quiet")
    assert trained.returncode == 0, trained.stderr
    inspected = numpyvae_command("inspect", run, "-n", "3")
    assert inspected.returncode == 0, inspected.stderr
    assert "condition.z" in inspected.stdout
    assert "every node's backward agrees" in inspected.stdout


def test_cli_own_data_conditional_run_whose_file_moved(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.random((60, 6)).astype(np.float32), y=rng.integers(0, 3, 60))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--conditional", "--epochs", "1", "--out",
                 str(run), "--hidden", "5", "--latent-dim", "2", "--no-figures", "--quiet",
                 "--backend", "numpy"]) == 0
    moved = data.rename(tmp_path / "moved.npz")
    capsys.readouterr()
    assert main(["inspect", str(run), "-n", "3", "--backend", "numpy"]) == 2
    assert "--data FILE" in capsys.readouterr().err
    assert main(["inspect", str(run), "-n", "3", "--backend", "numpy", "--data",
                 str(moved)]) == 0
    out = capsys.readouterr().out
    assert "(3,6),(3,3) -> (3,9)" in out  # 6 values and the one-hot label of 3 classes


def test_cli_conditional_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--conditional", "--epochs", "1", "--out", str(run), "--hidden", "16",
                 "--latent-dim", "2", "--batch-size", "256", "--no-figures", "--quiet",
                 "--backend", "numpy"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(run), "-n", "3", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "condition.x" in out and "condition.z" in out
    assert "every node's backward agrees" in out


def test_a_run_trained_on_the_importance_weighted_bound(tmp_path, capsys):
    """The model is a plain VAE: the trace is its ELBO (K = 1), and a note says so."""
    from numpyvae.app.train import fit

    x = np.random.default_rng(0).random((40, 6))
    model = numpyvae.VAE(6, hidden_dims=(5,), latent_dim=L, backend="numpy")
    fit(model, x[:30], x[30:], epochs=1, batch_size=10, iw_train=3, progress=False,
        out_dir=tmp_path / "run")
    trace = inspect_run(tmp_path / "run", n=3, backend="numpy")
    assert trace.passed, trace.table()
    assert "posterior.reparameterize" in trace
    assert any("--iw-train 3" in note for note in trace.notes)
    assert main(["inspect", str(tmp_path / "run"), "-n", "3", "--backend", "numpy"]) == 0
    assert "the trace steps through the same model's ELBO" in capsys.readouterr().out
