"""Optimizers against update rules written out by hand, state round trips, clipping, torch."""

from __future__ import annotations

import numpy as np
import pytest

from numpyvae import SGD, VAE, Adam, AdamW, clip_grad_norm
from numpyvae.optim import flat_span

STEPS = 5

CONFIGS = {
    "sgd": (SGD, dict(lr=0.1)),
    "sgd-momentum": (SGD, dict(lr=0.1, momentum=0.9)),
    "sgd-nesterov": (SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    "sgd-weight-decay": (SGD, dict(lr=0.1, momentum=0.5, weight_decay=0.1)),
    "adam": (Adam, dict(lr=0.01)),
    "adam-l2": (Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": (AdamW, dict(lr=0.01, weight_decay=0.1)),
}


# --------------------------------------------------------------------------
# The update rules, written out independently of numpyvae
# --------------------------------------------------------------------------


def sgd_by_hand(p, grad_fn, steps, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    p, v = p.copy(), np.zeros_like(p)
    for t in range(steps):
        g = grad_fn(p, t) + weight_decay * p
        if momentum:
            v = momentum * v + g
            d = g + momentum * v if nesterov else v
        else:
            d = g
        p = p - lr * d
    return p


def adam_by_hand(p, grad_fn, steps, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled=False):
    b1, b2 = betas
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t in range(1, steps + 1):
        g = grad_fn(p, t - 1)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def by_hand(config, p, grad_fn, steps):
    cls, kwargs = CONFIGS[config]
    if cls is SGD:
        return sgd_by_hand(p, grad_fn, steps, **kwargs)
    kwargs = dict(kwargs)
    if cls is AdamW:
        kwargs.setdefault("weight_decay", 0.01)
    return adam_by_hand(p, grad_fn, steps, decoupled=cls is AdamW, **kwargs)


# --------------------------------------------------------------------------
# Two ways to hold parameters: one flat buffer (a VAE), or separate arrays
# --------------------------------------------------------------------------


def _noise(names_shapes, steps, seed):
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape) for name, shape in names_shapes}
            for _ in range(steps)]


class Problem:
    """Parameters, their gradient arrays, and a gradient ``g_t(p) = 0.5 p + n_t``.

    The gradient depends on the parameters, so weight decay and momentum act
    on a real trajectory; the noise ``n_t`` differs per step and per element.
    """

    def __init__(self, params, grads, steps=STEPS, seed=0):
        self.params, self.grads = params, grads
        self.noise = _noise([(k, p.shape) for k, p in params.items()], steps, seed)

    def grad(self, name, p, t):
        return 0.5 * p + self.noise[t][name]

    def fill_grads(self, t):
        for name, p in self.params.items():
            self.grads[name][...] = self.grad(name, p, t)

    def run(self, optimizer, steps, start=0):
        for t in range(start, start + steps):
            self.fill_grads(t)
            optimizer.step(self.grads)

    def snapshot(self):
        return {k: p.copy() for k, p in self.params.items()}


def flat_problem(dtype="float64", backend="numpy"):
    model = VAE(4, hidden_dims=(3,), latent_dim=2, dtype=dtype, backend=backend, seed=3)
    return Problem(model.params, model.grads), model


def separate_problem(dtype="float64"):
    rng = np.random.default_rng(11)
    shapes = {"a.W": (3, 4), "a.b": (4,), "z": (2, 2, 2)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = {k: np.zeros(s, dtype) for k, s in shapes.items()}
    return Problem(params, grads)


def make_optimizer(config, params, backend_name):
    cls, kwargs = CONFIGS[config]
    return cls(params, backend=backend_name, **kwargs)


def test_the_two_problems_exercise_the_two_paths():
    problem, model = flat_problem()
    assert flat_span(problem.params.values()) is model.flat_params
    assert flat_span(problem.grads.values()) is model.flat_grads
    assert flat_span(separate_problem().params.values()) is None


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("layout", ["flat", "separate"])
def test_steps_match_the_update_rule_written_by_hand(backend_name, config, layout):
    problem = flat_problem(backend=backend_name)[0] if layout == "flat" else separate_problem()
    start = problem.snapshot()
    optimizer = make_optimizer(config, problem.params, backend_name)

    problem.run(optimizer, STEPS)

    assert optimizer.step_count == STEPS
    for name, p in problem.params.items():
        expected = by_hand(config, start[name], lambda q, t, n=name: problem.grad(n, q, t), STEPS)
        assert not np.allclose(expected, start[name])
        np.testing.assert_allclose(p, expected, rtol=1e-13, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("config", CONFIGS)
def test_float32_parameters_stay_float32_and_follow_the_float64_trajectory(backend_name,
                                                                          config):
    results = {}
    for dtype in ("float32", "float64"):
        problem, model = flat_problem(dtype, backend_name)
        optimizer = make_optimizer(config, problem.params, backend_name)
        problem.run(optimizer, STEPS)
        assert model.flat_params.dtype == dtype
        for slot in optimizer.state.values():
            assert all(a.dtype == dtype for a in slot.values())
        results[dtype] = model.flat_params.copy()
    np.testing.assert_allclose(results["float32"], results["float64"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS)
def test_flat_and_per_parameter_paths_agree(backend_name, config):
    problem, model = flat_problem(backend=backend_name)
    copies = Problem({k: p.copy() for k, p in problem.params.items()},
                     {k: g.copy() for k, g in problem.grads.items()})
    copies.noise = problem.noise
    problem.run(make_optimizer(config, problem.params, backend_name), STEPS)
    copies.run(make_optimizer(config, copies.params, backend_name), STEPS)
    for name, p in problem.params.items():
        np.testing.assert_allclose(p, copies.params[name], rtol=1e-15, atol=1e-16)


def _decay_below_the_normal_range(config, dtype, backend_name, steps=30):
    """Running averages set to +-5 tiny, then ``steps`` steps with a zero gradient.

    A gradient that stays zero makes momentum (and Adam's m) shrink by 0.9 a
    step, down through the subnormal numbers below ``np.finfo(dtype).tiny``.
    Started at 5 tiny, 30 such steps leave 0.2 tiny: a subnormal.
    Returns the optimizer, the slot that was set and the model.
    """
    problem, model = flat_problem(dtype, backend_name)
    optimizer = make_optimizer(config, problem.params, backend_name)
    problem.fill_grads(0)
    optimizer.step(problem.grads)
    tiny = np.finfo(dtype).tiny
    first = optimizer.slots[0]  # velocity, or Adam's m
    for a in optimizer.state[first].values():
        a[...] = 5 * tiny * np.where(np.arange(a.size).reshape(a.shape) % 2, 1, -1)
    for g in problem.grads.values():
        g[...] = 0
    for _ in range(steps):
        optimizer.step(problem.grads)
    return optimizer, first, model


@pytest.mark.parametrize("config", ["sgd-momentum", "sgd-nesterov", "adam", "adamw"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fast_updates_set_running_averages_below_the_normal_range_to_zero(config, dtype):
    # Arithmetic on subnormal numbers is slow, so the fast path's updates flush
    # them: the running average becomes zero on passing below tiny.
    pytest.importorskip("numba")
    optimizer, first, model = _decay_below_the_normal_range(config, dtype, "numba")
    tiny = np.finfo(dtype).tiny
    for slot, arrays in optimizer.state.items():
        for name, a in arrays.items():
            assert a.dtype == dtype
            assert np.all((a == 0) | (np.abs(a) >= tiny)), (slot, name)
    assert all(np.all(a == 0) for a in optimizer.state[first].values())
    assert np.all(np.isfinite(model.flat_params))


@pytest.mark.parametrize("config", ["sgd-momentum", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_reference_updates_follow_the_formula_into_the_subnormal_numbers(config, dtype):
    # The specification does not flush: with a zero gradient (and no weight
    # decay) the average is multiplied by 0.9 each step and nothing else.
    optimizer, first, _ = _decay_below_the_normal_range(config, dtype, "numpy")
    tiny = np.finfo(dtype).tiny
    for a in optimizer.state[first].values():
        sign = np.where(np.arange(a.size).reshape(a.shape) % 2, 1, -1)
        expected = (5 * tiny * sign).astype(dtype)
        for _ in range(30):
            expected = expected * a.dtype.type(0.9)
        assert np.all(np.abs(expected) < tiny) and np.all(expected != 0)  # subnormal
        np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("update", ["adam", "adamw", "sgd", "sgd-nesterov"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_flat_buffer_updated_at_once_equals_the_same_numbers_shaped(backend, update, dtype):
    # An update is elementwise: a flat buffer (longer than the fast kernel's
    # chunk of work) and the same numbers shaped as a matrix end up equal.
    n = 2 * 65536 + 8 * 1234
    rng = np.random.default_rng(5)
    param, grad, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    m[::7] = np.finfo(dtype).tiny  # some fall below the normal range in this step
    flat = [a.copy() for a in (param, grad, m, v)]
    shaped = [a.copy().reshape(-1, 8) for a in (param, grad, m, v)]
    for arrays in (flat, shaped):
        if update.startswith("adam"):
            backend.adam_update(*arrays, 1e-2, 0.9, 0.999, 1e-8, 0.05, 3, update == "adamw")
        else:
            backend.sgd_update(*arrays[:3], 0.1, 0.9, update == "sgd-nesterov", 0.01)
    assert not np.array_equal(flat[0], param)
    for a, b in zip(flat, shaped, strict=True):
        np.testing.assert_array_equal(a, b.reshape(-1))


@pytest.mark.parametrize("config", ["sgd-momentum", "adamw"])
def test_gradients_are_matched_to_parameters_by_name_not_position(backend_name, config):
    """Gradients given in another order, or tiling another buffer, still pair up by name."""
    problem, _ = flat_problem(backend=backend_name)
    names = list(problem.params)
    sizes = [problem.params[n].size for n in names]
    # A buffer holding the gradients in reverse name order: it tiles exactly,
    # but position k of it is not parameter k's gradient.
    buffer = np.zeros(sum(sizes))
    reordered, offset = {}, 0
    for name in reversed(names):
        n = problem.params[name].size
        reordered[name] = buffer[offset:offset + n].reshape(problem.params[name].shape)
        offset += n
    twin, _ = flat_problem(backend=backend_name)  # the same weights, in a flat buffer too
    other = Problem(twin.params, reordered)
    other.noise = problem.noise

    problem.run(make_optimizer(config, problem.params, backend_name), STEPS)
    other.run(make_optimizer(config, other.params, backend_name), STEPS)
    for name in names:
        np.testing.assert_allclose(other.params[name], problem.params[name], rtol=1e-15)


# --------------------------------------------------------------------------
# state_dict / load_state_dict: training resumes exactly
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("layout", ["flat", "separate"])
def test_state_round_trip_resumes_exactly(backend_name, config, layout, tmp_path):
    def problem_():
        return flat_problem(backend=backend_name)[0] if layout == "flat" else separate_problem()

    problem = problem_()
    optimizer = make_optimizer(config, problem.params, backend_name)
    problem.run(optimizer, 3)
    state = optimizer.state_dict()
    np.savez(tmp_path / "opt.npz", **state)  # what a checkpoint does
    at_checkpoint = problem.snapshot()
    problem.run(optimizer, 2, start=3)
    uninterrupted = problem.snapshot()

    resumed = problem_()
    for name, p in resumed.params.items():
        p[...] = at_checkpoint[name]
    optimizer2 = make_optimizer(config, resumed.params, backend_name)
    with np.load(tmp_path / "opt.npz") as saved:
        optimizer2.load_state_dict(dict(saved))
    assert optimizer2.step_count == 3
    resumed.run(optimizer2, 2, start=3)

    for name in uninterrupted:
        np.testing.assert_array_equal(resumed.params[name], uninterrupted[name])


def test_state_dict_holds_copies_and_names_every_slot(backend_name):
    problem, _ = flat_problem(backend=backend_name)
    optimizer = Adam(problem.params, lr=0.01, backend=backend_name)
    problem.run(optimizer, 2)
    state = optimizer.state_dict()
    assert set(state) == {"step"} | {f"{s}.{n}" for s in ("m", "v") for n in problem.params}
    assert int(state["step"]) == 2
    state["m.encoder.0.W"][...] = 123.0
    assert not np.any(optimizer.state["m"]["encoder.0.W"] == 123.0)


def test_state_loads_across_the_flat_and_per_parameter_paths(backend_name):
    flat, _ = flat_problem(backend=backend_name)
    optimizer = Adam(flat.params, lr=0.01, backend=backend_name)
    flat.run(optimizer, 3)
    separate = Problem(flat.snapshot(), {k: np.zeros_like(g) for k, g in flat.grads.items()})
    separate.noise = flat.noise
    optimizer2 = Adam(separate.params, lr=0.01, backend=backend_name)
    optimizer2.load_state_dict(optimizer.state_dict())
    flat.run(optimizer, 2, start=3)
    separate.run(optimizer2, 2, start=3)
    for name, p in flat.params.items():
        np.testing.assert_allclose(separate.params[name], p, rtol=1e-15)


def test_load_state_dict_rejects_incomplete_or_mismatched_state():
    problem = separate_problem()
    optimizer = SGD(problem.params, lr=0.1, momentum=0.9)
    state = optimizer.state_dict()
    with pytest.raises(ValueError, match="missing 'step'"):
        optimizer.load_state_dict({k: v for k, v in state.items() if k != "step"})
    with pytest.raises(ValueError, match="missing 'velocity.a.b'"):
        optimizer.load_state_dict({k: v for k, v in state.items() if k != "velocity.a.b"})
    bad = dict(state, **{"velocity.a.W": np.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"'velocity.a.W' has shape \(4, 3\), expected \(3, 4\)"):
        optimizer.load_state_dict(bad)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def test_step_rejects_gradients_that_do_not_match_the_parameters():
    problem = separate_problem()
    optimizer = SGD(problem.params, lr=0.1)
    with pytest.raises(ValueError, match=r"missing \['z'\].*unexpected \['w'\]"):
        optimizer.step({**{k: g for k, g in problem.grads.items() if k != "z"},
                        "w": np.zeros(2)})
    with pytest.raises(ValueError, match=r"'a.b' has shape \(5,\), parameter has \(4,\)"):
        optimizer.step({**problem.grads, "a.b": np.zeros(5)})


def test_constructors_reject_bad_hyperparameters():
    params = separate_problem().params
    with pytest.raises(ValueError, match="lr must be positive"):
        SGD(params, lr=0.0)
    with pytest.raises(ValueError, match="non-empty mapping"):
        Adam({})
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        SGD(params, nesterov=True)
    with pytest.raises(ValueError, match="momentum and weight_decay must be >= 0"):
        SGD(params, momentum=-0.1)
    with pytest.raises(ValueError, match=r"AdamW: betas must be in \[0, 1\)"):
        AdamW(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps > 0"):
        Adam(params, eps=0.0)


def test_hyperparameters_report_the_settings():
    params = separate_problem().params
    assert SGD(params, lr=0.5, momentum=0.9, nesterov=True).hyperparameters() == {
        "lr": 0.5, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}
    assert AdamW(params).hyperparameters() == {
        "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}


# --------------------------------------------------------------------------
# Global-norm clipping
# --------------------------------------------------------------------------


def _global_norm(grads):
    return float(np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads.values())))


@pytest.mark.parametrize("layout", ["flat", "separate"])
def test_clip_grad_norm_scales_large_gradients_to_max_norm(backend_name, layout):
    problem = flat_problem(backend=backend_name)[0] if layout == "flat" else separate_problem()
    problem.fill_grads(0)
    before = {k: g.copy() for k, g in problem.grads.items()}
    norm = _global_norm(before)
    max_norm = norm / 3

    returned = clip_grad_norm(problem.grads, max_norm, backend=backend_name)

    assert returned == pytest.approx(norm, rel=1e-12)
    assert _global_norm(problem.grads) == pytest.approx(max_norm, rel=1e-6)
    for name, g in problem.grads.items():  # one common factor: the direction is kept
        np.testing.assert_allclose(g, before[name] * (max_norm / (norm + 1e-6)), rtol=1e-12)


@pytest.mark.parametrize("layout", ["flat", "separate"])
def test_clip_grad_norm_leaves_small_gradients_alone(backend_name, layout):
    problem = flat_problem(backend=backend_name)[0] if layout == "flat" else separate_problem()
    problem.fill_grads(1)
    before = {k: g.copy() for k, g in problem.grads.items()}
    norm = _global_norm(before)
    assert clip_grad_norm(problem.grads, 2 * norm, backend=backend_name) == pytest.approx(norm)
    for name, g in problem.grads.items():
        np.testing.assert_array_equal(g, before[name])
    with pytest.raises(ValueError, match="max_norm must be positive"):
        clip_grad_norm(problem.grads, 0.0)


# --------------------------------------------------------------------------
# PyTorch as an independent oracle (optional)
# --------------------------------------------------------------------------


def _import_torch():
    torch = pytest.importorskip("torch")
    # One torch thread: these tensors are tiny, and torch's spinning OpenMP
    # workers would otherwise starve Numba's parallel kernels in the same process.
    torch.set_num_threads(1)
    return torch


def _torch_optimizer(torch, config, tensors):
    cls, kwargs = CONFIGS[config]
    kwargs = dict(kwargs)
    if cls is SGD:
        return torch.optim.SGD(tensors, **kwargs)
    if cls is AdamW:
        return torch.optim.AdamW(tensors, **kwargs)
    return torch.optim.Adam(tensors, **kwargs)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("layout", ["flat", "separate"])
def test_trajectories_match_torch_optim(backend_name, config, layout):
    torch = _import_torch()
    steps = 20
    problem = flat_problem(backend=backend_name)[0] if layout == "flat" else separate_problem()
    problem.noise = _noise([(k, p.shape) for k, p in problem.params.items()], steps, seed=5)
    tensors = {k: torch.tensor(p.copy(), dtype=torch.float64, requires_grad=True)
               for k, p in problem.params.items()}
    torch_opt = _torch_optimizer(torch, config, list(tensors.values()))
    optimizer = make_optimizer(config, problem.params, backend_name)

    for t in range(steps):
        problem.fill_grads(t)
        optimizer.step(problem.grads)
        for name, tensor in tensors.items():
            tensor.grad = torch.from_numpy(problem.grad(name, tensor.detach().numpy(), t))
        torch_opt.step()

    for name, tensor in tensors.items():
        np.testing.assert_allclose(problem.params[name], tensor.detach().numpy(),
                                   rtol=1e-12, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("layout", ["flat", "separate"])
def test_clip_grad_norm_matches_torch(backend_name, layout):
    torch = _import_torch()
    problem = flat_problem(backend=backend_name)[0] if layout == "flat" else separate_problem()
    problem.fill_grads(2)
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
               for g in problem.grads.values()]
    for tensor, g in zip(tensors, problem.grads.values(), strict=True):
        tensor.grad = torch.from_numpy(g.copy())
    max_norm = 0.25 * _global_norm(problem.grads)

    ours = clip_grad_norm(problem.grads, max_norm, backend=backend_name)
    theirs = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm))

    assert ours == pytest.approx(theirs, rel=1e-13)
    for tensor, g in zip(tensors, problem.grads.values(), strict=True):
        np.testing.assert_allclose(g, tensor.grad.numpy(), rtol=1e-13)
