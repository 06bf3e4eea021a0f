"""``numpyvae gradcheck`` finds planted bugs and says where they are.

Each test plants one realistic bug (by monkeypatching: a dropped 1/2,
``exp(logvar)`` used as sigma, ``=`` for ``+=``, a weight gradient laid out
wrong, an off-by-one bias correction, a wrong axis, a sign) and asserts
that the check the tool runs for that code fails on the row that names
the place, while the tool passes without the bug. They run the one
family of checks that covers the bug (each well under a second); the last
runs the whole command once.
"""

from __future__ import annotations

import numpy as np
import pytest

from numpyvae import ops as reference
from numpyvae.app.cli import main
from numpyvae.checks import accumulation, densities, objectives, optimizers
from numpyvae.checks.compare import compare, failures
from numpyvae.gradcheck import check_layer


def failing(reports):
    """``{(report title, row name)}`` of every failing row."""
    return {(report.title, row.name) for report in reports for row in report if not row.passed}


def failing_rows(reports):
    return {name for _, name in failing(reports)}


@pytest.mark.parametrize("checks", [densities.density_checks, objectives.objective_checks,
                                    accumulation.accumulation_checks,
                                    optimizers.optimizer_checks])
def test_every_family_passes_on_the_correct_code(checks, backend_name):
    reports = checks(backend_name, 0)
    assert reports and all(len(r) for r in reports)
    assert not failing(reports), failures(reports)


# --------------------------------------------------------------------------
# The posterior
# --------------------------------------------------------------------------


def test_a_dropped_half_in_the_reparameterization_backward(monkeypatch):
    def dropped_half(dz, logvar, eps, dmu=None, dlogvar=None):
        return dz.copy(), dz * eps * np.exp(0.5 * logvar)  # the 1/2 of d sigma / d logvar

    monkeypatch.setattr(reference, "reparameterize_backward", dropped_half)
    bad = failing_rows(densities.latent_checks("numpy"))
    assert "reparameterize_backward: dlogvar" in bad
    assert "latent_backward: dh" in bad  # the combined op the model calls
    assert "reparameterize_backward: dmu" not in bad


def test_exp_logvar_used_as_sigma(monkeypatch):
    def wrong_sigma(mu, logvar, eps, out=None):
        return mu + np.exp(logvar) * eps

    monkeypatch.setattr(reference, "reparameterize", wrong_sigma)
    # consistent with its own backward? No: but the value is what only a value check sees
    bad = failing_rows(densities.latent_checks("numpy"))
    assert "reparameterize" in bad


def test_a_sign_in_the_kl_gradient(monkeypatch):
    real = reference.gaussian_kl_backward

    def wrong_sign(dkl, mu, logvar, dmu=None, dlogvar=None):
        dmu, dlogvar = real(dkl, mu, logvar)
        return -dmu, dlogvar

    monkeypatch.setattr(reference, "gaussian_kl_backward", wrong_sign)
    bad = failing_rows(densities.latent_checks("numpy"))
    assert {"gaussian_kl_backward: dmu", "latent_backward: dh"} <= bad
    assert "gaussian_kl_backward: dlogvar" not in bad


# --------------------------------------------------------------------------
# The likelihoods
# --------------------------------------------------------------------------


def test_a_fixed_variance_used_as_a_standard_deviation(monkeypatch):
    from numpyvae.distributions import Gaussian

    real = Gaussian.setup

    def var_as_sigma(self, data_shape, dtype):
        real(self, data_shape, dtype)
        self._logvar = self.dtype.type(2 * np.log(self.var))  # var read as sigma

    monkeypatch.setattr(Gaussian, "setup", var_as_sigma)
    reports = densities.likelihood_checks("numpy")
    bad = failing(reports)
    title = "Gaussian(var=0.5): -log p(x|out) against the textbook density"
    assert {(title, "nll"), (title, "nll_and_grad: nll")} <= bad
    # its gradients are consistent with the wrong loss: only the value check sees it
    assert not any("backward" in t for t, _ in bad)


def test_a_sign_in_the_bernoulli_gradient(monkeypatch):
    real = reference.bernoulli_nll_and_grad

    def wrong_sign(logits, x, scale, nll=None, dlogits=None):
        nll, dlogits = real(logits, x, scale)
        return nll, -dlogits

    monkeypatch.setattr(reference, "bernoulli_nll_and_grad", wrong_sign)
    bad = failing(densities.likelihood_checks("numpy"))
    assert ("Bernoulli: backward of -log p(x|out), central differences",
            "nll_and_grad: dout") in bad
    assert ("Bernoulli: backward of -log p(x|out), central differences",
            "nll_backward: dout") not in bad


def test_a_dropped_half_on_the_nll_backward_path_iwae_uses(monkeypatch):
    real = reference.gaussian_nll_backward

    def dropped_half(dnll, mean, logvar, x, dmean=None):
        dmean, dlogvar = real(dnll, mean, logvar, x)
        return dmean, 2 * dlogvar

    monkeypatch.setattr(reference, "gaussian_nll_backward", dropped_half)
    bad = failing(densities.likelihood_checks("numpy"))
    assert ("GaussianLearnedVariance: backward of -log p(x|out), central differences",
            "nll_backward: logvar") in bad
    assert {name for _, name in bad} >= {"gaussian_nll_backward: dlogvar"}


# --------------------------------------------------------------------------
# Accumulation, the optimizers, the IWAE objective, the CVAE's label path
# --------------------------------------------------------------------------


def test_equals_for_plus_equals_in_the_weight_gradient(monkeypatch):
    def overwrites(dy, x, W, y, dW, db, activation="identity", alpha=0.01, dx=None,
                   need_dx=True):
        da = dy if activation == "identity" else reference.activation_backward(
            dy, y, activation, alpha)
        dW[...] = x.T @ da  # = for +=
        db += da.sum(axis=0)
        return da @ W.T if need_dx else None

    monkeypatch.setattr(reference, "linear_backward", overwrites)
    bad = failing(accumulation.accumulation_checks("numpy"))
    title = "Linear(5, 4, tanh): two backward calls without zero_grad"
    assert (title, "W") in bad and (title, "b") not in bad


def test_zero_grad_that_misses_what_the_optimizer_reads(monkeypatch):
    from numpyvae.model import VAE

    monkeypatch.setattr(VAE, "zero_grad", lambda self: self.encoder.zero_grad())
    bad = failing_rows(accumulation.accumulation_checks("numpy"))
    assert "decoder.0.W" in bad and "encoder.0.W" not in bad


@pytest.mark.parametrize("step_shift", [1, -1])
def test_an_off_by_one_bias_correction(monkeypatch, step_shift):
    real = reference.adam_update

    def shifted(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
        real(param, grad, m, v, lr, beta1, beta2, eps, weight_decay,
             max(step + step_shift, 1) if step_shift < 0 else step + step_shift, decoupled)

    monkeypatch.setattr(reference, "adam_update", shifted)
    reports = optimizers.optimizer_checks("numpy")
    bad = failing(reports)
    adam = "Adam (separate arrays): the change of each parameter"
    if step_shift == 1:
        assert (adam, "encoder.0.W, step 1") in bad
    assert (adam, "encoder.0.W, step 10") in bad
    assert not any(t.startswith("SGD") for t, _ in bad)


def test_weight_decay_coupled_in_adamw(monkeypatch):
    real = reference.adam_update

    def coupled(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
        real(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, False)

    monkeypatch.setattr(reference, "adam_update", coupled)
    titles = {t for t, _ in failing(optimizers.optimizer_checks("numpy"))}
    assert "AdamW, weight decay 0.1 (one flat buffer): the change of each parameter" in titles
    assert not any(t.startswith("Adam,") or t.startswith("Adam (") for t in titles)


def test_nesterov_taken_as_plain_momentum(monkeypatch):
    real = reference.sgd_update

    def plain(param, grad, velocity, lr, momentum, nesterov, weight_decay):
        real(param, grad, velocity, lr, momentum, False, weight_decay)

    monkeypatch.setattr(reference, "sgd_update", plain)
    titles = {t for t, _ in failing(optimizers.optimizer_checks("numpy"))}
    assert titles == {f"SGD, Nesterov momentum 0.9, weight decay 0.05 ({layout}): the change "
                      f"of each parameter" for layout in ("separate arrays", "one flat buffer")}


def test_normalised_importance_weights_over_the_wrong_axis(monkeypatch):
    import math

    from numpyvae import iwae

    def wrong_axis(log_w):
        K = log_w.shape[1]
        m = log_w.max(axis=1, keepdims=True)
        s = np.exp(log_w - m)
        total = s.sum(axis=1, keepdims=True)
        return math.log(K) - (m[:, 0] + np.log(total[:, 0])), s / s.sum(axis=0)  # axis 0

    monkeypatch.setattr(iwae, "iwae_bound", wrong_axis)
    bad = failing(objectives.objective_checks("numpy"))
    titles = {t for t, _ in bad}
    assert any(t.startswith("IWAE (K=3) of VAE(5, hidden 4, latent 2, tanh)") and
               t.endswith("the gradient, central differences") for t in titles)
    assert not any(t.endswith("the loss against the textbook bound") for t in titles)


def test_the_label_joined_on_the_wrong_side_of_the_code(monkeypatch):
    from numpyvae.cvae import CVAE

    def label_first(self, z, labels):
        return np.concatenate([self.one_hot(labels, z.shape[0]), z], axis=1)

    monkeypatch.setattr(CVAE, "decoder_input", label_first)
    bad = failing(objectives.objective_checks("numpy"))
    assert any(t.startswith("IWAE (K=3) of CVAE(") and name.startswith("encoder.")
               for t, name in bad)
    assert not any(t.startswith("IWAE (K=3) of VAE(") for t, _ in bad)


def test_a_weight_gradient_laid_out_wrong_is_named(monkeypatch):
    real = reference.linear_backward

    def reshaped(dy, x, W, y, dW, db, activation="identity", alpha=0.01, dx=None,
                 need_dx=True):
        scratch = np.zeros_like(dW)
        out = real(dy, x, W, y, scratch, db, activation, alpha, need_dx=need_dx)
        dW += scratch.T.reshape(dW.shape)  # da.T @ x, laid out as if it were x.T @ da
        return out

    monkeypatch.setattr(reference, "linear_backward", reshaped)
    from numpyvae.layers import Linear

    layer = Linear(5, 4, "tanh", rng=np.random.default_rng(0), dtype="float64",
                   backend="numpy")
    report = check_layer(layer, np.random.default_rng(1).standard_normal((6, 5)))
    assert {r.name for r in report if not r.passed} == {"W"}


# --------------------------------------------------------------------------
# Reports name the place; the command prints it
# --------------------------------------------------------------------------


def test_a_row_names_the_largest_difference_and_where():
    expected = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    got = expected.copy()
    got[2, 1] += 0.5
    got[0, 3] += 1e-3
    row = compare("decoder.0.W", got, expected, 1e-10)
    assert not row.passed and row.worst_index == (2, 1)
    assert (row.analytic, row.numeric) == (got[2, 1], expected[2, 1])
    assert row.rel_error == pytest.approx(0.5 / np.abs(got).max())
    nan = compare("x", np.array([1.0, np.nan]), np.array([1.0, 2.0]), 1e-10)
    assert not nan.passed and nan.worst_index == (1,)


def test_the_command_names_a_planted_bug(monkeypatch, capsys):
    real = reference.gaussian_kl_backward

    def dropped_half(dkl, mu, logvar, dmu=None, dlogvar=None):
        dmu, dlogvar = real(dkl, mu, logvar)
        return dmu, 2 * dlogvar

    monkeypatch.setattr(reference, "gaussian_kl_backward", dropped_half)
    assert main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert ("the posterior's backward ops, central differences: gaussian_kl_backward: "
            "dlogvar off by") in out
    assert "FAILED:" in out


# --------------------------------------------------------------------------
# The fast path: its own ops and the one-call step
# --------------------------------------------------------------------------


def test_a_dropped_half_in_the_numba_reparameterization_backward(monkeypatch):
    pytest.importorskip("numba")
    from numpyvae.fast import numba_ops

    real = numba_ops.reparameterize_backward

    def dropped_half(dz, logvar, eps, dmu=None, dlogvar=None):
        dmu, dlogvar = real(dz, logvar, eps)
        return dmu, 2 * dlogvar

    monkeypatch.setattr(numba_ops, "reparameterize_backward", dropped_half)
    bad = failing_rows(densities.latent_checks("numba"))
    assert bad == {"reparameterize_backward: dlogvar"}


def test_an_off_by_one_bias_correction_in_the_one_call_step(monkeypatch):
    pytest.importorskip("numba")
    from numpyvae.fast import numba_ops
    from numpyvae.fast.step_checks import step_checks
    from numpyvae.model import VAE
    from numpyvae.optim import Adam

    real = numba_ops.mlp_step

    def shifted(*args, **kwargs):
        *args, adam = args if "adam" not in kwargs else (*args, kwargs.pop("adam"))
        if adam is not None:
            adam = (*adam[:7], adam[7] + 1, adam[8])  # the step count, one ahead
        return real(*args, adam=adam)

    monkeypatch.setattr(numba_ops, "mlp_step", shifted)
    config = [("VAE(20, hidden 10, latent 2), Adam, batch 8",
               lambda be: VAE(20, hidden_dims=(10,), latent_dim=2, dtype="float64", seed=0,
                              backend=be), Adam, {"lr": 1e-3}, 8)]
    (report,) = step_checks(configs=config)
    assert not report.passed and report.title.startswith("VAE(20, hidden 10, latent 2), Adam")
    assert {r.name for r in report if not r.passed} == set(VAE(20, (10,), 2).params)
    monkeypatch.setattr(numba_ops, "mlp_step", real)
    assert step_checks(configs=config)[0].passed


def test_all_checks_both_backends_and_the_fast_path(monkeypatch, capsys):
    import numpyvae.checks as checks
    from numpyvae.gradcheck import GradReport

    calls = []

    def fake_tool_checks(backend, seed, *, fast_path=False):
        calls.append((backend, fast_path))
        return [GradReport(f"checks on {backend}", [compare("x", 1.0, 1.0, 1e-12)])]

    monkeypatch.setattr(checks, "tool_checks", fake_tool_checks)
    pytest.importorskip("numba")
    from numpyvae.fast import step_checks

    def fake_step_checks(seed):
        calls.append("step")
        return [GradReport("one-call step", [])]

    monkeypatch.setattr(step_checks, "step_checks", fake_step_checks)
    assert main(["gradcheck", "--all"]) == 0
    assert calls == [("numpy", False), ("numba", True), "step"]
    assert "all 3 checks passed on numpy and numba" in capsys.readouterr().out
    calls.clear()
    assert main(["gradcheck"]) == 0
    assert calls == [("numpy", False)]


def test_the_checks_are_core_modules():
    """They import neither the fast path nor the application (the Numba backend by name)."""
    import ast
    from pathlib import Path

    import numpyvae

    root = Path(numpyvae.__file__).parent
    files = [*sorted((root / "checks").glob("*.py")), root / "inspector" / "coverage.py"]
    for path in files:
        package = "numpyvae." + ".".join(path.relative_to(root).parent.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.rstrip(".").split(".")
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    name = ".".join([*base, node.module or ""]).rstrip(".")
                else:
                    name = node.module
                names = [name] + [f"{name}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("numpyvae.fast", "numpyvae.app")), (path, name)
