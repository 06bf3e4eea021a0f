"""The step-through inspector: a model's forward and backward pass, one node at a time.

:func:`inspect` runs a model on a small batch in float64 and checks every
node's backward pass against central differences (:mod:`.trace`);
:mod:`.catalogue` holds known-wrong formulas to plant, and :mod:`.plot` draws
the graph with each node's verdict.
"""

from .trace import Trace, inspect

__all__ = ["Trace", "inspect"]
