"""A conditional run's figures speak of its classes: ``sample --label``, named rows and columns.

``numpyvae sample RUN --label CLASS`` draws every sample of one class (by
index or by name), refused in one line for a run that is not conditional or
a class the run does not have; the sample grid names each row by its class
and the style-transfer figure each column; no title or label is cut off at
the figure's edges.
"""

from __future__ import annotations

import numpy as np
import pytest
from assertions import one_line_error
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from numpyvae.app import plots
from numpyvae.app.cli import main
from numpyvae.app.run import load_run, run_label_names
from numpyvae.app.runfolder import read_config

NAMES = ["boot", "sandal", "pullover with a hood", "bag", "shirt"]
TINY = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "16", "--backend", "numpy",
        "--epochs", "1", "--quiet", "--no-figures"]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A conditional and a plain run on a small labelled file with named classes."""
    folder = tmp_path_factory.mktemp("class_figures")
    rng = np.random.default_rng(0)
    data = folder / "named.npz"
    np.savez(data, x=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y=np.arange(60) % 5,
             label_names=np.array(NAMES))
    for name, extra in (("cvae", ["--conditional"]), ("vae", [])):
        assert main(["train", "--data", str(data), *TINY, *extra,
                     "--out", str(folder / name)]) == 0
    return folder


def _visible_text_inside(fig):
    """Every non-empty text of ``fig`` lies within the figure (nothing cut at an edge)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(
        a, "get_window_extent")) if t.get_text()]
    for t in texts:
        extent = t.get_window_extent(renderer)
        assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, t.get_text()
        assert extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1, t.get_text()
    return [t.get_text() for t in texts]


def test_the_run_records_its_class_names(runs):
    assert run_label_names(read_config(runs / "cvae")) == NAMES
    assert run_label_names({"dataset": "shapes"})[:2] == ["square", "ellipse"]
    assert run_label_names({"dataset": None}) == []


@pytest.mark.parametrize("label, index", [("2", 2), ("pullover with a hood", 2), ("bag", 3),
                                          ("0", 0)])
def test_sample_draws_one_chosen_class(runs, tmp_path, capsys, label, index):
    out = tmp_path / "one.png"
    assert main(["sample", str(runs / "cvae"), "--label", label, "-n", "9", "--seed", "3",
                 "--out", str(out)]) == 0
    model = load_run(runs / "cvae").model
    from numpyvae.app.figures import STREAM_FIGURES

    rng = np.random.default_rng([3, STREAM_FIGURES])
    expected = model.sample(9, labels=np.full(9, index), rng=rng)
    twin = tmp_path / "twin.png"
    plots.samples(expected, (8, 8), nrow=3, path=twin,
                  title=f"decoded draws z ~ N(0, I) of class {NAMES[index]}")
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(twin)))


@pytest.mark.parametrize("run, label, words", [
    ("cvae", "sandle", ["--label sandle", "did you mean 'sandal'", "0 boot", "4 shirt"]),
    ("cvae", "5", ["--label 5", "not a class", "4 shirt"]),
    ("cvae", "-1", ["--label -1", "not a class"]),
    ("vae", "1", ["--label 1", "not a conditional run", "--conditional"]),
])
def test_a_label_the_run_lacks_is_one_line(runs, tmp_path, capsys, run, label, words):
    assert main(["sample", str(runs / run), "--label", label, "--out",
                 str(tmp_path / "x.png")]) == 2
    one_line_error(capsys, *words)
    assert not (tmp_path / "x.png").exists()


def test_the_sample_grid_names_each_row_and_cuts_off_nothing():
    images = np.random.default_rng(0).random((5 * 12, 64))
    fig = plots.samples(images, (8, 8), nrow=12, row_labels=NAMES,
                        title="decoded draws z ~ N(0, I), one row per class, for five classes "
                              "whose names are long enough to need wrapping at this width")
    texts = _visible_text_inside(fig)
    assert all(name in texts for name in NAMES)


def test_the_transfer_figure_names_each_column_and_cuts_off_nothing():
    images = np.random.default_rng(0).random((8 * 6, 64))
    fig = plots.image_grid(images, (8, 8), 6, col_labels=["input", *NAMES],
                           title="style transfer: each test image (left) encoded with its "
                                 "label, decoded as every class")
    texts = _visible_text_inside(fig)
    assert all(name in texts for name in ["input", *NAMES[:2], NAMES[3]])


@pytest.mark.parametrize("names", [5, "boot", ["boot", 1], {"0": "boot"}, [None]])
def test_hand_edited_class_names_are_one_line(runs, tmp_path, capsys, names):
    import json
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(runs / "cvae", run)
    config = json.loads((run / "config.json").read_text())
    config["label_names"] = names
    (run / "config.json").write_text(json.dumps(config))
    assert main(["sample", str(run), "--out", str(tmp_path / "x.png")]) == 2
    one_line_error(capsys, "config.json", "'label_names'", "a list of class names")
    assert not (tmp_path / "x.png").exists()
