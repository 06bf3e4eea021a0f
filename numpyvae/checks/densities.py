"""Loss values against the textbook densities, and every backward path of the loss's terms.

A gradient check compares a backward with its own forward: a loss written
with the wrong density (a fixed variance used as a standard deviation, a
dropped ``log 2 pi``) keeps gradients consistent with the wrong loss and
passes it. So the values are compared here with the densities written out
again, in their plainest textbook form, in float64:

* Bernoulli: :math:`-\\sum_d [x_d \\log p_d + (1-x_d) \\log(1-p_d)]`, :math:`p = 1/(1+e^{-l})`;
* Gaussian: :math:`\\sum_d [\\tfrac12 \\log(2\\pi\\sigma_d^2) + (x_d-m_d)^2 / (2\\sigma_d^2)]`
  with the variance :math:`\\sigma^2` given (fixed) or :math:`e^{\\mathrm{logvar}}` (learned);
* the posterior's sample :math:`z = \\mu + \\sqrt{\\sigma^2}\\,\\varepsilon` and
  :math:`\\mathrm{KL}(\\mathcal N(\\mu,\\sigma^2)\\,\\|\\,\\mathcal N(0,1))
  = \\sum_d [-\\log\\sigma_d + (\\sigma_d^2 + \\mu_d^2)/2 - \\tfrac12]`.

Then every backward of these terms is compared with central differences of
the backend's own forward, with a random upstream gradient: each
likelihood's ``nll_and_grad`` (what the VAE calls) and ``nll_backward``
(what IWAE calls, with per-example weights), the backend's likelihood ops,
the reparameterization and KL ops, and the combined latent op the model calls.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_backend
from ..gradcheck import numerical_vjp
from .compare import Comparison, compare

#: Values: the same density in another arrangement differs by rounding only.
VALUE_TOLERANCE = 1e-12
#: Gradients against central differences (see :mod:`numpyvae.gradcheck`).
GRAD_TOLERANCE = 1e-7


def bernoulli_textbook(logits, x):
    """Per-example Bernoulli NLL, (B, D) -> (B,)."""
    p = 1.0 / (1.0 + np.exp(-logits))
    return -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1)


def gaussian_textbook(mean, var, x):
    """Per-example Gaussian NLL with variance ``var`` (scalar or (D,)), (B, D) -> (B,)."""
    var = np.broadcast_to(np.asarray(var, dtype=np.float64), mean.shape)
    return np.sum(0.5 * np.log(2 * math.pi * var) + (x - mean) ** 2 / (2 * var), axis=1)


def kl_textbook(mu, logvar):
    """Per-example KL(N(mu, sigma^2) || N(0, I)), (B, L) -> (B,)."""
    sigma = np.sqrt(np.exp(logvar))
    return np.sum(-np.log(sigma) + (sigma ** 2 + mu ** 2) / 2 - 0.5, axis=1)


def _likelihoods(backend, rng, D):
    from ..distributions import Bernoulli, Gaussian, GaussianLearnedVariance

    fixed = Gaussian(0.5, backend=backend)
    learned = GaussianLearnedVariance(backend=backend)
    cases = [("Bernoulli", Bernoulli(backend=backend), None),
             ("Gaussian(var=0.5)", fixed, 0.5),
             ("GaussianLearnedVariance", learned, None)]
    for _, lik, _ in cases:
        lik.setup((D,), np.float64)
    learned.params["logvar"][...] = rng.uniform(-1.0, 0.5, D)
    return cases


def _textbook_nll(name, lik, var, out, x):
    if name == "Bernoulli":
        return bernoulli_textbook(out, x)
    if var is None:
        var = np.exp(lik.params["logvar"])
    return gaussian_textbook(out, var, x)


def likelihood_checks(backend=None, seed: int = 0) -> list:
    """Each likelihood's value (every way it is computed) and every one of its backward paths."""
    backend = get_backend(backend)
    rng = np.random.default_rng(seed)
    B, D = 5, 6
    reports = []
    for name, lik, var in _likelihoods(backend, rng, D):
        out = rng.normal(0.0, 1.5, (B, D))
        x = rng.random((B, D))
        expected = _textbook_nll(name, lik, var, out, x)
        values = Comparison(f"{name}: -log p(x|out) against the textbook density",
                            labels=("library", "textbook"))
        values.append(compare("nll", lik.nll(out, x), expected, VALUE_TOLERANCE))
        for g in lik.grads.values():
            g[...] = 0
        nll, _ = lik.nll_and_grad(out, x, 0.2)
        values.append(compare("nll_and_grad: nll", nll, expected, VALUE_TOLERANCE))
        reports.append(values)

        def f(lik=lik, out=out, x=x):
            return lik.nll(out, x)

        grads = Comparison(f"{name}: backward of -log p(x|out), central differences",
                           labels=("analytic", "numeric"))
        scale = 0.2
        for g in lik.grads.values():
            g[...] = 0
        _, dout = lik.nll_and_grad(out, x, scale)
        dout = np.array(dout, dtype=np.float64)
        param_grads = {k: np.array(g, dtype=np.float64) for k, g in lik.grads.items()}
        ones = np.full(B, scale)
        grads.append(compare("nll_and_grad: dout", dout, numerical_vjp(f, out, ones),
                             GRAD_TOLERANCE))
        for k, p in lik.params.items():
            grads.append(compare(f"nll_and_grad: {k}", param_grads[k],
                                 numerical_vjp(f, p, ones), GRAD_TOLERANCE))
        dnll = rng.standard_normal(B)
        for g in lik.grads.values():
            g[...] = 0
        dout = np.array(lik.nll_backward(out, x, dnll), dtype=np.float64)
        grads.append(compare("nll_backward: dout", dout, numerical_vjp(f, out, dnll),
                             GRAD_TOLERANCE))
        for k, p in lik.params.items():
            grads.append(compare(f"nll_backward: {k}", lik.grads[k],
                                 numerical_vjp(f, p, dnll), GRAD_TOLERANCE))
        reports.append(grads)
    reports += likelihood_op_checks(backend, seed)
    return reports


def likelihood_op_checks(backend=None, seed: int = 0) -> list:
    """The backend's likelihood ops themselves: values and backward, with a per-pixel logvar."""
    be = get_backend(backend)
    rng = np.random.default_rng(seed + 1)
    B, D = 5, 6
    logits, mean = rng.normal(0.0, 1.5, (B, D)), rng.normal(0.0, 1.0, (B, D))
    x = rng.random((B, D))
    logvar = rng.uniform(-1.0, 0.5, D)
    dnll = rng.standard_normal(B)
    scale = 0.2
    report = Comparison("the backend's likelihood ops (Bernoulli; Gaussian, one logvar per "
                        "pixel): values against the textbook, gradients against central "
                        "differences", labels=("library", "expected"))
    bern = bernoulli_textbook(logits, x)
    gauss = gaussian_textbook(mean, np.exp(logvar), x)
    report.append(compare("bernoulli_nll", be.bernoulli_nll(logits, x), bern, VALUE_TOLERANCE))
    nll, dlogits = be.bernoulli_nll_and_grad(logits, x, scale)
    report.append(compare("bernoulli_nll_and_grad: nll", nll, bern, VALUE_TOLERANCE))

    def f_bern():
        return be.bernoulli_nll(logits, x)

    report.append(compare("bernoulli_nll_and_grad: dlogits", dlogits,
                          numerical_vjp(f_bern, logits, np.full(B, scale)), GRAD_TOLERANCE))
    report.append(compare("bernoulli_nll_backward", be.bernoulli_nll_backward(dnll, logits, x),
                          numerical_vjp(f_bern, logits, dnll), GRAD_TOLERANCE))
    report.append(compare("gaussian_nll", be.gaussian_nll(mean, logvar, x), gauss,
                          VALUE_TOLERANCE))

    def f_gauss():
        return be.gaussian_nll(mean, logvar, x)

    dmean, dlogvar_each = be.gaussian_nll_backward(dnll, mean, logvar, x)
    report.append(compare("gaussian_nll_backward: dmean", dmean,
                          numerical_vjp(f_gauss, mean, dnll), GRAD_TOLERANCE))
    report.append(compare("gaussian_nll_backward: dlogvar", np.sum(dlogvar_each, axis=0),
                          numerical_vjp(f_gauss, logvar, dnll), GRAD_TOLERANCE))
    dlogvar = np.zeros(D)
    nll, dmean = be.gaussian_nll_and_grad(mean, logvar, x, scale, dlogvar)
    report.append(compare("gaussian_nll_and_grad: nll", nll, gauss, VALUE_TOLERANCE))
    ones = np.full(B, scale)
    report.append(compare("gaussian_nll_and_grad: dmean", dmean,
                          numerical_vjp(f_gauss, mean, ones), GRAD_TOLERANCE))
    report.append(compare("gaussian_nll_and_grad: dlogvar", dlogvar,
                          numerical_vjp(f_gauss, logvar, ones), GRAD_TOLERANCE))
    fixed = np.float64(math.log(0.5))
    report.append(compare("gaussian_nll, fixed variance 0.5",
                          be.gaussian_nll(mean, fixed, x), gaussian_textbook(mean, 0.5, x),
                          VALUE_TOLERANCE))
    return [report]


def latent_checks(backend=None, seed: int = 0) -> list:
    """The sample and KL against the textbook; their backward ops, and the combined op."""
    be = get_backend(backend)
    rng = np.random.default_rng(seed + 2)
    B, L = 5, 3
    mu, logvar = rng.standard_normal((B, L)), rng.uniform(-1.5, 1.0, (B, L))
    eps = rng.standard_normal((B, L))
    h = np.concatenate([mu, logvar], axis=1)
    z_book = mu + np.sqrt(np.exp(logvar)) * eps
    kl_book = kl_textbook(mu, logvar)
    values = Comparison("the posterior: z = mu + sigma eps and the KL against the textbook",
                        labels=("library", "textbook"))
    values.append(compare("reparameterize", be.reparameterize(mu, logvar, eps), z_book,
                          VALUE_TOLERANCE))
    values.append(compare("gaussian_kl", be.gaussian_kl(mu, logvar), kl_book, VALUE_TOLERANCE))
    z, kl = be.latent_forward(h, eps)
    values.append(compare("latent_forward: z", z, z_book, VALUE_TOLERANCE))
    values.append(compare("latent_forward: kl", kl, kl_book, VALUE_TOLERANCE))
    values.append(compare("kl_per_dimension", be.kl_per_dimension(mu, logvar),
                          np.mean([kl_textbook(mu[:, [d]], logvar[:, [d]]) for d in range(L)],
                                  axis=1), VALUE_TOLERANCE))

    dz, dkl = rng.standard_normal((B, L)), rng.standard_normal(B)
    grads = Comparison("the posterior's backward ops, central differences",
                       labels=("analytic", "numeric"))
    dmu, dlogvar = be.reparameterize_backward(dz, logvar, eps)

    def f_z():
        return be.reparameterize(mu, logvar, eps)

    grads.append(compare("reparameterize_backward: dmu", dmu, numerical_vjp(f_z, mu, dz),
                         GRAD_TOLERANCE))
    grads.append(compare("reparameterize_backward: dlogvar", dlogvar,
                         numerical_vjp(f_z, logvar, dz), GRAD_TOLERANCE))
    dmu, dlogvar = be.gaussian_kl_backward(dkl, mu, logvar)

    def f_kl():
        return be.gaussian_kl(mu, logvar)

    grads.append(compare("gaussian_kl_backward: dmu", dmu, numerical_vjp(f_kl, mu, dkl),
                         GRAD_TOLERANCE))
    grads.append(compare("gaussian_kl_backward: dlogvar", dlogvar,
                         numerical_vjp(f_kl, logvar, dkl), GRAD_TOLERANCE))

    def f_latent():
        z, kl = be.latent_forward(h, eps)
        return np.concatenate([np.ravel(z), kl])

    both = np.concatenate([dz.ravel(), dkl])
    grads.append(compare("latent_backward: dh", be.latent_backward(dz, h, eps, dkl),
                         numerical_vjp(f_latent, h, both), GRAD_TOLERANCE))
    return [values, grads]


def density_checks(backend=None, seed: int = 0) -> list:
    """:func:`likelihood_checks` and :func:`latent_checks`."""
    return likelihood_checks(backend, seed) + latent_checks(backend, seed)


__all__ = ["density_checks", "likelihood_checks", "likelihood_op_checks", "latent_checks",
           "bernoulli_textbook", "gaussian_textbook", "kl_textbook"]
