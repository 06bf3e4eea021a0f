"""PyTorch autograd as an independent oracle for the loss and every gradient (optional).

The torch model below is written from the description of the VAE, not from
numpyvae's code: ``nn.Linear`` layers (weights copied in, transposed: torch
stores ``(out, in)``), the encoder's last layer of width ``2L`` split into
``mu`` and ``logvar``, ``z = mu + exp(logvar / 2) * eps``, torch's own
``binary_cross_entropy_with_logits`` and ``gaussian_nll_loss``, and the KL in
the form of the original VAE paper's appendix. Everything in float64; loss and
gradients must agree to 1e-10 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from numpyvae import VAE, Autoencoder
from numpyvae.gradcheck import rel_error

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
# One torch thread: these tensors are tiny, and torch's spinning OpenMP workers
# would otherwise starve Numba's parallel kernels in the same process.
torch.set_num_threads(1)

D, HIDDEN, L, B = 12, (8, 6), 3, 5
BETA = 0.6
TOL = 1e-10

TORCH_ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
}


def torch_mlp(model, prefix):
    """An nn.Sequential holding a copy of the numpyvae MLP's weights."""
    n = sum(1 for name in model.params if name.startswith(prefix) and name.endswith(".W"))
    modules, linears = [], []
    for i in range(n):
        W = model.params[f"{prefix}{i}.W"]
        linear = nn.Linear(W.shape[0], W.shape[1], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(model.params[f"{prefix}{i}.b"].copy()))
        modules.append(linear)
        linears.append((i, linear))
        if i < n - 1:
            modules.append(TORCH_ACTIVATIONS[model.activation]())
    return nn.Sequential(*modules), linears


class TorchModel:
    """The same VAE (or autoencoder), built in torch from the numpyvae model's weights."""

    def __init__(self, model):
        self.model = model
        self.encoder, self.enc_linears = torch_mlp(model, "encoder.")
        self.decoder, self.dec_linears = torch_mlp(model, "decoder.")
        self.logvar = None
        if "decoder.logvar" in model.params:
            self.logvar = torch.tensor(model.params["decoder.logvar"], requires_grad=True)

    def nll(self, out, x):
        if self.model.likelihood.name == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(dim=1)
        if self.logvar is None:
            var = torch.full_like(out, self.model.gaussian_var)
        else:
            var = torch.exp(self.logvar).expand_as(out)
        return F.gaussian_nll_loss(out, x, var, full=True, eps=1e-300, reduction="none").sum(1)

    def loss(self, x, eps, beta):
        x = torch.from_numpy(x)
        h = self.encoder(x)
        if self.model.kind == "autoencoder":
            return self.nll(self.decoder(h), x).mean()
        mu, logvar = h[:, :L], h[:, L:]
        z = mu + torch.exp(0.5 * logvar) * torch.from_numpy(eps)
        recon = self.nll(self.decoder(z), x).mean()
        kl_each = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())  # (B, L)
        if self.model.free_bits > 0:
            kl = torch.clamp(kl_each.mean(dim=0), min=self.model.free_bits).sum()
        else:
            kl = kl_each.sum(dim=1).mean()
        return recon + beta * kl

    def grads(self):
        """Gradients under numpyvae's names and layouts."""
        out = {}
        for prefix, linears in (("encoder.", self.enc_linears), ("decoder.", self.dec_linears)):
            for i, linear in linears:
                out[f"{prefix}{i}.W"] = linear.weight.grad.numpy().T
                out[f"{prefix}{i}.b"] = linear.bias.grad.numpy()
        if self.logvar is not None:
            out["decoder.logvar"] = self.logvar.grad.numpy()
        return out


LIKELIHOODS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian-fixed": dict(likelihood="gaussian", gaussian_var=0.2),
    "gaussian-learned": dict(likelihood="gaussian", gaussian_var="learned"),
}


def make(cls, backend_name, likelihood, **kwargs):
    kwargs = {"hidden_dims": HIDDEN, **LIKELIHOODS[likelihood], **kwargs}
    model = cls(D, latent_dim=L, dtype="float64", backend=backend_name, seed=4, **kwargs)
    rng = np.random.default_rng(5)
    if "decoder.logvar" in model.params:
        model.params["decoder.logvar"][...] = rng.uniform(-1.0, 0.5, D)
    if likelihood == "bernoulli":
        x = rng.random((B, D))
    else:
        x = rng.standard_normal((B, D))
    return model, x, rng.standard_normal((B, L))


def assert_matches_torch(model, x, eps, beta=BETA):
    result = model.loss_and_grads(x, eps=eps, beta=beta)
    oracle = TorchModel(model)
    loss = oracle.loss(x, eps, beta)
    loss.backward()
    expected = oracle.grads()

    assert result.loss == pytest.approx(loss.item(), rel=TOL)
    assert expected.keys() == result.grads.keys()
    for name, g in result.grads.items():
        assert expected[name].shape == g.shape, name
        assert np.any(expected[name] != 0), name
        assert rel_error(g, expected[name]) <= TOL, (name, rel_error(g, expected[name]))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", list(TORCH_ACTIVATIONS))
def test_vae_loss_and_every_gradient_match_torch(backend_name, likelihood, activation):
    model, x, eps = make(VAE, backend_name, likelihood, activation=activation)
    assert_matches_torch(model, x, eps)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_autoencoder_loss_and_every_gradient_match_torch(backend_name, likelihood):
    model, x, eps = make(Autoencoder, backend_name, likelihood)
    assert_matches_torch(model, x, eps)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned"])
def test_vae_with_free_bits_matches_torch(backend_name, likelihood):
    model, x, eps = make(VAE, backend_name, likelihood)
    mu, logvar = model.encode(x)
    per_dim = np.sort(np.mean(0.5 * (mu**2 + np.exp(logvar) - 1 - logvar), axis=0))
    free_bits = 0.5 * (per_dim[0] + per_dim[-1])  # some dimensions below, some above
    plain = model.loss_and_grads(x, eps=eps, beta=BETA).loss
    model.free_bits = free_bits
    assert model.loss_and_grads(x, eps=eps, beta=BETA).loss > plain  # the threshold acts
    assert_matches_torch(model, x, eps)


def test_vae_without_hidden_layers_matches_torch(backend_name):
    model, x, eps = make(VAE, backend_name, "gaussian-learned", hidden_dims=())
    assert list(model.params) == ["encoder.0.W", "encoder.0.b", "decoder.0.W", "decoder.0.b",
                                  "decoder.logvar"]
    assert_matches_torch(model, x, eps)


def test_bce_with_logits_matches_torch_at_extreme_logits(backend):
    logits = np.array([[-100.0, -30.0, 0.0, 30.0, 100.0]] * 3)
    x = np.array([[0.0] * 5, [0.3] * 5, [1.0] * 5])
    expected = F.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(x), reduction="none").sum(1).numpy()
    np.testing.assert_allclose(backend.bernoulli_nll(logits, x), expected, rtol=1e-14)
    assert math.isfinite(float(backend.bernoulli_nll(logits, x).sum()))
