"""Options and run folders, hardened: sizes checked against the budget, small and moved data.

Each class of failure of issue 26 ("Nothing lost, nothing unclear, part 2")
for the command and its run folders: option values that size arrays
(``--iw-train``, ``--channels``, ``--batch-size``, the classes the labels
imply) refused in one line before allocating; ``config.json``'s data record
validated like its other fields; small data sets trained, with what cannot
be computed on them skipped; moved data resumed; a NaN β refused by
``inspect``; labels of ``CVAE.sample`` checked. Hypothesis draws option
values and edits of the data record: only the library's documented errors
escape, memory stays under the budget, and a refused command changes
nothing written before.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from assertions import one_line_error, peak_memory
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import numpyvae
from numpyvae.app.cli import main
from numpyvae.app.data import DataFileError, DataNotFoundError
from numpyvae.app.limits import MEMORY_ENV, SizeLimitError
from numpyvae.app.run import SMALL_TEST_NOTE, evaluate_run, train_run
from numpyvae.app.runfolder import RunFolderError, RunNotFoundError, read_checkpoint
from numpyvae.app.safenpz import read_npz

MiB = 2**20
TINY = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "8", "--backend", "numpy",
        "--quiet"]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("NUMPYVAE_BACKEND", "numpy")



def files_of(folder: Path) -> dict:
    """Every file under ``folder``, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def labelled_npz(path, n=40, shape=(8, 8), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
             y=np.arange(n) % classes)
    return path


# ---------------------------------------------------------------------------- sizes of options


@pytest.mark.parametrize("options, words", [
    (["--iw-train", "100000000"], "--iw-train 100000000"),
    (["--arch", "conv", "--channels", "100000", "100000"], "--channels 100000 100000"),
    (["--arch", "conv", "--channels", "30000", "4"], "--channels 30000 4"),
    (["--batch-size", "100000000", "--hidden", "100000"], "--hidden 100000"),
])
def test_options_that_size_arrays_are_refused_in_one_line(tmp_path, capsys, monkeypatch,
                                                          options, words):
    monkeypatch.setenv(MEMORY_ENV, "256M")
    data = labelled_npz(tmp_path / "d.npz", n=200, shape=(16, 16))
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--epochs", "1", *TINY, *options, "--out", str(out)]
    with peak_memory() as peak:
        assert main(argv) == 2
    assert peak[0] < 64 * MiB, peak[0]
    one_line_error(capsys, words, "would need", "268.4 MB", MEMORY_ENV)
    assert not out.exists()


def test_many_classes_of_a_conditional_conv_model_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "256M")
    rng = np.random.default_rng(0)
    y = np.arange(40) % 3
    y[7] = 20000  # 20001 classes: as many label maps per image
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (40, 16, 16), dtype=np.uint8), y=y)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--arch", "conv", "--channels",
                 "4", "4", "--conditional", "--epochs", "1", *TINY, "--out", str(out)]) == 2
    one_line_error(capsys, "--channels 4 4", "20001 classes", MEMORY_ENV)
    assert not out.exists()


def sizes(largest):
    """Small sizes that train, and any size up to ``largest``."""
    return st.integers(1, 6) | st.integers(1, largest)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """One small run first: what the first run imports and caches is not the options' memory."""
    folder = tmp_path_factory.mktemp("warm")
    labelled_npz(folder / "d.npz", n=24)
    for arch in ("mlp", "conv"):
        train_run(folder / arch, backend="numpy", progress=False, figures=False,
                  data=str(folder / "d.npz"), epochs=1, batch_size=8, hidden=[4], latent_dim=2,
                  arch=arch, channels=[2, 2], iw_train=2)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(iw=st.none() | sizes(10**9), batch=sizes(10**9),
       hidden=st.lists(sizes(10**7), min_size=1, max_size=2), latent=sizes(10**6),
       conv=st.booleans(), channels=st.lists(sizes(10**6), min_size=2, max_size=2),
       conditional=st.booleans())
@example(iw=5, batch=6, hidden=[1], latent=42989, conv=False, channels=[1, 1],
         conditional=False)  # a wide latent: the importance weights' arrays count
@example(iw=300, batch=4, hidden=[4000], latent=6, conv=False, channels=[1, 1],
         conditional=False)  # a wide hidden layer decoding many samples: its temporaries count
@example(iw=1780, batch=4, hidden=[657], latent=6, conv=False, channels=[1, 1],
         conditional=False)
def test_any_sizes_train_or_are_refused_within_the_budget(warm, tmp_path, iw, batch, hidden,
                                                          latent, conv, channels, conditional):
    data = tmp_path / "d.npz"
    if not data.exists():
        labelled_npz(data, n=24)
    options = dict(data=str(data), epochs=1, batch_size=batch, latent_dim=latent, hidden=hidden,
                   iw_train=iw, arch="conv" if conv else "mlp", conditional=conditional,
                   seed=0, dtype="float32")
    if conv:
        options["channels"] = channels
    os.environ[MEMORY_ENV] = "64M"
    with tempfile.TemporaryDirectory() as tmp, peak_memory() as peak:
        try:
            train_run(Path(tmp) / "run", backend="numpy", progress=False, figures=False,
                      **options)
        except SizeLimitError as exc:
            assert MEMORY_ENV in str(exc) and "would need" in str(exc), exc
            assert not (Path(tmp) / "run").exists()
        except ValueError as exc:  # a combination the options refuse (said in one line)
            assert type(exc).__module__.startswith("numpyvae") or type(exc) is ValueError
            assert "\n" not in str(exc)
        finally:
            del os.environ[MEMORY_ENV]
    assert peak[0] < 64 * MiB, peak[0]


@pytest.mark.parametrize("argv, words", [
    (["sample", "-n", "1000000000"], "-n 1000000000: decoding and drawing 1,000,000,000"),
    (["interpolate", "--steps", "100000000"], "--pairs 8 --steps 100000000"),
])
def test_figure_sizes_are_checked_before_decoding(own_run, capsys, monkeypatch, argv, words):
    monkeypatch.setenv(MEMORY_ENV, "256M")
    before = files_of(own_run)
    with peak_memory() as peak:
        assert main([argv[0], str(own_run), *argv[1:]]) == 2
    assert peak[0] < 64 * MiB, peak[0]
    one_line_error(capsys, words, "268.4 MB", MEMORY_ENV)
    assert files_of(own_run) == before


# ---------------------------------------------------------------------------- config.json's data


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own-run")
    labelled_npz(folder / "d.npz")
    run = folder / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NUMPYVAE_BACKEND", "numpy")
        assert main(["train", "--data", str(folder / "d.npz"), "--epochs", "1", *TINY,
                     "--no-figures", "--out", str(run)]) == 0
    return run


DOCUMENTED = (RunFolderError, RunNotFoundError, DataFileError, DataNotFoundError)


@pytest.mark.parametrize("record, words", [
    ("file.npy", "'data' is \"file.npy\", expected null or a JSON object"),
    (5, "'data' is 5"),
    ([], "'data' is []"),
    ({}, "data: 'path' is null"),
    ({"path": 3}, "data: 'path' is 3"),
    ("EDIT", "data: 'sha256' is \"zz\", expected a SHA-256"),
    ("FRACTION", "data: 'test_fraction' is 2, expected a number between 0 and 1"),
])
@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_an_edited_data_record_is_one_line(own_run, tmp_path, capsys, record, words, command):
    run = tmp_path / "run"
    shutil.copytree(own_run, run)
    config = json.loads((run / "config.json").read_text())
    if record == "EDIT":
        record = {**config["data"], "sha256": "zz"}
    elif record == "FRACTION":
        record = {**config["data"], "test_fraction": 2}
    config["data"] = record
    (run / "config.json").write_text(json.dumps(config))
    before = files_of(run)
    argv = {"resume": ["train", "--out", str(run), "--resume", "--epochs", "2"]}.get(
        command, [command, str(run)])
    assert main(argv) == 2
    one_line_error(capsys, "config.json", words)
    assert files_of(run) == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_edits_of_the_data_record_raise_only_documented_errors(own_run, data):
    config = json.loads((own_run / "config.json").read_text())
    record = dict(config["data"])
    how = data.draw(st.sampled_from(["replace", "field", "drop"]))
    if how == "replace":
        config["data"] = data.draw(json_values)
    elif how == "field":
        record[data.draw(st.sampled_from(sorted(record) + ["other"]))] = data.draw(json_values)
        config["data"] = record
    else:
        record.pop(data.draw(st.sampled_from(sorted(record))))
        config["data"] = record
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(own_run, run)
        (run / "config.json").write_text(json.dumps(config))
        before = files_of(run)
        try:
            evaluate_run(run, backend="numpy")
        except DOCUMENTED as exc:
            assert "\n" not in str(exc)
        except ValueError as exc:  # a documented option error, in one line
            assert type(exc) is ValueError or type(exc).__module__.startswith("numpyvae"), exc
        assert files_of(run) == before


# ---------------------------------------------------------------------------- small data sets


@pytest.mark.parametrize("n, fraction", [(6, None), (40, "0.01")])
def test_a_test_set_of_one_example_trains_and_skips_what_needs_two(tmp_path, capsys, n,
                                                                   fraction):
    labelled_npz(tmp_path / "d.npz", n=n)
    run = tmp_path / "run"
    more = [] if fraction is None else ["--test-fraction", fraction]
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "2", *TINY[:-1],
                 *more, "--out", str(run)]) == 0
    said = capsys.readouterr()
    assert SMALL_TEST_NOTE in said.out + said.err
    assert {"config.json", "model.npz", "checkpoint.npz", "metrics.jsonl"} <= set(
        os.listdir(run))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["active_units"] is None and r["test_loss"] is not None for r in rows)
    figures = set(os.listdir(run / "figures"))
    assert "samples.png" in figures and "interpolation.png" not in figures
    assert evaluate_run(run)["n_test"] == 1
    assert main(["interpolate", str(run)]) == 2
    one_line_error(capsys, "two test images", "holds 1")


# ---------------------------------------------------------------------------- moved data


def test_moved_data_resumes_to_the_same_weights(tmp_path, capsys):
    labelled_npz(tmp_path / "d.npz")
    args = ["--epochs", "2", *TINY, "--no-figures"]
    reference = tmp_path / "reference"
    assert main(["train", "--data", str(tmp_path / "d.npz"), *args, "--out",
                 str(reference)]) == 0
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d.npz"), *args, "--epochs", "1", "--out",
                 str(run)]) == 0
    (tmp_path / "moved").mkdir()
    moved = tmp_path / "moved" / "d.npz"
    shutil.move(tmp_path / "d.npz", moved)
    capsys.readouterr()
    before = files_of(run)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 2
    one_line_error(capsys, "no longer exists", "--data")
    assert files_of(run) == before
    # Other data at the new place: refused by its SHA-256, nothing changed.
    labelled_npz(tmp_path / "other.npz", seed=1)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet", "--data",
                 str(tmp_path / "other.npz")]) == 2
    one_line_error(capsys, "SHA-256")
    assert files_of(run) == before
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet", "--data",
                 str(moved)]) == 0
    a, b = read_npz(reference / "model.npz"), read_npz(run / "model.npz")
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)
    _, state = read_checkpoint(run / "checkpoint.npz")
    assert state["epoch"] == 2
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["path"] == str(moved)  # the new place, for the next command
    assert config["data"]["sha256"] == json.loads(
        (reference / "config.json").read_text())["data"]["sha256"]
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(tmp_path / "typo.npz")]) == 2
    one_line_error(capsys, "typo.npz (--data) does not exist")


# ---------------------------------------------------------------------------- messages


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_inspect_refuses_a_bad_beta_in_one_line(capsys, value):
    with pytest.raises(SystemExit) as exc:  # as every option the parser refuses
        main(["inspect", "--tiny", "--beta", value])
    assert exc.value.code == 2
    one_line_error(capsys, "--beta", value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, "1", True, None])
def test_inspect_from_python_refuses_a_bad_beta(value):
    model = numpyvae.VAE(8, (4,), 2, backend="numpy", dtype="float64")
    x = np.random.default_rng(0).random((3, 8))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        numpyvae.inspect(model, x, beta=value)


def test_fit_from_python_checks_the_importance_samples_against_the_budget(monkeypatch):
    from numpyvae.app.train import fit

    monkeypatch.setenv(MEMORY_ENV, "64M")
    model = numpyvae.VAE(64, (16,), 4, backend="numpy")
    x = np.random.default_rng(0).random((50, 64)).astype("float32")
    with peak_memory() as peak, pytest.raises(SizeLimitError, match="iw_train=10000000"):
        fit(model, x, epochs=1, iw_train=10**7, progress=False)
    assert peak[0] < 16 * MiB
    assert np.isfinite(fit(model, x, epochs=1, iw_train=5, progress=False)[-1]["train_loss"])


@pytest.mark.parametrize("labels, words", [
    ("a", "class indices (integers)"), (1e20, "got values from 1e+20"),
    (-1, "got values from -1 to -1"), ([0.5, 1], "class indices"),
    ([True, False], "class indices"), (np.uint64(2**64 - 1), "18446744073709551615"),
])
def test_cvae_sample_says_which_labels_are_wrong(labels, words):
    model = numpyvae.CVAE(6, num_classes=3, hidden_dims=(4,), latent_dim=2)
    with pytest.raises(ValueError, match=r"labels must") as exc:
        model.sample(2, labels=labels)
    assert words in str(exc.value)
    assert "-9223372036854775808" not in str(exc.value)
    assert model.sample(2, labels=2.0).shape == (2, 6)


# ---------------------------------------------------------------------------- kills


def test_a_kill_at_every_write_of_a_small_own_data_run_then_resume(tmp_path):
    """The fault injection of tests/test_faults.py on own data with a test set of one."""
    from test_faults import run_driver

    labelled_npz(tmp_path / "d.npz", n=6)
    report = run_driver(tmp_path / "work", "all", ["--data", str(tmp_path / "d.npz"),
                                                   "--epochs", "2", *TINY])
    assert report["writes"] >= 7  # config + 2 epochs x 3 files, then the figures
    for kill in report["kills"]:
        assert kill["killed"] and kill["resume_status"] == 0, kill
        assert kill["diffs"] == [], kill
