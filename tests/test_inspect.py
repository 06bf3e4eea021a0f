"""The step-through inspector: every node recorded and checked, and planted bugs found.

Clean runs must pass at every node, on both backends and every model kind (the
conv and conditional models are in ``test_inspect_models.py``); each
bug of the catalogue must fail the check of exactly the node it was planted in
(and no other), by a clear margin; and planting a bug must change nothing outside
that one trace.
"""

from __future__ import annotations

import numpy as np
import pytest

import numpyvae
from numpyvae.app.cli import main
from numpyvae.inspector.catalogue import BUGS, plant
from numpyvae.inspector.trace import (
    TOLERANCE,
    Trace,
    check_vjp,
    formula_of,
    inspect,
    tiny_conditional_model,
    tiny_model,
)
from numpyvae.layers import Linear, ReLU, Sequential, Tanh


def _vae(backend, likelihood="bernoulli", **kw):
    return numpyvae.VAE(6, hidden_dims=(5,), latent_dim=3, likelihood=likelihood,
                        dtype="float64", seed=0, backend=backend, **kw)


def _batch(rows=4, cols=6, seed=1):
    return np.random.default_rng(seed).random((rows, cols))


EXPECTED_NODES = ["encoder.0", "encoder.1", "posterior.split", "posterior.reparameterize",
                  "posterior.kl", "decoder.0", "decoder.1", "likelihood", "loss"]


def test_trace_records_every_node_in_order(backend_name):
    model, x = tiny_model(backend=backend_name)
    trace = inspect(model, x, beta=0.5)
    assert list(trace) == EXPECTED_NODES
    dec = trace["decoder.0"]
    assert dec.x.shape == (4, 3) and dec.out.shape == (4, 5)
    assert dec.dout.shape == dec.out.shape and dec.dx.shape == dec.x.shape
    assert set(dec.dparams) == {"W", "b"}
    split = trace["posterior.split"]
    assert set(split.outputs) == {"mu", "logvar"}
    # mu feeds the reparameterization and the KL: its upstream gradient is the sum.
    total = (trace["posterior.reparameterize"].dinputs["mu"]
             + trace["posterior.kl"].dinputs["mu"])
    np.testing.assert_allclose(split.douts["mu"], total, rtol=0, atol=1e-15)
    # The loss node's output is the model's loss.
    result = model.loss_and_grads(x, eps=np.random.default_rng(0).standard_normal((4, 3)),
                                  beta=0.5)
    assert trace.loss == pytest.approx(result.loss, rel=1e-12)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_clean_run_passes_everywhere_and_matches_the_model(backend_name, likelihood, beta):
    model = _vae(backend_name, likelihood)
    x = _batch()
    trace = inspect(model, x, beta=beta, seed=3)
    assert trace.passed, trace.table()
    for node in trace.values():
        assert node.check.max_error < 1e-7, (node.name, node.check.errors)
    # The trace's gradient of every parameter is the model's own.
    assert set(trace.model_errors) == set(model.params)
    assert max(trace.model_errors.values()) < 1e-10


def test_learned_variance_and_free_bits_pass(backend_name):
    model = _vae(backend_name, "gaussian", gaussian_var="learned", free_bits=0.01)
    trace = inspect(model, _batch(), beta=1.0)
    assert trace.passed, trace.table()
    assert trace["likelihood"].dparams, "the learned log-variance has a gradient"
    assert set(trace.model_errors) == set(model.params)
    assert max(trace.model_errors.values()) < 1e-10


def test_autoencoder_has_no_posterior_nodes(backend_name):
    model = numpyvae.Autoencoder(6, hidden_dims=(5,), latent_dim=3, dtype="float64",
                                 backend=backend_name)
    trace = inspect(model, _batch())
    assert not any(name.startswith("posterior") for name in trace)
    assert trace.passed, trace.table()
    assert max(trace.model_errors.values()) < 1e-10


def _custom_model(backend_name, encoder_layers, decoder_layers):
    """A VAE from any encoder and decoder networks."""
    return numpyvae.VAE(Sequential(*encoder_layers), Sequential(*decoder_layers), latent_dim=3,
                        backend=backend_name)


def test_any_network_of_layers_works_unchanged(backend_name):
    """Separate activation layers and nested Sequentials need nothing new."""
    rng = np.random.default_rng(0)
    kw = dict(rng=rng, dtype="float64", backend=backend_name)
    model = _custom_model(
        backend_name,
        [Linear(6, 5, **kw), ReLU(backend=backend_name),
         Sequential(Linear(5, 4, **kw), Tanh(backend=backend_name)), Linear(4, 6, **kw)],
        [Linear(3, 5, **kw), ReLU(backend=backend_name), Linear(5, 6, **kw)])
    trace = inspect(model, _batch())
    assert max(trace.model_errors.values()) < 1e-10
    assert "encoder.2.1" in trace and trace["encoder.2.1"].kind == "Tanh"
    assert trace.passed, trace.table()


def test_image_shaped_data_through_flatten_and_reshape(backend_name):
    from numpyvae.layers import Flatten, Reshape

    rng = np.random.default_rng(0)
    kw = dict(rng=rng, dtype="float64", backend=backend_name)
    model = _custom_model(backend_name,
                          [Flatten(backend=backend_name), Linear(6, 5, "relu", **kw),
                           Linear(5, 6, **kw)],
                          [Linear(3, 6, **kw), Reshape(1, 2, 3, backend=backend_name)])
    x = np.random.default_rng(1).random((4, 1, 2, 3))
    trace = inspect(model, x)
    assert trace["encoder.0"].kind == "Flatten" and trace["encoder.0"].out.shape == (4, 6)
    assert trace["decoder.1"].out.shape == (4, 1, 2, 3)
    assert trace.passed, trace.table()
    assert max(trace.model_errors.values()) < 1e-10


def test_float32_model_is_inspected_in_float64_and_left_untouched(backend_name):
    model = numpyvae.VAE(6, hidden_dims=(5,), latent_dim=3, dtype="float32", seed=0,
                         backend=backend_name)
    before = {k: v.copy() for k, v in model.params.items()}
    grads_before = {k: v.copy() for k, v in model.grads.items()}
    trace = inspect(model, _batch().astype(np.float32))
    assert trace.passed, trace.table()
    assert all(n.out.dtype == np.float64 for n in trace.values())
    assert max(trace.model_errors.values()) < 1e-4  # the model's own float32 gradients
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], before[k])
        np.testing.assert_array_equal(model.grads[k], grads_before[k])


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_each_planted_bug_fails_exactly_its_node(backend_name, bug):
    rng = np.random.default_rng(0)
    kw = dict(rng=rng, dtype="float64", backend=backend_name)
    if bug == "relu-inverted-mask":  # needs a separate ReLU layer
        model = _custom_model(
            backend_name, [Linear(6, 5, **kw), ReLU(backend=backend_name), Linear(5, 6, **kw)],
            [Linear(3, 5, **kw), Linear(5, 6, **kw)])
    else:
        model = _vae(backend_name)
    x, given = _batch(), {}
    if bug == "concat-wrong-slice":  # a conditional model's node
        model, x, labels = tiny_conditional_model(backend=backend_name)
        given = {"labels": labels}
    trace = inspect(model, x, bug=bug, **given)
    planted = [n.name for n in trace.values() if n.bug]
    assert len(planted) == 1
    assert trace.failed == planted, trace.table()
    assert trace[planted[0]].check.max_error > 1e-3, trace.table()
    # The bug lived in that trace only: a clean run afterwards passes everywhere.
    assert inspect(model, x, **given).passed


def test_bug_can_be_placed_in_a_chosen_node():
    model, x = tiny_model(backend="numpy")
    trace = inspect(model, x, bug="missing-bias-grad", bug_node="decoder.1")
    assert trace.failed == ["decoder.1"]
    assert trace["decoder.1"].check.worst == "b"
    with pytest.raises(ValueError, match="fits"):
        inspect(model, x, bug="missing-bias-grad", bug_node="posterior.kl")
    with pytest.raises(ValueError, match="catalogue"):
        inspect(model, x, bug="no-such-bug")


def test_planting_does_not_touch_the_library(backend_name):
    """The op classes, the backend and the model keep their correct backward."""
    from numpyvae.backend import get_backend

    be = get_backend(backend_name)
    before = (be.reparameterize_backward, be.gaussian_kl_backward, Linear.backward)
    model, x = tiny_model(backend=backend_name)
    inspect(model, x, bug="reparam-dropped-half")
    inspect(model, x, bug="transposed-weight-grad")
    assert (be.reparameterize_backward, be.gaussian_kl_backward, Linear.backward) == before
    result = model.loss_and_grads(x, eps=np.zeros((4, 3)))
    ref = tiny_model(backend=backend_name)[0].loss_and_grads(x, eps=np.zeros((4, 3)))
    for k in model.params:
        np.testing.assert_array_equal(result.grads[k], ref.grads[k])


def test_directional_check_catches_a_wrong_large_gradient():
    model = numpyvae.VAE(40, hidden_dims=(30,), latent_dim=4, dtype="float64", seed=0,
                         backend="numpy")
    x = _batch(3, 40)
    graph_trace = inspect(model, x, bug="transposed-weight-grad", bug_node="encoder.0")
    assert graph_trace.failed == ["encoder.0"]
    from numpyvae.inspector.trace import build_graph

    op = build_graph(model)[0][1]
    small = check_vjp(op, {"x": x}, np.random.default_rng(0), full_limit=10)
    assert small.methods["W"] == "3 directions" and small.passed
    wrong = plant(build_graph(model), "transposed-weight-grad", "encoder.0")[0][0][1]
    caught = check_vjp(wrong, {"x": x}, np.random.default_rng(0), full_limit=10)
    assert not caught.passed and caught.worst == "W"


def test_table_and_formulas():
    model, x = tiny_model(backend="numpy")
    text = inspect(model, x).table()
    for name in EXPECTED_NODES:
        assert name in text
    assert "every node's backward agrees" in text
    assert "z = mu + exp(logvar/2) * eps" in text
    # Formulas come from the docstrings' math.
    assert "dW" in formula_of(Linear)
    bad = inspect(model, x, bug="kl-dropped-half").table()
    assert "WRONG" in bad and "posterior.kl" in bad.split("WRONG")[0].splitlines()[-1]


def test_plot_draws_the_graph(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model, x = tiny_model(backend="numpy")
    trace = inspect(model, x, bug="bernoulli-sign")
    fig = trace.plot()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("likelihood" in t and "bug" in t for t in texts)
    assert any("|g|=" in t for t in texts)
    fig.savefig(tmp_path / "graph.png")
    assert (tmp_path / "graph.png").stat().st_size > 10_000


def test_trace_is_a_mapping_with_helpful_errors():
    model, x = tiny_model(backend="numpy")
    trace = inspect(model, x)
    assert isinstance(trace, Trace) and len(trace) == len(EXPECTED_NODES)
    with pytest.raises(KeyError, match="the nodes are"):
        trace["decoder.7"]
    assert TOLERANCE <= 1e-6
    with pytest.raises(ValueError, match="eps"):
        inspect(model, x, eps=np.zeros((2, 3)))


def test_cli_tiny(capsys):
    assert main(["inspect", "--tiny", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "posterior.reparameterize" in out and "every node's backward agrees" in out


def test_cli_tiny_with_a_bug_points_at_the_node(capsys, tmp_path):
    fig = tmp_path / "g.png"
    code = main(["inspect", "--tiny", "--backend", "numpy", "--bug", "reparam-dropped-half",
                 "--figure", str(fig)])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 node(s) failed: posterior.reparameterize" in out
    assert fig.stat().st_size > 10_000


def test_cli_errors_are_one_line(capsys):
    assert main(["inspect"]) == 2
    assert "either a run folder or --tiny" in capsys.readouterr().err
    assert main(["inspect", "--tiny", "--bug", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown bug" in err and len(err.strip().splitlines()) == 1
    assert main(["inspect", "--list-bugs"]) == 0
    assert "reparam-dropped-half" in capsys.readouterr().out


def test_cli_run_dir(tmp_path, capsys):
    """A trained run, on a few of its test images."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", "--hidden", "16",
                 "--latent-dim", "2", "--quiet", "--backend", "numpy"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(run), "-n", "3", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "encoder.0" in out and "(3,784)" in out.replace(" ", "")


def test_the_package_attribute_is_callable_as_the_issue_spells_it(backend_name):
    # numpyvae.inspect(model, x) and numpyvae.inspector.trace.Trace: one name, both uses.
    model = _vae(backend_name)
    x = _batch()
    trace = numpyvae.inspect(model, x, beta=0.5)
    assert isinstance(trace, numpyvae.inspector.trace.Trace)
    same = inspect(model, x, beta=0.5)
    np.testing.assert_array_equal(trace["decoder.0"].dout, same["decoder.0"].dout)
