"""Draw ``layout.png``: the package's three neighbourhoods and which way imports go.

Run from the repository root after changing the layout::

    python docs/figures/make_layout_figure.py

The figure is 720 pixels wide, about the width of the website's main column,
so its 11-point labels (15 pixels) stay readable without zooming.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "layout.png"
WIDTH_IN, HEIGHT_IN, DPI = 7.2, 5.4, 100

#: (title, what it holds, its modules), top to bottom: each imports only those below it.
NEIGHBOURHOODS = [
    ("numpyvae/app/  the application",
     "the numpyvae command, run folders, training loop, data, figures",
     "cli  run  runfolder  train  interrupts  safenpz\nlimits  plots  latent_plots  data/"),
    ("numpyvae/fast/  the fast path",
     "the same ops as Numba kernels, the one-call step, threads",
     "numba_ops  numba_kernels  numba_step  numba_conv\n"
     "numba_blas  numba_math  step  threads  warmup"),
    ("numpyvae/  the teaching core",
     "read this first: ops.py is the specification",
     "one_page_vae  ops  backend  layers  conv  convnet\n"
     "distributions  model  cvae  iwae  optim  init\n"
     "gradcheck  evaluate  latent  inspector/  modelfile ..."),
]
COLOURS = ["#fde2c8", "#d6e6f7", "#d9f2d9"]


def draw() -> plt.Figure:
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    ax.set_xlim(0, 10)
    ax.set_ylim(0.6, 10)
    ax.set_axis_off()
    heights, gap, left, width = (2.3, 2.3, 2.85), 0.7, 0.25, 8.3
    tops = [9.75, 9.75 - 2.3 - gap, 9.75 - 2 * (2.3 + gap)]
    for (title, role, modules), colour, top, box_h in zip(NEIGHBOURHOODS, COLOURS, tops,
                                                          heights, strict=True):
        ax.add_patch(FancyBboxPatch((left, top - box_h), width, box_h,
                                    boxstyle="round,pad=0.05,rounding_size=0.2",
                                    fc=colour, ec="#555555", lw=1.2))
        ax.text(left + 0.2, top - 0.35, title, fontsize=13, weight="bold", va="top")
        ax.text(left + 0.2, top - 0.95, role, fontsize=11, va="top", style="italic")
        ax.text(left + 0.2, top - 1.5, modules, fontsize=11, va="top", family="monospace",
                linespacing=1.4)
    # Arrows: "imports". app -> fast, fast -> core, and app -> core past the middle box.
    arrow = dict(arrowstyle="-|>", color="#333333", lw=1.6, mutation_scale=18)
    for upper, lower in ((0, 1), (1, 2)):
        bottom = tops[upper] - heights[upper]
        ax.annotate("", xy=(4.4, tops[lower] + 0.05), xytext=(4.4, bottom - 0.05),
                    arrowprops=arrow)
        ax.text(4.6, (tops[lower] + bottom) / 2, "imports", fontsize=11, va="center")
    ax.annotate("", xy=(left + width + 0.45, tops[2] - 0.6),
                xytext=(left + width + 0.45, tops[0] - 0.6),
                arrowprops=dict(arrow, connectionstyle="arc3,rad=0"))
    ax.text(left + width + 0.6, 5.0, "imports", fontsize=11, rotation=90, va="center")
    fig.tight_layout(pad=0.2)
    return fig


if __name__ == "__main__":
    draw().savefig(OUT, dpi=DPI)
    print(f"wrote {OUT}")
