"""Training: metrics, run folders, exact resume, Ctrl-C, NaN handling, a real Fashion-MNIST run."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from numpyvae import VAE, Autoencoder, load
from numpyvae.app.data import load_dataset
from numpyvae.app.train import (
    CHECKPOINT_FILE,
    METRIC_KEYS,
    NonFiniteLossError,
    RunFolderError,
    Trainer,
    fit,
)
from numpyvae.backend import numba_available

REQUIRED = ("epoch", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon",
            "test_kl", "seconds", "samples_per_second")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "numpyvae-cache"))


@pytest.fixture(scope="module")
def shapes_small(tmp_path_factory):
    """1,000 training and 200 test images of the embedded dataset."""
    os.environ.setdefault("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "numpyvae-cache"))
    ds = load_dataset("shapes")
    return ds.x_train[:1000], ds.x_test[:200]


def small_vae(backend="numpy", seed=0, **kw):
    return VAE(784, hidden_dims=(32,), latent_dim=4, seed=seed, backend=backend, **kw)


def weights(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def without_time(history):
    return [{k: v for k, v in m.items() if k not in ("seconds", "samples_per_second",
                                                     "eval_seconds")} for m in history]


def test_fit_metrics_and_learning(shapes_small):
    x_train, x_test = shapes_small
    model = small_vae()
    history = fit(model, x_train, x_test, epochs=3, batch_size=50, progress=False)
    assert [m["epoch"] for m in history] == [1, 2, 3]
    for m in history:
        assert set(m) == set(METRIC_KEYS)
        assert all(isinstance(m[k], (int, float)) for k in REQUIRED)
        assert m["train_loss"] == pytest.approx(m["train_recon"] + m["train_kl"])
        assert m["test_loss"] == pytest.approx(m["test_recon"] + m["test_kl"])
        assert m["seconds"] > 0 and m["samples_per_second"] == pytest.approx(
            1000 / m["seconds"])
    assert history[-1]["step"] == 60
    assert history[-1]["test_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["test_loss"] < history[0]["test_loss"]


def test_any_batch_size_and_no_test_set(shapes_small):
    x_train, _ = shapes_small
    history = fit(small_vae(), x_train[:37], epochs=2, batch_size=10, progress=False)
    assert history[-1]["step"] == 8  # 4 batches per epoch, the last of 7 images
    assert history[-1]["test_loss"] is None
    history = fit(small_vae(), x_train[:5], epochs=1, batch_size=128, progress=False)
    assert history[-1]["step"] == 1


def test_autoencoder_trains(shapes_small):
    x_train, x_test = shapes_small
    model = Autoencoder(784, hidden_dims=(32,), latent_dim=4, backend="numpy")
    history = fit(model, x_train, x_test, epochs=2, progress=False)
    # An autoencoder has no KL term: its metrics say so rather than report a KL of 0.
    assert all(m["train_kl"] is None and m["test_kl"] is None for m in history)
    assert all(m["train_loss"] == m["train_recon"] for m in history)
    assert history[1]["test_loss"] < history[0]["test_loss"]


def test_run_folder(tmp_path, shapes_small):
    x_train, x_test = shapes_small
    model = small_vae()
    seen = []
    history = fit(model, x_train, x_test, epochs=2, out_dir=tmp_path, progress=False,
                  callback=seen.append)
    assert seen == history
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["hidden_dims"] == [32] and config["training"]["epochs"] == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == history
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    assert_same_weights(weights(load(tmp_path / "model.npz", backend="numpy")), weights(model))
    # The folder is not silently reused.
    with pytest.raises(RunFolderError, match="already holds a run"):
        fit(small_vae(), x_train, x_test, epochs=2, out_dir=tmp_path, progress=False)


def test_resume_after_an_epoch_equals_uninterrupted(tmp_path, shapes_small):
    x_train, x_test = shapes_small
    straight = small_vae()
    expected = fit(straight, x_train, x_test, epochs=3, batch_size=64, out_dir=tmp_path / "a",
                   progress=False)
    first = small_vae()
    fit(first, x_train, x_test, epochs=1, batch_size=64, out_dir=tmp_path / "b", progress=False)
    resumed = small_vae(seed=123)  # whatever its initial weights, the checkpoint's win
    history = fit(resumed, x_train, x_test, epochs=3, batch_size=64, out_dir=tmp_path / "b",
                  resume=True, progress=False)
    assert_same_weights(weights(resumed), weights(straight))
    assert without_time(history) == without_time(expected)


@pytest.mark.parametrize("backend_name, binarize", [
    ("numpy", "none"), ("numpy", "static"), ("numpy", "dynamic"),
    *([("numba", "dynamic")] if numba_available() else []),
])
def test_interrupted_mid_epoch_and_resumed_equals_uninterrupted(tmp_path, shapes_small,
                                                                backend_name, binarize):
    x_train, x_test = shapes_small
    options = dict(batch_size=48, kl_warmup=30, binarize=binarize, progress=False)
    straight = small_vae(backend_name)
    expected = Trainer(straight, x_train, x_test, **options).fit(3)

    def stop_at_step_29(trainer):  # in the middle of epoch 2 (21 steps per epoch)
        if trainer.global_step == 29:
            trainer.request_stop()

    model = small_vae(backend_name)
    trainer = Trainer(model, x_train, x_test, out_dir=tmp_path, step_callback=stop_at_step_29,
                      **options)
    trainer.fit(3)
    assert trainer.interrupted and trainer.epoch == 1 and trainer.step_in_epoch == 8
    resumed = small_vae(backend_name, seed=7)
    trainer = Trainer(resumed, x_train, x_test, out_dir=tmp_path, **options)
    history = trainer.fit(3, resume=True)
    assert not trainer.interrupted
    assert_same_weights(weights(resumed), weights(straight))
    for got, want in zip(without_time(history), without_time(expected), strict=True):
        assert got.keys() == want.keys()
        for k in got:  # the interrupted epoch's training sums were saved and restored
            assert got[k] == pytest.approx(want[k], rel=1e-12), k


def test_a_signal_the_command_received_while_starting_stops_training_at_once(
        tmp_path, shapes_small):
    # The command records each signal (numpyvae.app.interrupts.pending) besides
    # raising it; if whatever it interrupted swallowed the exception, the
    # trainer still stops before its first step.
    from numpyvae import interrupts

    x_train, x_test = shapes_small
    trainer = Trainer(small_vae(), x_train, x_test, out_dir=tmp_path, progress=False)
    interrupts.pending[:] = [signal.SIGTERM]
    try:
        history = trainer.fit(3)
    finally:
        interrupts.pending.clear()
    assert trainer.interrupted and trainer.stop_signal == signal.SIGTERM
    assert history == [] and trainer.global_step == 0
    assert not interrupts.pending  # taken: the next run starts afresh
    assert Trainer(small_vae(), x_train, x_test, progress=False).fit(1)  # and runs


def test_sigint_saves_and_stops(tmp_path, shapes_small):
    x_train, x_test = shapes_small

    def press_ctrl_c(trainer):
        if trainer.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    model = small_vae()
    trainer = Trainer(model, x_train, x_test, out_dir=tmp_path, step_callback=press_ctrl_c,
                      progress=False)
    before = signal.getsignal(signal.SIGINT)
    history = trainer.fit(5)
    assert trainer.interrupted and history == []
    assert (trainer.epoch, trainer.step_in_epoch) == (0, 3)
    assert_same_weights(weights(load(tmp_path / "model.npz", backend="numpy")), weights(model))
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    straight = small_vae()
    fit(straight, x_train, x_test, epochs=2, progress=False)
    resumed = small_vae()
    fit(resumed, x_train, x_test, epochs=2, out_dir=tmp_path, resume=True, progress=False)
    assert_same_weights(weights(resumed), weights(straight))


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, shapes_small):
    x_train, x_test = shapes_small
    model = small_vae()

    def poison(metrics):
        if metrics["epoch"] == 1:
            model.params["decoder.1.b"][3] = np.nan

    with pytest.raises(NonFiniteLossError) as info:
        fit(model, x_train, x_test, epochs=3, out_dir=tmp_path, progress=False, callback=poison)
    message = str(info.value)
    assert "the loss became nan at epoch 2, step 1 of 8 (global step 9)" in message
    assert f"last good checkpoint (end of epoch 1) is kept in {tmp_path}" in message
    assert "--lr" in message
    kept = load(tmp_path / "model.npz", backend="numpy")
    assert all(np.isfinite(v).all() for v in kept.params.values())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    # The checkpoint resumes (after the poisoning, which is not in it).
    history = fit(small_vae(), x_train, x_test, epochs=2, out_dir=tmp_path, resume=True,
                  progress=False)
    assert len(history) == 2 and np.isfinite(history[-1]["test_loss"])


def test_divergence_from_a_huge_learning_rate(shapes_small):
    x_train, _ = shapes_small
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step \d+ of 8.*smaller learning rate"):
        fit(small_vae(likelihood="gaussian"), x_train, epochs=1, lr=1e3, progress=False)


def test_resume_refuses_other_settings(tmp_path, shapes_small):
    x_train, x_test = shapes_small
    fit(small_vae(), x_train, x_test, epochs=1, out_dir=tmp_path, progress=False)
    with pytest.raises(RunFolderError, match=r"batch_size: 128 in the checkpoint, 64 now"):
        fit(small_vae(), x_train, x_test, epochs=2, batch_size=64, out_dir=tmp_path,
            resume=True, progress=False)
    with pytest.raises(RunFolderError, match="model configuration differs"):
        fit(VAE(784, (16,), 4, backend="numpy"), x_train, x_test, epochs=2, out_dir=tmp_path,
            resume=True, progress=False)


def test_kl_warmup_and_beta(shapes_small):
    x_train, _ = shapes_small
    trainer = Trainer(small_vae(), x_train, kl_warmup=4, beta=2.0, progress=False)
    assert [trainer.beta_at(s) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    history = trainer.fit(1)
    m = history[0]
    assert m["beta"] == 2.0
    assert m["train_objective"] > m["train_loss"] > m["train_recon"]  # beta > 1 weighs the KL


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(binarize="soft"), "unknown binarization 'soft'"),
    (dict(beta=-1.0), "beta must be a number >= 0"),
    (dict(kl_warmup=-5), "kl_warmup must be an integer >= 0"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_bad_arguments(shapes_small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trainer(small_vae(), shapes_small[0], **kwargs)


def test_bad_data_shape():
    with pytest.raises(ValueError, match=r"x_train: expected shape \(N >= 1, 784\), got \(3, 5\)"):
        fit(small_vae(), np.zeros((3, 5)), progress=False)


def test_real_fashion_mnist_training(fashion_mnist_dir):
    ds = load_dataset("fashion-mnist", fashion_mnist_dir, download=False)
    model = VAE(784, hidden_dims=(200,), latent_dim=20, backend="numpy")
    trainer = Trainer(model, ds.x_train[:10_000], ds.x_test[:2_000], progress=False)
    start = trainer.evaluate()["test_loss"]
    history = trainer.fit(2)
    assert start > 500  # an untrained Bernoulli decoder: about 784 * log 2 nats
    assert history[-1]["test_loss"] < 0.6 * start
    assert history[-1]["test_loss"] < history[0]["test_loss"]


# ---------------------------------------------------------------------------- one step door


def test_every_model_and_objective_takes_the_same_step():
    """take_step is numpyvae.step.step (loss and gradients, then the optimizer's step)."""
    from numpyvae import CVAE
    from numpyvae.app.train import take_step
    from numpyvae.iwae import ImportanceWeighted
    from numpyvae.optim import Adam
    from numpyvae.step import step

    rng = np.random.default_rng(0)
    x = (rng.random((12, 10)) > 0.5).astype(np.float64)
    y = rng.integers(0, 3, 12)
    kw = dict(hidden_dims=(6,), latent_dim=2, dtype="float64", seed=3)
    cases = [(lambda: VAE(10, **kw), {}), (lambda: Autoencoder(10, **kw), {}),
             (lambda: CVAE(10, num_classes=3, **kw), {"labels": y}),
             (lambda: VAE(10, **kw), {"objective": ImportanceWeighted(3)}),
             (lambda: CVAE(10, num_classes=3, **kw),
              {"labels": y, "objective": ImportanceWeighted(2)})]
    for build, given in cases:
        a, b = build(), build()
        ra = take_step(a, Adam(a.params, lr=0.01), x, beta=0.5,
                       rng=np.random.default_rng(1), **given)
        rb = step(b, Adam(b.params, lr=0.01), x, beta=0.5, rng=np.random.default_rng(1),
                  **given)
        assert (ra.loss, ra.recon, ra.kl) == (rb.loss, rb.recon, rb.kl)
        np.testing.assert_array_equal(a.flat_params, b.flat_params)
        assert not np.array_equal(a.flat_params, build().flat_params)  # a step was taken


def test_the_step_leaves_the_parameters_when_the_loss_is_not_finite():
    from numpyvae.optim import Adam
    from numpyvae.step import step

    model = VAE(10, hidden_dims=(6,), latent_dim=2, dtype="float64")
    before = model.flat_params.copy()
    x = np.random.default_rng(0).random((4, 10))
    result = step(model, Adam(model.params), x, eps=np.full((4, 2), np.inf))
    assert not np.isfinite(result.loss)
    np.testing.assert_array_equal(model.flat_params, before)


def test_checkpoint_helpers_name_the_difference(tmp_path):
    from numpyvae.app import checkpoint

    assert checkpoint.description(3, 0) == "end of epoch 3"
    assert checkpoint.description(3, 17) == "epoch 4, step 17"
    checkpoint.require_same(tmp_path, "training configuration", {"a": 1}, {"a": 1})
    with pytest.raises(RunFolderError, match=r"the training configuration differs "
                                             r"\(a: 1 in the checkpoint, 2 now; b: None"):
        checkpoint.require_same(tmp_path, "training configuration", {"a": 1}, {"a": 2, "b": 0})
    assert checkpoint.guess_image_shape(784) == [28, 28]
    assert checkpoint.guess_image_shape(10) == [1, 10]
