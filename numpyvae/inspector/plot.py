"""The picture of an inspector trace: the computation graph drawn with matplotlib.

One box per node (name, kind, output shape; green when its backward check
passed, red when it failed), arrows for the values flowing forward, each
labelled with the value's shape and the norm of the gradient flowing back
along it. Levels follow the order of computation, top to bottom; nodes that
run side by side (the reparameterization and the KL) share a level. A conditional
model's data box is "data x, y": its one arrow carries the batch and the
one-hot labels into ``condition.x``; the labels' second use, in
``condition.z``, is a constant and drawn without an arrow, as the noise is.
No graphviz needed.
"""

from __future__ import annotations

import numpy as np

PASS, FAIL, NEUTRAL = "#d9f2d9", "#f7c6c6", "#eeeeee"


#: Figure width in inches (the website's main column at 100 dpi), the height of one level
#: of the graph, and the font size: labels stay at least 12 px high where the page shows them.
WIDTH_IN, LEVEL_IN, FONT = 7.2, 1.45, 10


def _levels(trace):
    """Level = longest path from the data; the nodes sharing a level, in order."""
    level = {}
    for node in trace.nodes.values():
        parents = [src for src, _ in node.wiring.values() if src != "data"]
        level[node.name] = 1 + max((level[p] for p in parents), default=0)
    rows: dict[int, list[str]] = {0: ["data"]}
    for name, lev in level.items():
        rows.setdefault(lev, []).append(name)
    return rows


def plot_trace(trace, ax=None):
    """Draw ``trace`` (a :class:`numpyvae.inspector.trace.Trace`) top to bottom; returns the figure.

    The data at the top, the loss at the bottom; nodes that run side by side
    (the reparameterization and the KL) share a level. Sizes are in inches of
    a figure as wide as the website's column, so its text is read at the
    size it is drawn.
    """
    import matplotlib.pyplot as plt

    rows = _levels(trace)
    height = LEVEL_IN * (len(rows) + 0.4)
    if ax is None:
        fig = plt.figure(figsize=(WIDTH_IN, height))
        ax = fig.add_axes((0, 0, 1, 1))
    pos = {}
    for lev, names in rows.items():
        for i, name in enumerate(names):
            pos[name] = (WIDTH_IN * (i + 0.5) / len(names) - (0.6 if len(names) == 1 else 0),
                         height - LEVEL_IN * (lev + 0.6))

    first = next(iter(trace.nodes))
    for node in trace.nodes.values():
        edges: dict[str, list[str]] = {}  # one arrow per source, however many values
        for inp, (src, _) in node.wiring.items():
            if src == "data" and (inp == "eps" or node.name != first):
                continue  # the noise is a constant; the data's one arrow goes to the first node
            edges.setdefault(src, []).append(inp)
        for src, inputs in edges.items():
            (x0, y0), (x1, y1) = pos[src], pos[node.name]
            if y0 - y1 > 1.5 * LEVEL_IN:  # past a level: arrive at the box's right shoulder
                x1, y1 = x1 + 0.55, y1 - 0.15
            ax.annotate("", xy=(x1, y1 + 0.42), xytext=(x0, y0 - 0.42),
                        arrowprops=dict(arrowstyle="->", color="#555555", lw=1.2))
            shapes = {"(" + ",".join(str(d) for d in np.shape(node.inputs[i])) + ")"
                      for i in inputs}
            label = ("2×" if len(inputs) == 2 and len(shapes) == 1 else "") + " ".join(
                sorted(shapes))
            grads = [node.dinputs[i] for i in inputs if node.dinputs.get(i) is not None]
            if grads:
                norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in grads)))
                label += f"  |g|={norm:.2g}"
            ax.text((x0 + x1) / 2 + 0.12, (y0 + y1) / 2, label, ha="left", va="center",
                    fontsize=FONT, color="#333333",
                    bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))
    labelled = any(src == ("data", "y") for n in trace.nodes.values()
                   for src in n.wiring.values())
    ax.text(*pos["data"], "data x, y" if labelled else "data x", ha="center", va="center",
            fontsize=FONT, bbox=dict(boxstyle="round", fc=NEUTRAL, ec="#888888"))
    for node in trace.nodes.values():
        color = NEUTRAL if node.check is None else (PASS if node.check.passed else FAIL)
        text = f"{node.name}: {node.kind}"
        if node.check is not None:
            text += f"\nerr {node.check.max_error:.1e}"
        if node.bug:
            text += f"\nbug: {node.bug}"
        ax.text(*pos[node.name], text, ha="center", va="center", fontsize=FONT,
                bbox=dict(boxstyle="round", fc=color,
                          ec="#b00000" if color == FAIL else "#888888"))
    ax.set_xlim(0, WIDTH_IN)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    status = ("every node passes its backward check" if trace.passed
              else f"check fails at: {', '.join(trace.failed)}")
    ax.text(WIDTH_IN / 2, height - 0.15, f"loss {trace.loss:.4g}: {status}", ha="center",
            va="top", fontsize=FONT + 1)
    return ax.figure
