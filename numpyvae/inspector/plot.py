"""The picture of an inspector trace: the computation graph drawn with matplotlib.

One box per node (name, kind, output shape; green when its backward check
passed, red when it failed), arrows for the values flowing forward, each
labelled with the value's shape and the norm of the gradient flowing back
along it. Columns follow the order of computation; nodes that run side by
side (the reparameterization and the KL) share a column. A conditional
model's data box is "data x, y": its one arrow carries the batch and the
one-hot labels into ``condition.x``; the labels' second use, in
``condition.z``, is a constant and drawn without an arrow, as the noise is.
No graphviz needed.
"""

from __future__ import annotations

import numpy as np

PASS, FAIL, NEUTRAL = "#d9f2d9", "#f7c6c6", "#eeeeee"


def _layout(trace):
    """Column = longest path from the data; rows spread the nodes sharing a column."""
    column = {}
    for node in trace.nodes.values():
        parents = [src for src, _ in node.wiring.values() if src != "data"]
        column[node.name] = 1 + max((column[p] for p in parents), default=-1)
    rows: dict[int, list[str]] = {}
    for name, col in column.items():
        rows.setdefault(col, []).append(name)
    pos = {}
    for col, names in rows.items():
        for i, name in enumerate(names):
            pos[name] = (col, (len(names) - 1) / 2 - i)
    return pos


def plot_trace(trace, ax=None):
    """Draw ``trace`` (a :class:`numpyvae.inspector.trace.Trace`); returns the figure."""
    import matplotlib.pyplot as plt

    pos = _layout(trace)
    pos["data"] = (-1, 0)
    ncols = max(c for c, _ in pos.values()) + 2
    nrows = max(abs(r) for _, r in pos.values()) * 2 + 1
    if ax is None:
        _, ax = plt.subplots(figsize=(max(8, 2.4 * ncols), 1.8 + 1.8 * nrows))
    sx, sy = 2.6, 2.2

    def xy(name):
        c, r = pos[name]
        return c * sx, r * sy

    first = next(iter(trace.nodes))
    for node in trace.nodes.values():
        edges: dict[str, list[str]] = {}  # one arrow per source, however many values
        for inp, (src, _) in node.wiring.items():
            if src == "data" and (inp == "eps" or node.name != first):
                continue  # the noise is a constant; the data's one arrow goes to the first node
            edges.setdefault(src, []).append(inp)
        for src, inputs in edges.items():
            (x0, y0), (x1, y1) = xy(src), xy(node.name)
            ax.annotate("", xy=(x1 - 0.8, y1), xytext=(x0 + 0.8, y0),
                        arrowprops=dict(arrowstyle="->", color="#555555", lw=1.2))
            shapes = {"(" + ",".join(str(d) for d in np.shape(node.inputs[i])) + ")"
                      for i in inputs}
            label = ("2×" if len(inputs) == 2 and len(shapes) == 1 else "") + " ".join(
                sorted(shapes))
            grads = [node.dinputs[i] for i in inputs if node.dinputs.get(i) is not None]
            if grads:
                norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in grads)))
                label += f"\n|g|={norm:.2g}"
            t = 0.5
            ax.text(x0 + 0.8 + t * (x1 - x0 - 1.6), y0 + t * (y1 - y0) + 0.1, label,
                    ha="center", va="bottom", fontsize=7, color="#333333",
                    bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))
    labelled = any(src == ("data", "y") for n in trace.nodes.values()
                   for src in n.wiring.values())
    ax.text(*xy("data"), "data x, y" if labelled else "data x", ha="center", va="center",
            fontsize=8,
            bbox=dict(boxstyle="round", fc=NEUTRAL, ec="#888888"))
    for node in trace.nodes.values():
        color = NEUTRAL if node.check is None else (PASS if node.check.passed else FAIL)
        text = f"{node.name}\n{node.kind}"
        if node.check is not None:
            text += f"\nerr {node.check.max_error:.1e}"
        if node.bug:
            text += f"\nbug: {node.bug}"
        ax.text(*xy(node.name), text, ha="center", va="center", fontsize=7.5,
                bbox=dict(boxstyle="round", fc=color,
                          ec="#b00000" if color == FAIL else "#888888"))
    xs = [xy(n)[0] for n in pos]
    ys = [xy(n)[1] for n in pos]
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    ax.set_axis_off()
    status = ("every node passes its backward check" if trace.passed
              else f"check fails at: {', '.join(trace.failed)}")
    ax.set_title(f"loss {trace.loss:.4g}: {status}", fontsize=10)
    return ax.figure
