"""``numpyvae inspect``: the verdict sees wiring bugs, and ``--tiny`` reaches every node type.

Wiring bugs live in a model's own ``loss_and_grads`` (a wrong slice of the
CVAE's code, the label joined on the wrong side, the KL's gradient not
divided by the batch, the Bernoulli gradient's sign, beta left out): every
node of the trace is right, but the model's gradients are not the trace's.
Each is planted here by monkeypatching, and the verdict must fail and name
the parameter that differs most. Then bugs in node types that the old tiny
model did not have (tanh, sigmoid, softplus, leaky ReLU, the Gaussian
likelihoods) must be caught by ``inspect --tiny`` alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from numpyvae import ops as reference
from numpyvae.app.cli import main
from numpyvae.cvae import CVAE
from numpyvae.inspector.coverage import NODE_TYPES, not_covered, tiny_model_for, tiny_models
from numpyvae.inspector.trace import MODEL_TOLERANCE, inspect
from numpyvae.model import VAE, LossResult


def _trace(**options):
    title, model, x, labels, beta = tiny_model_for(backend="numpy", **options)
    return inspect(model, x, beta=beta, labels=labels)


def test_the_verdict_passes_correct_models_of_every_kind():
    for title, model, x, labels, beta in tiny_models(backend="numpy"):
        trace = inspect(model, x, beta=beta, labels=labels)
        assert trace.passed and not trace.model_failed, title + "\n" + trace.table()
        assert max(trace.model_errors.values()) < MODEL_TOLERANCE["float64"]


def _vae_loss(kl_weight, beta_in_loss=True):
    """VAE.loss_and_grads with the KL's upstream gradient given by ``kl_weight(beta, B)``."""

    def loss_and_grads(self, x, eps=None, beta=1.0, rng=None):
        x = self.check_input(x)
        B = x.shape[0]
        eps = self._noise(B, eps, rng)
        self.zero_grad()
        h = self.encoder.forward(x)
        z, kl = self.posterior.forward(h, eps)
        out = self.decoder.forward(z)
        nll, dout = self.likelihood.nll_and_grad(out, x, scale=1.0 / B)
        dz = self.decoder.backward(dout)
        dh = self.posterior.backward(dz, kl_weight=kl_weight(beta, B))
        self.encoder.backward(dh)
        recon, kl_term = float(nll.mean()), self.posterior.kl_objective(kl)
        return LossResult(recon + beta * kl_term, recon, float(kl.mean()), self.grads)

    return loss_and_grads


@pytest.mark.parametrize("what, kl_weight, beta", [
    ("the KL's gradient not divided by the batch", lambda beta, B: beta, 1.0),
    ("beta left out of the KL's gradient", lambda beta, B: 1.0 / B, 0.5),
])
def test_a_wiring_bug_in_the_vae_fails_the_verdict(monkeypatch, capsys, what, kl_weight, beta):
    monkeypatch.setattr(VAE, "loss_and_grads", _vae_loss(kl_weight))
    trace = _trace(beta=beta)
    assert not trace.failed, what  # every node is right ...
    assert not trace.passed, what  # ... and the model is not
    assert trace.model_failed[0].startswith("encoder."), trace.model_errors
    assert "WRONG: the model's own gradients differ" in trace.table()
    assert main(["inspect", "--tiny", "--backend", "numpy", "--beta", str(beta)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 of 1 models" in out and f"({trace.model_failed[0]})" in out


def test_the_bernoulli_gradients_sign_in_the_model(monkeypatch):
    real = reference.bernoulli_nll_and_grad

    def wrong_sign(logits, x, scale, nll=None, dlogits=None):
        nll, dlogits = real(logits, x, scale)
        return nll, -dlogits

    monkeypatch.setattr(reference, "bernoulli_nll_and_grad", wrong_sign)
    trace = _trace()
    assert not trace.failed and not trace.passed
    assert max(trace.model_errors.values()) > 0.1
    assert trace.model_failed[0] in {k for k in trace.model_errors if k.startswith("decoder")}


def _cvae_loss(slice_of_code):
    def loss_and_grads(self, x, labels=None, eps=None, beta=1.0, rng=None):
        x = self.check_input(x)
        labels = self._labels(labels)
        B, L = x.shape[0], self.latent_dim
        eps = self._noise(B, eps, rng)
        self.zero_grad()
        h = self.encoder.forward(self.encoder_input(x, labels))
        z, kl = self.posterior.forward(h, eps)
        out = self.decoder.forward(self.decoder_input(z, labels))
        nll, dout = self.likelihood.nll_and_grad(out, x, scale=1.0 / B)
        dzy = self.decoder.backward(dout)
        dz = np.ascontiguousarray(slice_of_code(dzy, L))
        dh = self.posterior.backward(dz, kl_weight=beta / B)
        self.encoder.backward(dh)
        recon, kl_term = float(nll.mean()), self.posterior.kl_objective(kl)
        return LossResult(recon + beta * kl_term, recon, float(kl.mean()), self.grads)

    return loss_and_grads


def test_a_wrong_slice_of_the_cvaes_code_fails_the_verdict(monkeypatch):
    monkeypatch.setattr(CVAE, "loss_and_grads", _cvae_loss(lambda dzy, L: dzy[:, -L:]))
    trace = _trace(conditional=True)
    assert not trace.failed and not trace.passed
    assert trace.model_failed[0].startswith("encoder.")
    assert not any(k.startswith("decoder.") for k in trace.model_failed)


def test_the_label_joined_on_the_wrong_side_fails_the_verdict(monkeypatch):
    def label_first(self, z, labels):
        return np.concatenate([self.one_hot(labels, z.shape[0]), z], axis=1)

    monkeypatch.setattr(CVAE, "decoder_input", label_first)
    trace = _trace(conditional=True)
    assert not trace.failed and not trace.passed
    assert max(trace.model_errors.values()) > 1e-3


def test_a_float32_models_rounding_is_not_a_wiring_bug():
    model = VAE(6, hidden_dims=(5,), latent_dim=3, dtype="float32", seed=0, backend="numpy")
    trace = inspect(model, np.random.default_rng(1).random((4, 6)).astype(np.float32))
    assert trace.passed, trace.table()
    assert 0 < max(trace.model_errors.values()) < MODEL_TOLERANCE["float32"]


# --------------------------------------------------------------------------
# --tiny: every node type, or the model asked for
# --------------------------------------------------------------------------


def test_tiny_alone_covers_every_node_type(capsys):
    assert main(["inspect", "--tiny", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "every node type of the library was covered" in out
    assert out.count("== ") == len(tiny_models(backend="numpy"))


def test_tiny_with_options_builds_that_model_and_says_what_it_left_out(capsys):
    assert main(["inspect", "--tiny", "--backend", "numpy", "--activation", "tanh",
                 "--likelihood", "gaussian", "--gaussian-var", "learned", "--beta", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Linear(tanh)" in out and "GaussianLearnedVariance" in out
    assert "loss" in out and "(beta 0.5)" in out
    missing = out.split("node types not covered by this run: ")[1].splitlines()[0].split(", ")
    assert "Linear(tanh)" not in missing and "beta != 1" not in missing
    assert {"Linear(relu)", "Conv2d", "Bernoulli", "ConcatLabel"} <= set(missing)
    trace = _trace(arch="conv", conditional=True)
    assert {"Conv2d", "ConvTranspose2d", "LabelChannels", "ConcatLabel"} <= set(
        n.kind for n in trace.nodes.values())
    assert set(not_covered([trace])) < set(NODE_TYPES)


def test_tiny_options_are_checked():
    assert main(["inspect", "--tiny", "--arch", "conv", "--activation", "tanh"]) == 2
    assert main(["inspect", "some-run", "--activation", "tanh"]) == 2


@pytest.mark.parametrize("activation, wrong", [
    ("tanh", lambda dy, y: dy * (1 - y)),               # 1 - y for 1 - y^2
    ("sigmoid", lambda dy, y: dy * y),                  # y for y (1 - y)
    ("softplus", lambda dy, y: dy * np.exp(-y)),        # e^-y for 1 - e^-y
    ("leaky_relu", lambda dy, y: dy * (y > 0)),         # the negative slope dropped
])
def test_tiny_alone_catches_a_bug_in_each_activation(monkeypatch, capsys, activation, wrong):
    real = reference.activation_backward

    def planted(dy, y, act, alpha=0.01, dx=None):
        return wrong(dy, y) if act == activation else real(dy, y, act, alpha)

    monkeypatch.setattr(reference, "activation_backward", planted)
    assert main(["inspect", "--tiny", "--backend", "numpy"]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if "WRONG" in line and "node" not in line]
    kinds = {line.split()[1] for line in failing}
    kind = {"leaky_relu": "LeakyReLU", "tanh": "Tanh", "sigmoid": "Sigmoid",
            "softplus": "Softplus"}[activation]
    assert kinds & {f"Linear({activation})", kind}, out


def test_tiny_alone_catches_a_bug_in_the_gaussian_likelihood(monkeypatch, capsys):
    real = reference.gaussian_nll_backward

    def dropped_half(dnll, mean, logvar, x, dmean=None):
        dmean, dlogvar = real(dnll, mean, logvar, x)
        return dmean, 2 * dlogvar

    monkeypatch.setattr(reference, "gaussian_nll_backward", dropped_half)
    assert main(["inspect", "--tiny", "--backend", "numpy"]) == 1
    out = capsys.readouterr().out
    assert "1 node(s) failed: likelihood" in out
